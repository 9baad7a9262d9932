// Bandwidth shaping in the kernel (what core/shaping.ts decides): HTB classes on host-side
// devices, picked by u32 filters, with the instance's ifb holding what device-attached
// sandboxes send. Every change is a batch of tc requests over rtnetlink (no `tc` process).
//
// Two ways a sandbox is attached, whatever the link driver:
//   - by a device of its own on the host (a veth host end, a tap): `{ device: ifindex }`;
//     into the sandbox = that device's root HTB (one class); out of it = a redirect on the
//     device's receive side to the ifb, where its class waits;
//   - on the instance's shared macvlan parent: `{ macvlan: mac }`; into it = its class on the
//     gateway link (by destination), out of it = its class on the parent (by source MAC and
//     address: its MAC is secret, so another sandbox cannot spend its class).
import { ToastnetError } from '../errors.js';
import type { Cidr } from '../core/ipv4.js';
import { parseIPv4 } from '../core/ipv4.js';
import type { InstanceNames } from '../core/names.js';
import {
  OWN_CLASS_MINOR, SHAPER_BUCKETS, SHAPER_MAJOR, SHAPER_PRIO, SHAPER_TABLE, SandboxShaping, ShapeDirection, shapingSlot,
} from '../core/shaping.js';
import { getLinkOrUndefined } from './host-net.js';
import { RtnetlinkSocket, isNoSuchLink, NetlinkError } from './rtnetlink.js';
import { IFLA_IFNAME, IFLA_INFO_KIND, IFLA_LINKINFO, NLM_F_CREATE, NLM_F_EXCL, RTM_NEWLINK, Request, ifinfomsg, request, str } from './rtnetlink-codec.js';
import * as rq from './rtnl-requests.js';
import {
  CLSACT_INGRESS, TC_H_CLSACT, TC_H_ROOT, TcObjectInfo, U32Key, U32_ROOT_TABLE, delClass, delQdisc, delU32, dumpClasses, getRootQdisc, newClsact,
  newHtbRoot, newU32Link, newU32Table, parseTcObject, setBfifoLeaf, setHtbClass, setU32Match, tcHandle, u32Handle,
} from './tc-codec.js';

/** How a sandbox reaches the host: a device of its own, or the shared macvlan parent with its MAC. */
export type ShapedAttachment = { device: number } | { macvlan: string };

/** ifindexes of the instance's shared shaping devices. */
export interface ShaperDevices {
  /** The ifb holding what device-attached sandboxes send. */
  ifb: number;
  /** The gateway link: its egress carries what goes into macvlan sandboxes. */
  gateway: number;
  /** The macvlan parent: its egress carries what macvlan sandboxes send. */
  parent: number;
}

const classOf = (minor: number): number => tcHandle(SHAPER_MAJOR, minor);
const ROOT_CLASS = tcHandle(SHAPER_MAJOR, 0);
/** The one filter on a device's receive side (clsact ingress): node 1 of the root table. */
const OWN_REDIRECT = u32Handle(U32_ROOT_TABLE, 0, 1);

const ipWord = (ip: string): number => parseIPv4(ip) >>> 0;
const macWords = (mac: string): [number, number] => {
  const b = Buffer.from(mac.split(':').map((h) => parseInt(h, 16)));
  return [b.readUInt32BE(0), b.readUInt16BE(4) * 0x10000];
};
const srcIp = (ip: string): U32Key => ({ off: 12, mask: 0xffffffff, value: ipWord(ip) });
const dstIp = (ip: string): U32Key => ({ off: 16, mask: 0xffffffff, value: ipWord(ip) });
/** The Ethernet source, 14 - 6 = 8 bytes before the IP header (on a device's egress the frame is whole). */
const srcMac = (mac: string): U32Key[] => {
  const [hi, lo] = macWords(mac);
  return [{ off: -8, mask: 0xffffffff, value: hi }, { off: -4, mask: 0xffff0000, value: lo }];
};

