// The tc messages' bytes: what the kernel reads of each (include/uapi/linux/pkt_sched.h,
// pkt_cls.h, tc_act/tc_mirred.h), checked field by field against the layouts. The
// integration tests (limits.test.ts) check that the kernel takes them and shapes.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { parseAttrs, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST } from '../../src/kernel/rtnetlink-codec.js';
import {
  CLSACT_INGRESS, ETH_P_IP, RTM_DELTCLASS, RTM_DELTFILTER, RTM_NEWQDISC, RTM_NEWTCLASS, RTM_NEWTFILTER, TCA_KIND, TCA_OPTIONS, TC_H_ROOT,
  burstTicks, delClass, delU32, filterInfo, getRootQdisc, newClsact, newHtbRoot, newU32Link, newU32Table, parseTcObject, setBfifoLeaf,
  setHtbClass, setU32Match, tcHandle, u32Handle,
} from '../../src/kernel/tc-codec.js';

/** tcmsg fields and attributes of a request body. */
function parse(body: Buffer) {
  return {
    family: body.readUInt8(0),
    ifindex: body.readInt32LE(4),
    handle: body.readUInt32LE(8),
    parent: body.readUInt32LE(12),
    info: body.readUInt32LE(16),
    attrs: parseAttrs(body.subarray(20)),
  };
}
const kind = (a: Map<number, Buffer>) => a.get(TCA_KIND)!.toString('utf8');
const opts = (a: Map<number, Buffer>) => parseAttrs(a.get(TCA_OPTIONS)!);

describe('tc handles', () => {
  it('major:minor in one u32; clsact ingress is ffff:fff2; filter info is prio << 16 | protocol in network order', () => {
    assert.equal(tcHandle(1, 0x105), 0x00010105);
    assert.equal(tcHandle(0xffff, 0), 0xffff0000);
    assert.equal(CLSACT_INGRESS, 0xfffffff2);
    assert.equal(filterInfo(1), 0x00010008); // htons(0x0800) read as a little-endian u16
    assert.equal(filterInfo(3, ETH_P_IP), 0x00030008);
  });

  it('u32 handles: table (12 bits), bucket (8), node (12); the root table is 800:', () => {
    assert.equal(u32Handle(0x800, 0, 1), 0x80000001);
    assert.equal(u32Handle(1, 6, 2), 0x00106002);
    assert.equal(u32Handle(1), 0x00100000);
  });
});

