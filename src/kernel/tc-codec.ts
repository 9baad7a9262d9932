// Pure encoding of the traffic-control (tc) rtnetlink messages toastnet sends: HTB qdiscs
// and classes, bfifo leaves, clsact, and u32 filters (hash tables, links, address matches
// with a class or a mirred redirect). No I/O: the socket is rtnetlink.ts. Layouts follow
// include/uapi/linux/{rtnetlink,pkt_sched,pkt_cls,tc_act/tc_mirred}.h.
//
// Only HTB, TBF, fifo, clsact, u32, mirred and ifb are assumed of the kernel (the test VMs'
// kernel has nothing else built in: no fq_codel, fq, flower, matchall, police, skbedit).
import { Attr, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, Request, parseAttrs, request, str, u32 } from './rtnetlink-codec.js';
import type { Message } from './rtnetlink-codec.js';

export const RTM_NEWQDISC = 36;
export const RTM_DELQDISC = 37;
export const RTM_GETQDISC = 38;
export const RTM_NEWTCLASS = 40;
export const RTM_DELTCLASS = 41;
export const RTM_GETTCLASS = 42;
export const RTM_NEWTFILTER = 44;
export const RTM_DELTFILTER = 45;

export const TCA_KIND = 1;
export const TCA_OPTIONS = 2;
export const TCA_STATS2 = 7;
const TCA_STATS_BASIC = 1;
const TCA_STATS_QUEUE = 3;

export const TC_H_ROOT = 0xffffffff;
export const TC_H_CLSACT = 0xfffffff1; // == TC_H_INGRESS
export const TC_H_MIN_INGRESS = 0xfff2;
export const TC_H_MIN_EGRESS = 0xfff3;
export const ETH_P_IP = 0x0800;

/** A tc handle "major:minor" as the kernel holds it. */
export const tcHandle = (major: number, minor: number): number => (((major & 0xffff) << 16) | (minor & 0xffff)) >>> 0;
/** clsact's ingress hook: where filters on traffic a device receives attach. */
export const CLSACT_INGRESS = tcHandle(0xffff, TC_H_MIN_INGRESS);

/** struct tcmsg: family, pad, ifindex, handle, parent, info (filters: priority << 16 | protocol). */
export function tcmsg(o: { ifindex: number; handle?: number; parent?: number; info?: number }): Buffer {
  const b = Buffer.alloc(20);
  b.writeUInt8(0, 0); // AF_UNSPEC
  b.writeInt32LE(o.ifindex, 4);
  b.writeUInt32LE((o.handle ?? 0) >>> 0, 8);
  b.writeUInt32LE((o.parent ?? 0) >>> 0, 12);
  b.writeUInt32LE((o.info ?? 0) >>> 0, 16);
  return b;
}

/** tcm_info of a filter: priority in the high half, the protocol (network order) in the low. */
export const filterInfo = (prio: number, protocol = ETH_P_IP): number => (((prio & 0xffff) << 16) | ((protocol >> 8) & 0xff) | ((protocol & 0xff) << 8)) >>> 0;

// ---- HTB -------------------------------------------------------------------------------

const TCA_HTB_PARMS = 1;
const TCA_HTB_INIT = 2;
const TCA_HTB_RATE64 = 6;
const TCA_HTB_CEIL64 = 7;
const TC_LINKLAYER_ETHERNET = 1;
/** psched ticks are 64 ns (PSCHED_SHIFT 6): HTB's buffers are times in ticks. */
export const PSCHED_TICK_NS = 64;

/** struct tc_ratespec with the link layer given, so the kernel wants no rate table. */
function ratespec(bytesPerSecond: number): Buffer {
  const b = Buffer.alloc(12);
  b.writeUInt8(TC_LINKLAYER_ETHERNET, 1);
  b.writeUInt32LE(Math.min(bytesPerSecond, 0xffffffff), 8);
  return b;
}