/** The class, its FIFO and (for shared devices) the filter leading to it. */
function classRequests(ifindex: number, minor: number, d: ShapeDirection): Request[] {
  return [
    setHtbClass({ ifindex, classid: classOf(minor), parent: ROOT_CLASS, rate: d.rate, burst: d.burst, quantum: d.quantum }),
    setBfifoLeaf(ifindex, classOf(minor), d.queue),
  ];
}

const sharedWhere = (ifindex: number) => ({ ifindex, parent: ROOT_CLASS, prio: SHAPER_PRIO });
const slot = (s: SandboxShaping): number => u32Handle(SHAPER_TABLE, s.bucket, s.node);

/** A plan: requests in order, each with what it does (for the error). */
export interface ShapingPlan {
  reqs: Request[];
  what: string[];
}

/**
 * The requests taking a sandbox's shaping from `prev` to `next` (either undefined: none).
 * Ordered so traffic is never dropped for want of a class: classes before the filters that
 * lead to them, filters removed before their classes; a rate that changes changes its class
 * in place, with no moment without a limit. `keepOwnDevice`: leave the sandbox's own device
 * alone (it is going away with its namespace, taking its qdiscs).
 */
export function shapingPlan(dev: ShaperDevices, at: ShapedAttachment, prev: SandboxShaping | undefined, next: SandboxShaping | undefined, o: { keepOwnDevice?: boolean } = {}): ShapingPlan {
  const plan: ShapingPlan = { reqs: [], what: [] };
  const add = (r: Request, what: string) => {
    plan.reqs.push(r);
    plan.what.push(what);
  };
  const ip = (next ?? prev)?.ip;
  if (ip === undefined) return plan;

  if ('device' in at) {
    const own = at.device;
    // Into the sandbox: the device's root HTB, every packet in its one (default) class.
    if (next?.ingress && !o.keepOwnDevice) {
      if (!prev?.ingress) add(newHtbRoot(own, SHAPER_MAJOR, { defaultMinor: OWN_CLASS_MINOR }), `shaper on device ${own}`);
      for (const r of classRequests(own, OWN_CLASS_MINOR, next.ingress)) add(r, `ingress class on device ${own}`);
    } else if (prev?.ingress && !o.keepOwnDevice) {
      add(delQdisc(own, TC_H_ROOT), `remove the shaper on device ${own}`);
    }
    // Out of it: its class on the ifb, then the redirect to it.
    if (next?.egress) {
      const w = sharedWhere(dev.ifb);
      for (const r of classRequests(dev.ifb, next.minor, next.egress)) add(r, `egress class of ${ip}`);
      add(setU32Match(w, slot(next), [srcIp(ip)], { classid: classOf(next.minor) }), `egress filter of ${ip}`);
      if (!prev?.egress && !o.keepOwnDevice) {
        add(newClsact(own), `receive hook on device ${own}`);
        // Only packets with its own source address: anything else is not its to spend, and
        // the filter's source check drops it anyway.
        add(setU32Match({ ifindex: own, parent: CLSACT_INGRESS, prio: SHAPER_PRIO }, OWN_REDIRECT, [srcIp(ip)], { redirectTo: dev.ifb }), `redirect from device ${own}`);
      }
    } else if (prev?.egress) {
      if (!o.keepOwnDevice) add(delQdisc(own, TC_H_CLSACT), `remove the receive hook on device ${own}`);
      add(delU32(sharedWhere(dev.ifb), slot(prev)), `remove the egress filter of ${ip}`);
      add(delClass(dev.ifb, classOf(prev.minor)), `remove the egress class of ${ip}`);
    }
    return plan;
  }

  // macvlan: a class each way on the shared devices, a filter to each.
  const sides = [
    { dir: 'ingress' as const, ifindex: dev.gateway, keys: [dstIp(ip)] },
    { dir: 'egress' as const, ifindex: dev.parent, keys: [srcIp(ip), ...srcMac(at.macvlan)] },
  ];
  for (const side of sides) {
    const n = next?.[side.dir];
    const p = prev?.[side.dir];
    if (n) {
      for (const r of classRequests(side.ifindex, next!.minor, n)) add(r, `${side.dir} class of ${ip}`);
      add(setU32Match(sharedWhere(side.ifindex), slot(next!), side.keys, { classid: classOf(next!.minor) }), `${side.dir} filter of ${ip}`);
    } else if (p) {
      add(delU32(sharedWhere(side.ifindex), slot(prev!)), `remove the ${side.dir} filter of ${ip}`);
      add(delClass(side.ifindex, classOf(prev!.minor)), `remove the ${side.dir} class of ${ip}`);
    }
  }
  return plan;
}

