import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Metrics } from '../../src/service/metrics.js';
import { toastnetVersion } from '../../src/version.js';

describe('Metrics', () => {
  it('exposes toastnet_build_info{version,node} 1', async () => {
    const m = new Metrics({ stats: () => [], dns: () => undefined, denials: () => ({}) });
    const text = await m.registry.metrics();
    assert.match(text, /^# TYPE toastnet_build_info gauge$/m);
    const lines = text.split('\n').filter((l) => l.startsWith('toastnet_build_info'));
    assert.deepEqual(lines, [`toastnet_build_info{version="${toastnetVersion()}",node="${process.versions.node}"} 1`]);
  });
});