/** The time `bytes` take at `bytesPerSecond`, in psched ticks (what HTB's buffer and cbuffer hold). */
export function burstTicks(bytes: number, bytesPerSecond: number): number {
  return Math.min(0xffffffff, Math.round((bytes * 1e9) / bytesPerSecond / PSCHED_TICK_NS));
}

/** An HTB root qdisc `major:` on a device; unclassified packets pass unshaped (no default class). */
export function newHtbRoot(ifindex: number, major: number, o: { defaultMinor?: number; flags?: number } = {}): Request {
  const glob = Buffer.alloc(20); // struct tc_htb_glob
  glob.writeUInt32LE(3, 0); // version
  glob.writeUInt32LE(10, 4); // rate2quantum (unused: every class sets its quantum)
  glob.writeUInt32LE(o.defaultMinor ?? 0, 8);
  return request(RTM_NEWQDISC, o.flags ?? (NLM_F_CREATE | NLM_F_EXCL), tcmsg({ ifindex, handle: tcHandle(major, 0), parent: TC_H_ROOT }), [
    { type: TCA_KIND, data: str('htb') },
    { type: TCA_OPTIONS, nested: [{ type: TCA_HTB_INIT, data: glob }] },
  ]);
}

export interface HtbClass {
  ifindex: number;
  classid: number;
  parent: number;
  /** Bytes per second, both the guaranteed rate and the ceiling (no borrowing). */
  rate: number;
  /** Bytes the bucket holds: what may leave at once after an idle time. */
  burst: number;
  /** Bytes a class may send per round among siblings. */
  quantum: number;
}

/** An HTB class (made, or changed in place when it exists: the rate changes without a gap). */
export function setHtbClass(c: HtbClass): Request {
  const opt = Buffer.alloc(44); // struct tc_htb_opt: rate, ceil, buffer, cbuffer, quantum, level, prio
  ratespec(c.rate).copy(opt, 0);
  ratespec(c.rate).copy(opt, 12);
  const ticks = burstTicks(c.burst, c.rate);
  opt.writeUInt32LE(ticks, 24);
  opt.writeUInt32LE(ticks, 28);
  opt.writeUInt32LE(c.quantum, 32);
  const attrs: Attr[] = [{ type: TCA_HTB_PARMS, data: opt }];
  if (c.rate > 0xffffffff) {
    const r64 = Buffer.alloc(8);
    r64.writeBigUInt64LE(BigInt(c.rate));
    attrs.push({ type: TCA_HTB_RATE64, data: r64 }, { type: TCA_HTB_CEIL64, data: r64 });
  }
  return request(RTM_NEWTCLASS, NLM_F_CREATE, tcmsg({ ifindex: c.ifindex, handle: c.classid, parent: c.parent }), [
    { type: TCA_KIND, data: str('htb') },
    { type: TCA_OPTIONS, nested: attrs },
  ]);
}

export function delClass(ifindex: number, classid: number): Request {
  return request(RTM_DELTCLASS, 0, tcmsg({ ifindex, handle: classid }));
}

/** A byte-limited FIFO as the leaf of a class (replacing HTB's default, a pfifo of txqueuelen packets). */
export function setBfifoLeaf(ifindex: number, parent: number, limitBytes: number): Request {
  const opt = u32(limitBytes); // struct tc_fifo_qopt
  return request(RTM_NEWQDISC, NLM_F_CREATE | NLM_F_REPLACE, tcmsg({ ifindex, parent }), [
    { type: TCA_KIND, data: str('bfifo') },
    { type: TCA_OPTIONS, data: opt },
  ]);
}

/** clsact: hooks for filters on what a device receives (and sends), no queue. */
export function newClsact(ifindex: number): Request {
  return request(RTM_NEWQDISC, NLM_F_CREATE | NLM_F_EXCL, tcmsg({ ifindex, handle: tcHandle(0xffff, 0), parent: TC_H_CLSACT }), [{ type: TCA_KIND, data: str('clsact') }]);
}

export function delQdisc(ifindex: number, parent: number): Request {
  return request(RTM_DELQDISC, 0, tcmsg({ ifindex, parent }));
}