/**
 * Runs a plan; with `tolerant`, what is already gone is fine (removal, gc), and with
 * `existing` what is there already (a rebuild over what survived).
 */
export function applyShaping(sock: RtnetlinkSocket, plan: ShapingPlan, o: { tolerant?: boolean; existing?: boolean } = {}): void {
  if (!o.tolerant && !o.existing) {
    sock.exec(plan.reqs, plan.what);
    return;
  }
  // One at a time: the kernel processes a batch in order whatever fails, but reports only
  // the first failure, and a missing filter must not hide a class that could not go.
  for (let i = 0; i < plan.reqs.length; i++) {
    try {
      sock.exec([plan.reqs[i]], [plan.what[i]]);
    } catch (err) {
      // ENOENT, ENODEV, EINVAL (no such handle); EEXIST
      const fine = [...(o.tolerant ? [2, 19, 22] : []), ...(o.existing ? [17] : [])];
      if (!(err instanceof NetlinkError) || !fine.includes(err.errno)) throw err;
    }
  }
}

/**
 * A shared device's root: HTB without a default class (what no filter picks passes
 * unshaped: other sandboxes' traffic), a u32 table of SHAPER_BUCKETS buckets, and the
 * filter sending the subnet's packets to the bucket of the address's low byte.
 */
function sharedRootRequests(ifindex: number, subnet: Cidr, keyOff: number): Request[] {
  const w = sharedWhere(ifindex);
  const mask = subnet.prefix === 0 ? 0 : (0xffffffff << (32 - subnet.prefix)) >>> 0;
  return [
    newHtbRoot(ifindex, SHAPER_MAJOR),
    newU32Table(w, SHAPER_TABLE, SHAPER_BUCKETS),
    newU32Link(w, SHAPER_TABLE, [{ off: keyOff, mask, value: subnet.network >>> 0 }], 0xff, keyOff),
  ];
}

/** Whether `ifindex` has toastnet's shaper root (HTB 1:). */
function hasShaperRoot(sock: RtnetlinkSocket, ifindex: number): boolean {
  // The kernel answers a qdisc GET only as an echo of its notification.
  try {
    return sock.execEcho(getRootQdisc(ifindex), `root qdisc of link ${ifindex}`).map(parseTcObject).some((q) => q.kind === 'htb' && q.handle === ROOT_CLASS);
  } catch (err) {
    if (err instanceof NetlinkError) return false; // none (a no-queue device: EINVAL) or no such link
    throw err;
  }
}

/**
 * The shared shaping devices, made when missing: the ifb (created and up) and the HTB roots
 * with their u32 tables on the ifb, the gateway link and the parent. Idempotent. The roots
 * are made only here, on the first sandbox with a bandwidth limit: until then the gateway
 * veth keeps its lockless no-queue path.
 */
