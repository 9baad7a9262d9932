// Connection tracking entries through ctnetlink (NETLINK_NETFILTER): list the flows a
// sandbox opened and delete those its new policy forbids, so tightening a policy cuts
// running connections instead of only new ones; and delete every flow of a removed
// sandbox's address before the address can be leased again, so that its next owner never
// inherits a flow (the entries outlive the namespace that made them).
//
// A dump walks every bucket of the host's conntrack table whatever it holds (~11 ms for
// 262,144 buckets on these VMs): callers batch.
import { NetlinkSocket } from './rtnetlink.js';
import { Attr, Message, Request, be16, be32, parseAttrs, request } from './rtnetlink-codec.js';

import {
  AF_INET, CTA_IP_V4_DST, CTA_IP_V4_SRC, CTA_MARK, CTA_MARK_MASK, CTA_PROTO_DST_PORT, CTA_PROTO_NUM, CTA_PROTO_SRC_PORT, CTA_TUPLE_IP,
  CTA_TUPLE_ORIG, CTA_TUPLE_PROTO, CTA_TUPLE_REPLY, IPCTNL_MSG_CT_DELETE, IPCTNL_MSG_CT_GET, IPCTNL_MSG_CT_NEW,
  NFNL_SUBSYS_CTNETLINK,
} from './ctnetlink-codes.js';
import { NETLINK_NETFILTER } from './libc.js';

const NLA_F_NESTED = 0x8000;

const nfgenmsg = (family: number) => Buffer.from([family, 0, 0, 0]);
const ip = (b: Buffer | undefined) => (b && b.length === 4 ? [...b].join('.') : '');

export interface ConntrackFlow {
  src: string;
  dst: string;
  /** The reply direction's addresses (after NAT: the masquerading address, a DNAT target). */
  replySrc: string;
  replyDst: string;
  proto: number;
  dport: number;
  /** The original-direction tuple as the kernel encoded it: echoed back to delete exactly this entry. */
  tuple: Buffer;
}

const tupleIps = (tuple: Buffer | undefined) => parseAttrs(parseAttrs(tuple ?? Buffer.alloc(0)).get(CTA_TUPLE_IP) ?? Buffer.alloc(0));

export function parseFlow(m: Message): ConntrackFlow | undefined {
  const attrs = parseAttrs(m.body.subarray(4));
  const orig = attrs.get(CTA_TUPLE_ORIG);
  if (!orig) return undefined;
  const t = parseAttrs(orig);
  const ips = tupleIps(orig);
  const reply = tupleIps(attrs.get(CTA_TUPLE_REPLY));
  const proto = parseAttrs(t.get(CTA_TUPLE_PROTO) ?? Buffer.alloc(0));
  return {
    src: ip(ips.get(CTA_IP_V4_SRC)),
    dst: ip(ips.get(CTA_IP_V4_DST)),
    replySrc: ip(reply.get(CTA_IP_V4_SRC)),
    replyDst: ip(reply.get(CTA_IP_V4_DST)),
    proto: proto.get(CTA_PROTO_NUM)?.readUInt8(0) ?? 0,
    dport: proto.get(CTA_PROTO_DST_PORT)?.readUInt16BE(0) ?? 0,
    tuple: Buffer.from(orig),
  };
}

/** A connection by its original tuple, as the name gate's reader knows it (addresses as 4 bytes). */
export interface FlowTuple {
  src: Buffer; // 4 bytes
  dst: Buffer;
  sport: number;
  dport: number;
  proto: number;
}

/** Sets the bits `mask` of the connection's mark to `value` (others kept: the kernel applies the mask). */
export function ctMarkRequest(t: FlowTuple, value: number, mask: number): Request {
  return request((NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW, 0, nfgenmsg(AF_INET), [
    { type: CTA_TUPLE_ORIG, nested: [
      { type: CTA_TUPLE_IP, nested: [{ type: CTA_IP_V4_SRC, data: t.src }, { type: CTA_IP_V4_DST, data: t.dst }] },
      { type: CTA_TUPLE_PROTO, nested: [
        { type: CTA_PROTO_NUM, data: Buffer.from([t.proto]) },
        { type: CTA_PROTO_SRC_PORT, data: be16(t.sport) },
        { type: CTA_PROTO_DST_PORT, data: be16(t.dport) },
      ] },
    ] },
    { type: CTA_MARK, data: be32(value & mask) },
    { type: CTA_MARK_MASK, data: be32(mask) },
  ]);
}

export class Conntrack {
  private readonly sock = new NetlinkSocket(NETLINK_NETFILTER);

  close(): void {
    this.sock.close();
  }

  /** Every IPv4 flow the host tracks (one dump). */
  flows(): ConntrackFlow[] {
    const msgs = this.sock.dump(request((NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET, 0, nfgenmsg(AF_INET)));
    return msgs.map(parseFlow).filter((f): f is ConntrackFlow => f !== undefined);
  }

  /** Deletes every flow with an address (either direction, before or after NAT) for which `gone` holds; returns how many. */
  deleteFlowsOf(gone: (address: string) => boolean): number {
    return this.delete(this.flows().filter((f) => gone(f.src) || gone(f.dst) || gone(f.replySrc) || gone(f.replyDst)));
  }

  /** Deletes the given flows; ones already gone are fine. Returns how many were deleted. */
  delete(flows: ConntrackFlow[]): number {
    let n = 0;
    for (const f of flows) {
      const tuple: Attr = { type: CTA_TUPLE_ORIG | NLA_F_NESTED, data: f.tuple };
      try {
        this.sock.exec([request((NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE, 0, nfgenmsg(AF_INET), [tuple])], ['delete conntrack entry']);
        n++;
      } catch {
        // expired meanwhile
      }
    }
    return n;
  }
}