export function dumpClasses(ifindex: number): Request {
  return request(RTM_GETTCLASS, 0, tcmsg({ ifindex }));
}

/** The root qdisc of one device (a GET, not a dump: a dump walks every device of the namespace). */
export function getRootQdisc(ifindex: number): Request {
  return request(RTM_GETQDISC, 0, tcmsg({ ifindex, parent: TC_H_ROOT }));
}

// ---- u32 -------------------------------------------------------------------------------

const TCA_U32_CLASSID = 1;
const TCA_U32_HASH = 2;
const TCA_U32_LINK = 3;
const TCA_U32_DIVISOR = 4;
const TCA_U32_SEL = 5;
const TCA_U32_ACT = 7;
const TC_U32_TERMINAL = 1;

/** A u32 handle: hash table (12 bits), bucket (8), node (12). */
export const u32Handle = (table: number, bucket = 0, node = 0): number => (((table & 0xfff) << 20) | ((bucket & 0xff) << 12) | (node & 0xfff)) >>> 0;
/** The table every u32 instance starts with ("800:"). */
export const U32_ROOT_TABLE = 0x800;

/** One 32-bit comparison: (word at `off` from the network header) & mask == value. */
export interface U32Key {
  off: number;
  mask: number;
  value: number;
}

/**
 * struct tc_u32_sel (flags, offshift, nkeys, pad, offmask, off, offoff, hoff, hmask) and its
 * keys (mask, value, off, offmask); `hash` makes it a link's selector: which bits of which
 * word pick the bucket of the linked table.
 */
function u32Sel(keys: U32Key[], o: { terminal?: boolean; hash?: { mask: number; off: number } } = {}): Buffer {
  const b = Buffer.alloc(16 + 16 * keys.length);
  b.writeUInt8(o.terminal ? TC_U32_TERMINAL : 0, 0);
  b.writeUInt8(keys.length, 2);
  if (o.hash) {
    b.writeInt16LE(o.hash.off, 10);
    b.writeUInt32BE(o.hash.mask >>> 0, 12);
  }
  keys.forEach((k, i) => {
    const at = 16 + 16 * i;
    b.writeUInt32BE(k.mask >>> 0, at);
    b.writeUInt32BE((k.value & k.mask) >>> 0, at + 4);
    b.writeInt32LE(k.off, at + 8);
  });
  return b;
}

interface U32Where {
  ifindex: number;
  /** The qdisc (or clsact hook) the filter hangs on. */
  parent: number;
  prio: number;
}

/** A u32 hash table `table:` of `buckets` buckets (up to 256). */
export function newU32Table(w: U32Where, table: number, buckets: number): Request {
  return request(RTM_NEWTFILTER, NLM_F_CREATE | NLM_F_EXCL, tcmsg({ ifindex: w.ifindex, parent: w.parent, handle: u32Handle(table), info: filterInfo(w.prio) }), [
    { type: TCA_KIND, data: str('u32') },
    { type: TCA_OPTIONS, nested: [{ type: TCA_U32_DIVISOR, data: u32(buckets) }] },
  ]);
}

/**
 * A filter in the root table sending packets that match `keys` on to table `table`, in the
 * bucket picked by the bits `hashMask` of the word at `hashOff` (the low bits: u32 shifts
 * the mask down to bit 0).
 */
export function newU32Link(w: U32Where, table: number, keys: U32Key[], hashMask: number, hashOff: number): Request {
  return request(RTM_NEWTFILTER, NLM_F_CREATE | NLM_F_EXCL, tcmsg({ ifindex: w.ifindex, parent: w.parent, info: filterInfo(w.prio) }), [
    { type: TCA_KIND, data: str('u32') },
    { type: TCA_OPTIONS, nested: [{ type: TCA_U32_SEL, data: u32Sel(keys, { hash: { mask: hashMask, off: hashOff } }) }, { type: TCA_U32_LINK, data: u32(u32Handle(table)) }] },
  ]);
}

/** What a matching packet gets: a class of the qdisc, or a redirect to another device's egress. */
export type U32Action = { classid: number } | { redirectTo: number };

