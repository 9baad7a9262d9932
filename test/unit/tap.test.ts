// TAP sandboxes' pure parts: options and what a VMM is told, the TUNSETIFF request, the tc
// requests joining the TAP to eth0 (byte for byte), the admission element, and the state
// migration that lets old databases hold tap rows.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { TAP_DEVICE, isDefaultTap, kernelIpArg, resolveTapOptions, tapInfo } from '../../src/core/tap.js';
import { LINK_MODES } from '../../src/core/link-modes.js';
import { tapIfreq } from '../../src/kernel/tun.js';
import { addClsact, redirectIngress } from '../../src/kernel/tc-redirect.js';
import { noIpv6Addresses } from '../../src/kernel/rtnl-requests.js';
import { parseAttrs } from '../../src/kernel/rtnetlink-codec.js';
import { Store } from '../../src/store/store.js';
import { migrateModeCheck } from '../../src/store/mode-check.js';
import { isCode } from '../../src/errors.js';

const policy = {} as never;

describe('tap options', () => {
  it('defaults: vnet_hdr on, one queue, no owner or group', () => {
    assert.deepEqual(resolveTapOptions(undefined), { vnetHdr: true, queues: 1 });
    assert.ok(isDefaultTap(resolveTapOptions({})));
    assert.ok(!isDefaultTap(resolveTapOptions({ queues: 2 })));
    assert.ok(!isDefaultTap(resolveTapOptions({ owner: 0 })));
    assert.deepEqual(resolveTapOptions({ vnetHdr: false, queues: 8, owner: 1000, group: 0 }), { vnetHdr: false, queues: 8, owner: 1000, group: 0 });
  });

  it('refuses bad options, naming the field', () => {
    for (const [o, re] of [
      [{ queues: 0 }, /tap\.queues: want an integer from 1 to 64, got 0/],
      [{ queues: 65 }, /tap\.queues/],
      [{ queues: 1.5 }, /tap\.queues/],
      [{ owner: -1 }, /tap\.owner: want a numeric uid/],
      [{ group: 'wheel' }, /tap\.group: want a numeric gid/],
      [{ vnetHdr: 'yes' }, /tap\.vnetHdr/],
      [{ queue: 2 }, /tap\.queue: unknown option/],
      [[], /tap: want an object/],
    ] as [unknown, RegExp][]) {
      assert.throws(() => resolveTapOptions(o as never), (e: Error & { code?: string }) => re.test(e.message) && isCode(e.code ?? '') && e.code === 'invalid_argument', JSON.stringify(o));
    }
  });

  it('the kernel ip= argument: ADDR::GW:MASK::eth0:off:DNS', () => {
    assert.equal(kernelIpArg('10.166.0.2', '10.166.0.1', 16), 'ip=10.166.0.2::10.166.0.1:255.255.0.0::eth0:off:10.166.0.1');
    assert.equal(kernelIpArg('192.168.5.9', '192.168.5.1', 26), 'ip=192.168.5.9::192.168.5.1:255.255.255.192::eth0:off:192.168.5.1');
  });

  it('what a VMM is told', () => {
    const i = tapInfo({ ip: '10.1.0.5', mac: '02:aa:bb:cc:dd:ee', gateway: '10.1.0.1', prefixLength: 24, netns: '/run/netns/x-vm' }, { vnetHdr: true, queues: 2, owner: 7 });
    assert.deepEqual(i, {
      device: TAP_DEVICE, netns: '/run/netns/x-vm', guestMac: '02:aa:bb:cc:dd:ee', ip: '10.1.0.5', prefixLength: 24, gateway: '10.1.0.1', dns: '10.1.0.1',
      kernelIp: 'ip=10.1.0.5::10.1.0.1:255.255.255.0::eth0:off:10.1.0.1', vnetHdr: true, queues: 2, owner: 7,
    });
  });

  it('a tap sandbox is admitted as a veth one: by its host link, guest MAC and address', () => {
    const s = { ip: '10.1.0.5', mac: '02:aa:bb:cc:dd:ee', hostLink: 'tnabcds5', policy };
    assert.deepEqual(LINK_MODES.tap.admission({ ...s, mode: 'tap' }), LINK_MODES.veth.admission({ ...s, mode: 'veth' }));
    assert.equal(LINK_MODES.tap.hostLink, true);
  });
});

describe('TUNSETIFF request', () => {
  it('struct ifreq: the name, then IFF_TAP|IFF_NO_PI and the options as flags', () => {
    const b = tapIfreq('tap0', { vnetHdr: true, queues: 1 });
    assert.equal(b.length, 40);
    assert.equal(b.subarray(0, 5).toString('latin1'), 'tap0\0');
    assert.equal(b.readUInt16LE(16), 0x0002 | 0x1000 | 0x4000);
    assert.equal(tapIfreq('tap0', { vnetHdr: false, queues: 4 }).readUInt16LE(16), 0x0002 | 0x1000 | 0x0100);
    assert.throws(() => tapIfreq('a-name-far-too-long', { vnetHdr: true, queues: 1 }), /too long/);
  });
});