describe('HTB', () => {
  it('a root qdisc: tcmsg, kind htb, TCA_HTB_INIT (struct tc_htb_glob: version 3, r2q, default class)', () => {
    const r = newHtbRoot(7, 1, { defaultMinor: 1 });
    assert.equal(r.type, RTM_NEWQDISC);
    assert.equal(r.flags, NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL);
    const m = parse(r.body);
    assert.deepEqual([m.family, m.ifindex, m.handle, m.parent], [0, 7, 0x00010000, TC_H_ROOT]);
    assert.equal(kind(m.attrs), 'htb\0');
    const glob = opts(m.attrs).get(2)!;
    assert.equal(glob.length, 20);
    assert.deepEqual([glob.readUInt32LE(0), glob.readUInt32LE(4), glob.readUInt32LE(8), glob.readUInt32LE(12), glob.readUInt32LE(16)], [3, 10, 1, 0, 0]);
    assert.equal(opts(parse(newHtbRoot(7, 1).body).attrs).get(2)!.readUInt32LE(8), 0, 'no default class: unclassified passes');
  });

  it('burst as HTB buffer ticks (64 ns): 250,000 bytes at 2.5 MB/s is 100 ms = 1,562,500 ticks (what `tc -s class` shows as tokens)', () => {
    assert.equal(burstTicks(250_000, 2_500_000), 1_562_500);
    assert.equal(burstTicks(1, 1), 15_625_000);
    assert.equal(burstTicks(1e12, 1), 0xffffffff, 'clamped to u32');
  });

  it('a class: struct tc_htb_opt (rate and ceil ratespecs with the link layer set, buffer, cbuffer, quantum)', () => {
    const r = setHtbClass({ ifindex: 9, classid: tcHandle(1, 0x105), parent: tcHandle(1, 0), rate: 2_500_000, burst: 250_000, quantum: 25_000 });
    assert.equal(r.type, RTM_NEWTCLASS);
    assert.equal(r.flags, NLM_F_REQUEST | NLM_F_CREATE, 'no EXCL: an existing class is changed in place');
    const m = parse(r.body);
    assert.deepEqual([m.ifindex, m.handle, m.parent], [9, 0x00010105, 0x00010000]);
    assert.equal(kind(m.attrs), 'htb\0');
    const o = opts(m.attrs);
    const opt = o.get(1)!;
    assert.equal(opt.length, 44);
    for (const at of [0, 12]) {
      assert.equal(opt.readUInt8(at + 1), 1, 'TC_LINKLAYER_ETHERNET: no rate table needed');
      assert.equal(opt.readUInt32LE(at + 8), 2_500_000);
    }
    assert.equal(opt.readUInt32LE(24), 1_562_500, 'buffer');
    assert.equal(opt.readUInt32LE(28), 1_562_500, 'cbuffer');
    assert.equal(opt.readUInt32LE(32), 25_000, 'quantum');
    assert.ok(!o.has(6) && !o.has(7), 'no 64-bit rates below 4 GB/s');
  });

  it('rates above 2^32 bytes/s go in TCA_HTB_RATE64 / CEIL64', () => {
    const o = opts(parse(setHtbClass({ ifindex: 1, classid: 0x10001, parent: 0x10000, rate: 5e9, burst: 5e8, quantum: 200_000 }).body).attrs);
    assert.equal(o.get(6)!.readBigUInt64LE(0), 5_000_000_000n);
    assert.equal(o.get(7)!.readBigUInt64LE(0), 5_000_000_000n);
    assert.equal(o.get(1)!.readUInt32LE(8), 0xffffffff);
  });

  it('a bfifo leaf: create or replace under the class, limit in bytes; a class and a filter delete by handle', () => {
    const r = setBfifoLeaf(9, 0x10105, 400_000);
    assert.equal(r.flags, NLM_F_REQUEST | NLM_F_CREATE | NLM_F_REPLACE);
    const m = parse(r.body);
    assert.deepEqual([m.handle, m.parent], [0, 0x10105]);
    assert.equal(kind(m.attrs), 'bfifo\0');
    assert.equal(m.attrs.get(TCA_OPTIONS)!.readUInt32LE(0), 400_000);
    const d = delClass(9, 0x10105);
    assert.equal(d.type, RTM_DELTCLASS);
    assert.equal(parse(d.body).handle, 0x10105);
  });

  it('clsact at ffff:0 under TC_H_CLSACT; the root qdisc asked by parent', () => {
    const m = parse(newClsact(4).body);
    assert.deepEqual([m.handle, m.parent], [0xffff0000, 0xfffffff1]);
    assert.equal(kind(m.attrs), 'clsact\0');
    assert.equal(parse(getRootQdisc(4).body).parent, TC_H_ROOT);
  });
});

