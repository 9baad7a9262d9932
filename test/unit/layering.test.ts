// The layering the architecture promises, read from the source: the pure core depends on
// nothing above or below it, and its modules import each other without cycles.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';

// dist/test/unit/layering.test.js -> the repository's src/ (tsc does not copy sources).
const SRC = new URL('../../../src/', import.meta.url).pathname;

function importsOf(file: string): string[] {
  const text = fs.readFileSync(file, 'utf8');
  return [...text.matchAll(/^(?:import|export)[^'";]*from\s+'([^']+)'/gm)].map((m) => m[1]);
}

describe('layering', () => {
  const core = fs.readdirSync(path.join(SRC, 'core')).filter((f) => f.endsWith('.ts'));

  it('src/core imports only from src/core, src/errors.ts and Node or npm packages', () => {
    for (const f of core) {
      for (const spec of importsOf(path.join(SRC, 'core', f))) {
        if (!spec.startsWith('.')) continue;
        const target = path.resolve(SRC, 'core', spec);
        const ok = target.startsWith(path.join(SRC, 'core') + path.sep) || target === path.join(SRC, 'errors.js');
        assert.ok(ok, `core/${f} imports ${spec}`);
      }
    }
  });

  it('src/core modules import each other without cycles (type-only imports included)', () => {
    const edges = new Map(core.map((f) => [f, importsOf(path.join(SRC, 'core', f)).filter((s) => s.startsWith('./')).map((s) => s.slice(2).replace(/\.js$/, '.ts'))]));
    const state = new Map<string, 'visiting' | 'done'>();
    const visit = (f: string, trail: string[]): void => {
      if (state.get(f) === 'done') return;
      assert.notEqual(state.get(f), 'visiting', `cycle: ${[...trail, f].join(' -> ')}`);
      state.set(f, 'visiting');
      for (const g of edges.get(f) ?? []) visit(g, [...trail, f]);
      state.set(f, 'done');
    };
    for (const f of core) visit(f, []);
  });

  it('finds the imports it checks (the reader is not blind)', () => {
    assert.ok(importsOf(path.join(SRC, 'core', 'ruleset.ts')).includes('./nft-schema.js'));
  });
});