describe('tc requests joining the TAP to eth0', () => {
  const tcmsg = (body: Buffer) => ({ ifindex: body.readInt32LE(4), handle: body.readUInt32LE(8), parent: body.readUInt32LE(12), info: body.readUInt32LE(16) });

  it('a clsact qdisc', () => {
    const r = addClsact(3);
    assert.equal(r.type, 36); // RTM_NEWQDISC
    assert.deepEqual(tcmsg(r.body), { ifindex: 3, handle: 0xffff0000, parent: 0xfffffff1, info: 0 });
    const a = parseAttrs(r.body.subarray(20));
    assert.equal(a.get(1)!.toString('latin1'), 'clsact\0');
  });

  it('a u32 match-all filter on ingress with a mirred egress redirect', () => {
    const r = redirectIngress(2, 3);
    assert.equal(r.type, 44); // RTM_NEWTFILTER
    // ingress of clsact; priority 1, protocol ETH_P_ALL in network order
    assert.deepEqual(tcmsg(r.body), { ifindex: 2, handle: 0, parent: 0xfffffff2, info: 0x00010300 });
    const a = parseAttrs(r.body.subarray(20));
    assert.equal(a.get(1)!.toString('latin1'), 'u32\0');
    const opts = parseAttrs(a.get(2)!);
    const sel = opts.get(5)!; // TCA_U32_SEL: flags TERMINAL, one key, mask 0 (matches anything)
    assert.deepEqual([sel[0], sel[2], sel.length, sel.readUInt32BE(16)], [1, 1, 32, 0]);
    const act = parseAttrs(parseAttrs(opts.get(7)!).get(1)!); // TCA_U32_ACT -> action 1
    assert.equal(act.get(1)!.toString('latin1'), 'mirred\0');
    const parms = parseAttrs(act.get(2)!).get(2)!; // TCA_ACT_OPTIONS -> TCA_MIRRED_PARMS
    assert.equal(parms.length, 28);
    assert.equal(parms.readInt32LE(8), 4, 'action: stolen');
    assert.equal(parms.readInt32LE(20), 1, 'eaction: egress redirect');
    assert.equal(parms.readUInt32LE(24), 3, 'to the TAP');
  });

  it('IPv6 off in a message of its own, without bringing the link up', () => {
    const r = noIpv6Addresses(2);
    assert.equal(r.body.readInt32LE(4), 2);
    assert.equal(r.body.readUInt32LE(12), 0, 'no flag changed');
    assert.ok(parseAttrs(r.body.subarray(16)).has(26), 'IFLA_AF_SPEC');
  });
});

describe('state: the mode CHECK of older databases', () => {
  const OLD = `CREATE TABLE sandboxes (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  name TEXT NOT NULL UNIQUE,
  ip TEXT NOT NULL UNIQUE,
  mode TEXT NOT NULL CHECK (mode IN ('veth', 'macvlan')),
  state TEXT NOT NULL CHECK (state IN ('creating', 'ready')),
  created_at INTEGER NOT NULL,
  policy TEXT NOT NULL DEFAULT '{}'
)`;

  it('is rebuilt: rows, columns others added, indexes and the id sequence kept; tap accepted', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tn-tapmig-'));
    try {
      const file = path.join(dir, 'state.db');
      const db = new Database(file);
      db.exec(OLD);
      db.exec("ALTER TABLE sandboxes ADD COLUMN labels TEXT NOT NULL DEFAULT '[]'"); // another migration's column
      db.exec('CREATE INDEX sandboxes_by_state ON sandboxes (state)');
      db.exec("INSERT INTO sandboxes (name, ip, mode, state, created_at, labels) VALUES ('a', '10.0.0.2', 'veth', 'ready', 1, '[\"x\"]'), ('b', '10.0.0.3', 'macvlan', 'ready', 2, '[]'), ('c', '10.0.0.4', 'veth', 'ready', 3, '[]')");
      db.exec("DELETE FROM sandboxes WHERE name = 'c'"); // the sequence is now past the highest id
      assert.throws(() => db.exec("INSERT INTO sandboxes (name, ip, mode, state, created_at) VALUES ('t', '10.0.0.9', 'tap', 'ready', 4)"), /CHECK/);
      db.close();

      const store = new Store(file);
      try {
        assert.deepEqual(store.list().map((r) => [r.id, r.name, r.mode]), [[1, 'a', 'veth'], [2, 'b', 'macvlan']]);
        assert.equal(store.db.prepare<[], { labels: string }>("SELECT labels FROM sandboxes WHERE name = 'a'").get()!.labels, '["x"]');
        assert.ok(store.db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = 'sandboxes_by_state'").get(), 'index lost');
        assert.equal(store.peekNextId(), 4, 'id 3 must never be given again');
        const id = store.insertSandbox('t', '10.0.0.9', 'tap');
        assert.equal(id, 4);
        store.taps.set(id, { vnetHdr: false, queues: 2, owner: 10 });
        assert.deepEqual(store.taps.get(id), { vnetHdr: false, queues: 2, owner: 10 });
        store.deleteSandbox(id);
        assert.equal(store.taps.get(id), undefined, 'the tap row goes with its sandbox');
        assert.throws(() => store.insertSandbox('u', '10.0.0.10', 'tun' as never), /CHECK/);
        assert.equal(migrateModeCheck(store.db), false, 'a second run changes nothing');
      } finally {
        store.close();
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