describe('u32', () => {
  const w = { ifindex: 5, parent: 0x10000, prio: 1 };
  /** struct tc_u32_sel and its keys. */
  function sel(b: Buffer) {
    const nkeys = b.readUInt8(2);
    return {
      flags: b.readUInt8(0), nkeys, hoff: b.readInt16LE(10), hmask: b.readUInt32BE(12),
      keys: Array.from({ length: nkeys }, (_, i) => ({ mask: b.readUInt32BE(16 + 16 * i), value: b.readUInt32BE(20 + 16 * i), off: b.readInt32LE(24 + 16 * i) })),
      length: b.length,
    };
  }

  it('a hash table: its handle, TCA_U32_DIVISOR', () => {
    const m = parse(newU32Table(w, 1, 256).body);
    assert.deepEqual([m.handle, m.parent, m.info], [0x00100000, 0x10000, filterInfo(1)]);
    assert.equal(kind(m.attrs), 'u32\0');
    assert.equal(opts(m.attrs).get(4)!.readUInt32LE(0), 256);
  });

  it('a link: the subnet key, the hashed word (mask and offset), and the table it leads to', () => {
    const m = parse(newU32Link(w, 1, [{ off: 12, mask: 0xffff0000, value: 0x0aa60000 }], 0xff, 12).body);
    const o = opts(m.attrs);
    const s = sel(o.get(5)!);
    assert.deepEqual([s.flags, s.nkeys, s.hoff, s.hmask, s.length], [0, 1, 12, 0xff, 32]);
    assert.deepEqual(s.keys, [{ mask: 0xffff0000, value: 0x0aa60000, off: 12 }]);
    assert.equal(o.get(3)!.readUInt32LE(0), 0x00100000);
  });

  it('a match in a bucket: the bucket in TCA_U32_HASH, terminal keys (negative offsets reach the Ethernet header), the class', () => {
    const r = setU32Match(w, u32Handle(1, 6, 2), [{ off: 12, mask: 0xffffffff, value: 0x0aa60106 }, { off: -8, mask: 0xffffffff, value: 0x02112233 }, { off: -4, mask: 0xffff0000, value: 0x44550000 }], { classid: 0x10106 });
    assert.equal(r.type, RTM_NEWTFILTER);
    assert.equal(r.flags, NLM_F_REQUEST | NLM_F_CREATE, 'replaced when it exists');
    const m = parse(r.body);
    assert.equal(m.handle, 0x00106002);
    const o = opts(m.attrs);
    assert.equal(o.get(2)!.readUInt32LE(0), 0x00106000);
    const s = sel(o.get(5)!);
    assert.equal(s.flags, 1, 'TC_U32_TERMINAL');
    assert.deepEqual(s.keys, [{ mask: 0xffffffff, value: 0x0aa60106, off: 12 }, { mask: 0xffffffff, value: 0x02112233, off: -8 }, { mask: 0xffff0000, value: 0x44550000, off: -4 }]);
    assert.equal(o.get(1)!.readUInt32LE(0), 0x10106);
  });

  it('a value is masked; in the root table there is no TCA_U32_HASH', () => {
    const o = opts(parse(setU32Match(w, u32Handle(0x800, 0, 1), [{ off: 12, mask: 0xffffff00, value: 0x0aa601ff }], { classid: 1 }).body).attrs);
    assert.ok(!o.has(2));
    assert.equal(sel(o.get(5)!).keys[0].value, 0x0aa60100);
  });

  it('a redirect: TCA_U32_ACT with mirred (egress redirect, stolen, the target ifindex)', () => {
    const m = parse(setU32Match({ ifindex: 8, parent: CLSACT_INGRESS, prio: 1 }, u32Handle(0x800, 0, 1), [{ off: 12, mask: 0xffffffff, value: 0x0aa60105 }], { redirectTo: 6 }).body);
    assert.equal(m.parent, 0xfffffff2);
    const o = opts(m.attrs);
    assert.ok(!o.has(1), 'no class');
    const act = parseAttrs(parseAttrs(o.get(7)!).get(1)!);
    assert.equal(act.get(1)!.toString('utf8'), 'mirred\0');
    const parms = parseAttrs(act.get(2)!).get(2)!;
    assert.equal(parms.length, 28);
    assert.equal(parms.readInt32LE(8), 4, 'TC_ACT_STOLEN');
    assert.equal(parms.readInt32LE(20), 1, 'TCA_EGRESS_REDIR');
    assert.equal(parms.readUInt32LE(24), 6);
  });

  it('a filter deletes by handle, priority and protocol, with its kind', () => {
    const r = delU32(w, u32Handle(1, 6, 2));
    assert.equal(r.type, RTM_DELTFILTER);
    const m = parse(r.body);
    assert.deepEqual([m.handle, m.info], [0x00106002, filterInfo(1)]);
    assert.equal(kind(m.attrs), 'u32\0');
  });
});

describe('parseTcObject', () => {
  it('reads identity, kind and the counters of TCA_STATS2 (basic: bytes, packets; queue: backlog, drops, overlimits)', () => {
    const basic = Buffer.alloc(16);
    basic.writeBigUInt64LE(123456789n, 0);
    basic.writeUInt32LE(4321, 8);
    const queue = Buffer.alloc(20);
    queue.writeUInt32LE(3, 0);
    queue.writeUInt32LE(4500, 4);
    queue.writeUInt32LE(17, 8);
    queue.writeUInt32LE(0, 12);
    queue.writeUInt32LE(99, 16);
    const tcm = Buffer.alloc(20);
    tcm.writeInt32LE(6, 4);
    tcm.writeUInt32LE(0x10105, 8);
    tcm.writeUInt32LE(0x10000, 12);
    const attr = (type: number, data: Buffer) => {
      const h = Buffer.alloc(4);
      h.writeUInt16LE(4 + data.length, 0);
      h.writeUInt16LE(type, 2);
      return Buffer.concat([h, data, Buffer.alloc((4 - (data.length % 4)) % 4)]);
    };
    const body = Buffer.concat([tcm, attr(TCA_KIND, Buffer.from('htb\0')), attr(7, Buffer.concat([attr(1, basic), attr(3, queue)]))]);
    assert.deepEqual(parseTcObject({ type: RTM_NEWTCLASS, flags: 0, seq: 0, body }), {
      ifindex: 6, handle: 0x10105, parent: 0x10000, kind: 'htb', bytes: 123456789, packets: 4321, drops: 17, overlimits: 99, backlog: 4500,
    });
  });
});
