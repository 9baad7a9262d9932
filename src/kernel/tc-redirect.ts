// Two links joined by tc: every frame arriving on one leaves the other, unchanged (a clsact
// qdisc on each, a u32 filter matching everything with a mirred egress redirect). What joins
// a TAP to its sandbox's veth end (links/tap.ts), as Kata Containers joins its VMs'. Pure
// request builders (include/uapi/linux/{rtnetlink,pkt_sched,pkt_cls,tc_act/tc_mirred}.h),
// unit-tested by their bytes. matchall would be the natural classifier, but kernels built
// without CONFIG_NET_CLS_MATCHALL exist (these machines'); u32 is everywhere.
import { Attr, NLM_F_CREATE, NLM_F_EXCL, Request, request, str, u32 } from './rtnetlink-codec.js';

const RTM_NEWQDISC = 36;
const RTM_NEWTFILTER = 44;
const TC_H_CLSACT = 0xfffffff1;
const TC_H_INGRESS_PARENT = 0xfffffff2; // TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_INGRESS)
const CLSACT_HANDLE = 0xffff0000;
const TCA_KIND = 1;
const TCA_OPTIONS = 2;
const TCA_U32_SEL = 5;
const TCA_U32_ACT = 7;
const TC_U32_TERMINAL = 1;
const TCA_ACT_KIND = 1;
const TCA_ACT_OPTIONS = 2;
const TCA_MIRRED_PARMS = 2;
const TC_ACT_STOLEN = 4;
const TCA_EGRESS_REDIR = 1;
const ETH_P_ALL = 0x0003;

/** struct tcmsg: family, pad, ifindex, handle, parent, info. */
function tcmsg(ifindex: number, handle: number, parent: number, info = 0): Buffer {
  const b = Buffer.alloc(20);
  b.writeInt32LE(ifindex, 4);
  b.writeUInt32LE(handle >>> 0, 8);
  b.writeUInt32LE(parent >>> 0, 12);
  b.writeUInt32LE(info >>> 0, 16);
  return b;
}

/** The clsact qdisc on a link: the hook ingress filters hang from. */
export function addClsact(ifindex: number): Request {
  return request(RTM_NEWQDISC, NLM_F_CREATE | NLM_F_EXCL, tcmsg(ifindex, CLSACT_HANDLE, TC_H_CLSACT), [{ type: TCA_KIND, data: str('clsact') }]);
}

/** A u32 selector with one key matching any packet (mask 0), terminal. struct tc_u32_sel + tc_u32_key. */
function matchAnything(): Buffer {
  const b = Buffer.alloc(16 + 16);
  b.writeUInt8(TC_U32_TERMINAL, 0);
  b.writeUInt8(1, 2); // nkeys
  return b;
}

/** struct tc_mirred: tc_gen (index, capab, action, refcnt, bindcnt), eaction, ifindex. */
function mirredParms(toIndex: number): Buffer {
  const b = Buffer.alloc(28);
  b.writeInt32LE(TC_ACT_STOLEN, 8);
  b.writeInt32LE(TCA_EGRESS_REDIR, 20);
  b.writeUInt32LE(toIndex, 24);
  return b;
}

/** Every frame arriving on `fromIndex` is sent out of `toIndex` (needs addClsact on `fromIndex`). */
export function redirectIngress(fromIndex: number, toIndex: number): Request {
  const action: Attr = {
    type: 1, // the first action of the list
    nested: [{ type: TCA_ACT_KIND, data: str('mirred') }, { type: TCA_ACT_OPTIONS, nested: [{ type: TCA_MIRRED_PARMS, data: mirredParms(toIndex) }] }],
  };
  // info: priority 1 in the upper half, the protocol (all, network order) in the lower.
  const info = (1 << 16) | (((ETH_P_ALL & 0xff) << 8) | (ETH_P_ALL >> 8));
  return request(RTM_NEWTFILTER, NLM_F_CREATE | NLM_F_EXCL, tcmsg(fromIndex, 0, TC_H_INGRESS_PARENT, info), [
    { type: TCA_KIND, data: str('u32') },
    { type: TCA_OPTIONS, nested: [{ type: TCA_U32_SEL, data: matchAnything() }, { type: TCA_U32_ACT, nested: [action] }] },
  ]);
}
