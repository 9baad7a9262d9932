// Failure injection into create, pool acquisition and removal (helpers/fault-steps.ts runs an
// in-process engine in the testbed's host namespace and fails each step once): after every
// failure the instance holds exactly what it held before (rows, addresses, namespaces, links,
// /etc/netns entries, set elements, bandwidth classes), and the caller sees the injected
// error itself. And into a table rebuild (helpers/carry-steps.ts): a restart after it loses
// no count, doubles none.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { Testbed, WAN } from '../testbed/testbed.js';

const STEPS = path.join(path.dirname(new URL(import.meta.url).pathname), 'helpers', 'fault-steps.js');
const CARRY_STEPS = path.join(path.dirname(new URL(import.meta.url).pathname), 'helpers', 'carry-steps.js');

type Snap = { rows: string[]; used: number; namespaces: string[]; links: string[]; etc: string[]; elements: string[]; classes: string[] };
type Step = { error?: string; injected: boolean; undoFailures: number; before: Snap; after: Snap; returned?: string; failed?: Snap; retried?: Snap };

describe('failure injection: every step of create, acquire and remove', () => {
  let tb: Testbed;
  let out: Record<string, Step> & { afterFailures?: string; final?: Snap; crash?: string };
  const I = `f${Date.now().toString(36)}`;

  before(async () => {
    tb = await Testbed.create({ hostService: false });
    tb.instances.add(I);
    const r = spawnSync('nsenter', [`--net=/run/netns/${tb.hostNs}`, process.execPath, STEPS, I, path.join(tb.dir, I, 'state'), path.join(tb.dir, I, 'run'), WAN.dns], { encoding: 'utf8', timeout: 120_000 });
    assert.equal(r.status, 0, r.stderr);
    out = JSON.parse(r.stdout);
    assert.equal(out.crash, undefined, out.crash);
  });
  after(async () => {
    await tb?.destroy();
  });

  for (const mode of ['veth', 'macvlan', 'tap']) {
    for (const point of ['create:leased', 'create:network', 'create:etc', 'create:admitted']) {
      it(`${mode} create failing at ${point}: the injected error, and nothing left of it`, () => {
        const s = out[`${mode} ${point}`];
        assert.equal(s.injected, true, `the caller saw another error: ${s.error}`);
        assert.equal(s.error, `injected fault at ${point}`);
        assert.equal(s.undoFailures, 0, 'every undo step succeeded');
        assert.deepEqual(s.after, s.before);
      });
    }
  }

  it('the address a failed create took is the next one handed out', () => {
    assert.equal(out.afterFailures, '10.166.0.3'); // .2 is the bystander's
  });

  for (const point of ['acquire:renamed', 'acquire:aliased', 'acquire:etc', 'acquire:admitted']) {
    it(`acquisition failing at ${point}: answers "no member", drops the member, leaves nothing of the new name`, () => {
      const s = out[point];
      assert.equal(s.injected, false, 'acquire does not throw: the caller falls back to a fresh network');
      assert.equal(s.returned, 'undefined');
      const member = s.before.rows.filter((r) => r.startsWith('.pool-'));
      assert.equal(member.length, 1);
      const without = (xs: string[], drop: (x: string) => boolean) => xs.filter((x) => !drop(x));
      const memberNs = s.before.namespaces.filter((n) => n.includes('.pool-'));
      assert.deepEqual(s.after.rows, without(s.before.rows, (r) => r.startsWith('.pool-')));
      assert.deepEqual(s.after.namespaces, without(s.before.namespaces, (n) => memberNs.includes(n)));
      assert.deepEqual(s.after.etc, without(s.before.etc, (n) => memberNs.includes(n)));
      assert.equal(s.after.links.length, s.before.links.length - 1, 'the member\'s link went with it');
      assert.equal(s.after.used, s.before.used - 1, 'its address is free again');
      assert.deepEqual(s.after.elements, s.before.elements, 'no element of the would-be sandbox');
      assert.ok(!JSON.stringify(s.after).includes('victim'));
    });
  }

  it('removal failing before it changed anything leaves the sandbox whole; another rm finishes it', () => {
    const s = out['remove:opened'];
    assert.equal(s.error, 'injected fault at remove:opened');
    assert.deepEqual(s.failed, s.before);
    assert.ok(!JSON.stringify(s.retried).includes('victim'));
  });

  it('removal failing after its elements went: traffic is stopped, and another rm finishes it with nothing left', () => {
    const s = out['remove:elements'];
    assert.equal(s.error, 'injected fault at remove:elements');
    assert.ok(s.failed!.rows.some((r) => r.startsWith('victim@')), 'the row stays for the retry');
    assert.ok(s.failed!.elements.length < s.before.elements.length, 'its elements are gone');
    assert.ok(!JSON.stringify(s.retried).includes('victim'));
    assert.equal(s.retried!.used, s.before.used - 1);
  });

  it('ends with only the bystander', () => {
    assert.deepEqual(out.final!.rows, ['keep@10.166.0.2:ready']);
    assert.deepEqual(out.final!.namespaces, [`${I}-keep`]);
  });
});

describe('failure injection: a table rebuild interrupted, then a restart', () => {
  let tb: Testbed;
  let out: Record<string, { injected: boolean; before: number; after: number }> & { crash?: string };
  const I = `u${Date.now().toString(36)}`;

  before(async () => {
    tb = await Testbed.create({ hostService: false });
    tb.instances.add(I);
    const r = spawnSync('nsenter', [`--net=/run/netns/${tb.hostNs}`, process.execPath, CARRY_STEPS, I, path.join(tb.dir, I, 'state'), path.join(tb.dir, I, 'run'), WAN.dns], { encoding: 'utf8', timeout: 120_000 });
    assert.equal(r.status, 0, r.stderr);
    out = JSON.parse(r.stdout);
    assert.equal(out.crash, undefined, out.crash);
  });
  after(async () => {
    await tb?.destroy();
  });

  // Counts are written ahead of the rebuild, and the rebuild records its epoch in the kernel
  // in the same transaction: a restart knows which of the two holds them.
  for (const [point, what] of [['rebuild:written-ahead', 'before the kernel was rebuilt: the kernel still counts them, none counted twice'], ['rebuild:applied', 'after the kernel was rebuilt: the counts written ahead are kept, none lost']]) {
    it(`a crash ${what}`, () => {
      const s = out[point];
      assert.equal(s.injected, true);
      assert.ok(s.before > 0, 'the sandbox had sent packets');
      assert.equal(s.after, s.before);
    });
  }
});