const TCA_ACT_KIND = 1;
const TCA_ACT_OPTIONS = 2;
const TCA_MIRRED_PARMS = 2;
const TCA_EGRESS_REDIR = 1;
const TC_ACT_STOLEN = 4;

/** mirred: redirect to the egress of `ifindex` (struct tc_mirred: tc_gen, eaction, ifindex). */
function mirredRedirect(ifindex: number): Attr {
  const parms = Buffer.alloc(28);
  parms.writeInt32LE(TC_ACT_STOLEN, 8); // tc_gen.action: the packet is the redirect's now
  parms.writeInt32LE(TCA_EGRESS_REDIR, 20);
  parms.writeUInt32LE(ifindex, 24);
  return { type: 1, nested: [{ type: TCA_ACT_KIND, data: str('mirred') }, { type: TCA_ACT_OPTIONS, nested: [{ type: TCA_MIRRED_PARMS, data: parms }] }] };
}

/**
 * A filter at `handle` (table, bucket, node) that gives packets matching every key `action`
 * (made, or replaced when the handle exists).
 */
export function setU32Match(w: U32Where, handle: number, keys: U32Key[], action: U32Action): Request {
  const opts: Attr[] = [];
  if (handle >>> 20 !== U32_ROOT_TABLE) opts.push({ type: TCA_U32_HASH, data: u32((handle & 0xfffff000) >>> 0) });
  opts.push({ type: TCA_U32_SEL, data: u32Sel(keys, { terminal: true }) });
  if ('classid' in action) opts.push({ type: TCA_U32_CLASSID, data: u32(action.classid) });
  else opts.push({ type: TCA_U32_ACT, nested: [mirredRedirect(action.redirectTo)] });
  return request(RTM_NEWTFILTER, NLM_F_CREATE, tcmsg({ ifindex: w.ifindex, parent: w.parent, handle, info: filterInfo(w.prio) }), [
    { type: TCA_KIND, data: str('u32') },
    { type: TCA_OPTIONS, nested: opts },
  ]);
}

export function delU32(w: U32Where, handle: number): Request {
  return request(RTM_DELTFILTER, 0, tcmsg({ ifindex: w.ifindex, parent: w.parent, handle, info: filterInfo(w.prio) }), [{ type: TCA_KIND, data: str('u32') }]);
}

// ---- reading -----------------------------------------------------------------------------

export interface TcObjectInfo {
  ifindex: number;
  handle: number;
  parent: number;
  kind: string;
  bytes: number;
  packets: number;
  drops: number;
  overlimits: number;
  backlog: number;
}

/** A qdisc or class message (RTM_NEWQDISC / RTM_NEWTCLASS as dumped): identity and counters. */
export function parseTcObject(msg: Message): TcObjectInfo {
  const b = msg.body;
  const a = parseAttrs(b.subarray(20));
  const out: TcObjectInfo = {
    ifindex: b.readInt32LE(4),
    handle: b.readUInt32LE(8),
    parent: b.readUInt32LE(12),
    kind: a.get(TCA_KIND)?.toString('utf8').replace(/\0.*$/s, '') ?? '',
    bytes: 0, packets: 0, drops: 0, overlimits: 0, backlog: 0,
  };
  const st = a.get(TCA_STATS2);
  if (st) {
    const s = parseAttrs(st);
    const basic = s.get(TCA_STATS_BASIC); // struct gnet_stats_basic: u64 bytes, u32 packets
    if (basic && basic.length >= 12) {
      out.bytes = Number(basic.readBigUInt64LE(0));
      out.packets = basic.readUInt32LE(8);
    }
    const q = s.get(TCA_STATS_QUEUE); // struct gnet_stats_queue: qlen, backlog, drops, requeues, overlimits
    if (q && q.length >= 20) {
      out.backlog = q.readUInt32LE(4);
      out.drops = q.readUInt32LE(8);
      out.overlimits = q.readUInt32LE(16);
    }
  }
  return out;
}

