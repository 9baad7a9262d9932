// Failure injection into attaching a runtime's namespace (helpers/attach-fault-steps.ts runs
// an in-process engine in the testbed's host namespace): after each failure the instance
// and the runtime's namespace hold exactly what they held before; a real attach and removal
// take only the link out of the namespace, which stays. veth and macvlan.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { Testbed, WAN } from '../testbed/testbed.js';

const STEPS = path.join(path.dirname(new URL(import.meta.url).pathname), 'helpers', 'attach-fault-steps.js');

type Snap = { rows: string[]; used: number; hostLinks: string[]; runtimeLinks: string[]; elements: string[] };

describe('failure injection: attaching a runtime\'s namespace', () => {
  let tb: Testbed;
  let out: Record<string, { error?: string; injected?: boolean; undoFailures?: number; before: Snap; after: Snap; attached?: Snap; nsKept?: boolean }> & { crash?: string };
  const I = `a${Date.now().toString(36)}`;

  before(async () => {
    tb = await Testbed.create({ hostService: false });
    tb.instances.add(I);
    const ns = `${tb.run}-runtime`;
    spawnSync('ip', ['netns', 'add', ns]);
    const r = spawnSync('nsenter', [`--net=/run/netns/${tb.hostNs}`, process.execPath, STEPS, I, path.join(tb.dir, I, 'state'), path.join(tb.dir, I, 'run'), WAN.dns, `/run/netns/${ns}`], { encoding: 'utf8', timeout: 120_000 });
    assert.equal(r.status, 0, r.stderr);
    out = JSON.parse(r.stdout);
    assert.equal(out.crash, undefined, out.crash);
  });
  after(async () => {
    await tb?.destroy();
  });

  for (const mode of ['veth', 'macvlan']) {
    for (const point of ['attach:leased', 'attach:network', 'attach:admitted']) {
      it(`${mode} attach failing at ${point}: the injected error, and nothing left of it`, () => {
        const s = out[`${mode} ${point}`];
        assert.equal(s.injected, true, `the caller saw another error: ${s.error}`);
        assert.equal(s.undoFailures, 0);
        assert.deepEqual(s.after, s.before);
      });
    }
    it(`${mode}: a real attach puts eth0 in the runtime's namespace; removal takes it out and leaves the namespace`, () => {
      const s = out[`${mode} real`];
      assert.ok(s.attached!.runtimeLinks.includes('eth0:up'), JSON.stringify(s.attached));
      assert.equal(s.attached!.rows.filter((r) => r.endsWith(':attached')).length, 1);
      assert.notDeepEqual(s.attached!.elements, s.before.elements, 'its elements were added');
      assert.deepEqual(s.after, s.before);
      assert.equal(s.nsKept, true);
    });
  }
});
