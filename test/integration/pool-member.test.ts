// A pool member's two halves on the engine itself (helpers/pool-member-steps.ts, run in the
// testbed's host namespace): gc leaves a member being built alone, and the engine cleans up
// after a builder thread that died midway (namespace, link, /etc/netns entry, row, address).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { Testbed, WAN } from '../testbed/testbed.js';

const STEPS = path.join(path.dirname(new URL(import.meta.url).pathname), 'helpers', 'pool-member-steps.js');
const noGc = { sandboxes: [], namespaces: [], links: [], files: [] };

describe('pool member halves on the engine', () => {
  let tb: Testbed;
  const I = `m${Date.now().toString(36)}`;
  let seen: {
    reserved: { row: string; netns: boolean; hostLink: boolean; etc: boolean; idle: number; gc: unknown };
    built: { row: string; netns: boolean; hostLink: boolean; etc: boolean; gc: unknown };
    finished: { row: string; netns: boolean; idle: number };
    died: { before: Record<string, unknown>; after: Record<string, unknown>; ip: string; nextIp: string; idle: number };
    outOfOrder: { lowest: string; storedCursor: string };
    downError?: string;
  };

  before(async () => {
    tb = await Testbed.create({ hostService: false });
    tb.instances.add(I);
    const r = spawnSync('nsenter', [`--net=/run/netns/${tb.hostNs}`, process.execPath, STEPS, I, path.join(tb.dir, I, 'state'), path.join(tb.dir, I, 'run'), WAN.dns], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(r.status, 0, r.stderr);
    seen = JSON.parse(r.stdout.trim().split('\n').pop()!);
  });
  after(async () => {
    await tb?.destroy();
  });

  it('gc leaves a member being built alone, before and after its kernel part exists', () => {
    assert.deepEqual(seen.reserved, { row: 'creating', netns: false, hostLink: false, etc: false, idle: 0, gc: noGc });
    assert.deepEqual(seen.built, { row: 'creating', netns: true, hostLink: true, etc: true, gc: noGc });
    assert.deepEqual(seen.finished, { row: 'ready', netns: true, hostLink: true, etc: true, idle: 1 });
  });

  it('a builder that died midway leaves nothing: its namespace, link, entry and row go, and its address is next in line', () => {
    assert.deepEqual(seen.died.before, { row: 'creating', netns: true, hostLink: true, etc: true });
    assert.deepEqual(seen.died.after, { row: null, netns: false, hostLink: false, etc: false });
    assert.equal(seen.died.nextIp, seen.died.ip);
    assert.equal(seen.died.idle, 1, 'the finished member is still the only idle one');
  });

  it('leases given back in the order they were taken leave the lowest address as the stored cursor', () => {
    const asNumber = (ip: string) => ip.split('.').reduce((n, o) => n * 256 + Number(o), 0);
    assert.equal(Number(seen.outOfOrder.storedCursor), asNumber(seen.outOfOrder.lowest));
  });

  it('down afterwards removes everything', () => {
    assert.equal(seen.downError, undefined);
    assert.equal(fs.readdirSync('/run/netns').filter((n) => n.startsWith(`${I}-`)).length, 0);
    assert.equal(fs.readdirSync('/etc/netns').filter((n) => n.includes(I)).length, 0);
  });
});