export function ensureShaperDevices(sock: RtnetlinkSocket, n: InstanceNames, subnet: Cidr): ShaperDevices {
  let ifb = getLinkOrUndefined(sock, n.shaperLink);
  if (!ifb) {
    sock.exec([request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, ifinfomsg(), [
      { type: IFLA_IFNAME, data: str(n.shaperLink) },
      { type: IFLA_LINKINFO, nested: [{ type: IFLA_INFO_KIND, data: str('ifb') }] },
    ])], [`create ${n.shaperLink} (ifb)`]);
    ifb = getLinkOrUndefined(sock, n.shaperLink)!;
  }
  if (!ifb.up) sock.exec([rq.setUp(ifb.index, { noIpv6: true })], [`up ${n.shaperLink}`]);
  const gateway = getLinkOrUndefined(sock, n.gatewayLink);
  const parent = getLinkOrUndefined(sock, n.macvlanParent);
  if (!gateway || !parent) throw new ToastnetError('not_ready', 'host network is not set up: run `toastnet up`');
  for (const [index, keyOff] of [[ifb.index, 12], [gateway.index, 16], [parent.index, 12]] as const) {
    if (!hasShaperRoot(sock, index)) sock.exec(sharedRootRequests(index, subnet, keyOff), sharedRootRequests(index, subnet, keyOff).map(() => `shaper root on link ${index}`));
  }
  return { ifb: ifb.index, gateway: gateway.index, parent: parent.index };
}

/**
 * Removes the classes (and their filters) on the shared devices whose minor is not in
 * `keep`: what a crash between a sandbox's removal and its classes' left. Returns how many.
 */
export function removeStrayClasses(sock: RtnetlinkSocket, dev: ShaperDevices, subnet: Cidr, keep: ReadonlySet<number>): number {
  let removed = 0;
  for (const ifindex of [dev.ifb, dev.gateway, dev.parent]) {
    for (const minor of readClasses(sock, ifindex).keys()) {
      if (keep.has(minor)) continue;
      const { bucket, node } = shapingSlot((subnet.network + minor) >>> 0);
      applyShaping(sock, {
        reqs: [delU32(sharedWhere(ifindex), u32Handle(SHAPER_TABLE, bucket, node)), delClass(ifindex, classOf(minor))],
        what: [`remove a stray filter on link ${ifindex}`, `remove a stray class on link ${ifindex}`],
      }, { tolerant: true });
      removed++;
    }
  }
  return removed;
}

/** The shared shaping devices if the instance has them (no ifb yet: none), without making anything. */
export function findShaperDevices(sock: RtnetlinkSocket, n: InstanceNames): ShaperDevices | undefined {
  const [ifb, gateway, parent] = [n.shaperLink, n.gatewayLink, n.macvlanParent].map((name) => getLinkOrUndefined(sock, name));
  return ifb && gateway && parent ? { ifb: ifb.index, gateway: gateway.index, parent: parent.index } : undefined;
}

/** Removes the shared roots (and with them every sandbox's class there) and the ifb; idempotent. */
export function removeShaperDevices(sock: RtnetlinkSocket, n: InstanceNames): void {
  for (const name of [n.gatewayLink, n.macvlanParent]) {
    const l = getLinkOrUndefined(sock, name);
    if (l && hasShaperRoot(sock, l.index)) sock.exec([delQdisc(l.index, TC_H_ROOT)], [`remove the shaper on ${name}`]);
  }
  try {
    if (getLinkOrUndefined(sock, n.shaperLink)) sock.exec([rq.delLink(n.shaperLink)], [`delete ${n.shaperLink}`]);
  } catch (err) {
    if (!isNoSuchLink(err)) throw err;
  }
}

/** A sandbox's classes as the kernel counts them now: bytes sent on, packets dropped for want of room, bytes waiting. */
export interface ShapedCounts {
  bytes: number;
  packets: number;
  dropped: number;
  backlog: number;
}

/** Every class of toastnet's shapers on `ifindex`, by minor. */
export function readClasses(sock: RtnetlinkSocket, ifindex: number): Map<number, ShapedCounts> {
  const out = new Map<number, ShapedCounts>();
  let all: TcObjectInfo[];
  try {
    all = sock.dump(dumpClasses(ifindex)).map(parseTcObject);
  } catch (err) {
    if (isNoSuchLink(err)) return out;
    throw err;
  }
  for (const c of all) {
    if (c.ifindex !== ifindex || c.kind !== 'htb' || c.handle >>> 16 !== SHAPER_MAJOR) continue;
    out.set(c.handle & 0xffff, { bytes: c.bytes, packets: c.packets, dropped: c.drops, backlog: c.backlog });
  }
  return out;
}
