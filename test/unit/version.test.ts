import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { PACKAGE_JSON, toastnetVersion } from '../../src/version.js';

// dist/test/unit/version.test.js -> the repository's package.json.
const ROOT_PACKAGE = new URL('../../../package.json', import.meta.url).pathname;

describe('toastnetVersion', () => {
  it('is the version in the package.json next to the compiled code, read at run time', () => {
    assert.equal(PACKAGE_JSON, ROOT_PACKAGE);
    const want = (JSON.parse(fs.readFileSync(ROOT_PACKAGE, 'utf8')) as { version: string }).version;
    assert.match(want, /^\d+\.\d+\.\d+/);
    assert.equal(toastnetVersion(), want);
  });
});
