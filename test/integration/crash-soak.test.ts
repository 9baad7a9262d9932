// Crash consistency: 100 SIGKILLs of the daemon at random moments of a stream of mixed
// operations (helpers/crash-soak.ts), each followed by a restart, a gc and an audit of the
// instance against its store. `npm run soak` runs 1,000.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Testbed } from '../testbed/testbed.js';
import { crashSoak } from './helpers/crash-soak.js';

describe('crash consistency under SIGKILL', () => {
  let tb: Testbed;
  const I = `k${Date.now().toString(36)}`;

  before(async () => {
    tb = await Testbed.create({ hostService: false });
    const up = tb.toastnet(I, ['up']);
    assert.equal(up.code, 0, up.stderr);
  });
  after(async () => {
    tb?.toastnet(I, ['down']);
    await tb?.destroy();
  });

  it('100 kills: nothing leaked, no address leased twice, every answer the API gave holds', async () => {
    const r = await crashSoak(tb, I, { rounds: Number(process.env.SOAK_ROUNDS ?? 100), seed: 1207 });
    process.stdout.write(`# crash soak: ${JSON.stringify({ ...r, restartMs: undefined, problems: r.problems.length })}\n`);
    assert.deepEqual(r.problems, []);
    assert.ok(r.operations.reported > r.rounds, 'operations were answered between the kills');
    assert.ok(r.operations.lostInCrash > 0, 'kills did land in the middle of operations');
  });
});
