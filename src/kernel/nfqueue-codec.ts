// NFQUEUE (nfnetlink_queue) as the name checks use it, pure: the config requests that bind a
// netlink socket to a queue, the parsing of a queued packet, the verdict; the one nftables
// rule that sends packets to the queue; and the question whether the kernel has that
// rule's target. Layouts: include/uapi/linux/netfilter/nfnetlink_queue.h,
// nf_tables.h, xt_NFQUEUE.h. (The judgement's conntrack mark is written by conntrack.ts's ctMarkRequest.)
//
// Why the rule is built here rather than by libnftables: nftables' own `queue` expression
// (nft_queue) is missing from kernels built without CONFIG_NFT_QUEUE (these machines'),
// while the xtables NFQUEUE target through nft_compat is in both those and distribution
// kernels. libnftables' JSON can list an xt target but cannot create one, so the rule is one
// nfnetlink message of our own, appended to a chain libnftables made.
import { Attr, Message, parseAttrs, Request, be32, request } from './rtnetlink-codec.js';
import { NFPROTO } from './nft-set-codec.js';

const NFNL_SUBSYS_QUEUE = 3;
const NFQNL_MSG_PACKET = 0;
const NFQNL_MSG_VERDICT = 1;
const NFQNL_MSG_CONFIG = 2;
const NFQA_PACKET_HDR = 1;
const NFQA_VERDICT_HDR = 2;
const NFQA_MARK = 3;
const NFQA_IFINDEX_INDEV = 5;
const NFQA_PAYLOAD = 10;
const NFQA_CFG_CMD = 1;
const NFQA_CFG_PARAMS = 2;
const NFQA_CFG_QUEUE_MAXLEN = 3;
const NFQA_CFG_MASK = 4;
const NFQA_CFG_FLAGS = 5;
const NFQNL_CFG_CMD_BIND = 1;
const NFQNL_COPY_PACKET = 2;
/**
 * Past the queue's length (or when the reader's socket is full), accept instead of drop: the
 * packet goes on still marked as queued, and the chain after the gate drops and counts it
 * (core/name-check.ts SKB_MARK_NAME_QUEUED), where a plain drop would be counted nowhere.
 */
const NFQA_CFG_F_FAIL_OPEN = 1;
/** Queue GSO packets whole (a sandbox's TSO segments are not split for us; we read the bytes). */
const NFQA_CFG_F_GSO = 4;
/** xt_NFQUEUE's flag: without a reader bound, go on (to the chain that counts it) instead of a silent drop. */
export const NFQ_FLAG_BYPASS = 1;

export const NFQUEUE_PACKET_TYPE = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET;

/** Netfilter verdicts (include/uapi/linux/netfilter.h). */
export const NF_DROP = 0;
export const NF_ACCEPT = 1;
/** The packet goes through the hook's chain again (after its connection's mark changed). */
export const NF_REPEAT = 4;

function nfgenmsg(family: number, resId: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt8(family, 0);
  b.writeUInt16BE(resId, 2);
  return b;
}

/**
 * Binds to queue `num`: whole packets (up to `copyRange` bytes), GSO packets unsplit, at most
 * `maxLen` waiting (past it the packet goes on still marked as queued, for the chain after
 * the gate to drop and count: fail closed, as with no listener at all).
 */
export function queueBindRequests(num: number, copyRange = 0xffff, maxLen = 4096): Request[] {
  const type = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_CONFIG;
  const cmd = Buffer.from([NFQNL_CFG_CMD_BIND, 0, 0, 0]);
  const params = Buffer.alloc(5);
  params.writeUInt32BE(copyRange, 0);
  params.writeUInt8(NFQNL_COPY_PACKET, 4);
  return [
    request(type, 0, nfgenmsg(0, num), [{ type: NFQA_CFG_CMD, data: cmd }]),
    request(type, 0, nfgenmsg(0, num), [
      { type: NFQA_CFG_PARAMS, data: params },
      { type: NFQA_CFG_QUEUE_MAXLEN, data: be32(maxLen) },
      { type: NFQA_CFG_FLAGS, data: be32(NFQA_CFG_F_GSO | NFQA_CFG_F_FAIL_OPEN) },
      { type: NFQA_CFG_MASK, data: be32(NFQA_CFG_F_GSO | NFQA_CFG_F_FAIL_OPEN) },
    ]),
  ];
}

export interface QueuedPacket {
  id: number;
  /** The IP packet. */
  payload: Buffer;
  indev?: number;
  /** The packet's mark (skb->mark), 0 when it has none. */
  mark: number;
}

export function parseQueued(m: Message): QueuedPacket | undefined {
  if (m.type !== NFQUEUE_PACKET_TYPE) return undefined;
  const a = parseAttrs(m.body.subarray(4));
  const hdr = a.get(NFQA_PACKET_HDR);
  const payload = a.get(NFQA_PAYLOAD);
  if (!hdr || hdr.length < 4 || !payload) return undefined;
  const indev = a.get(NFQA_IFINDEX_INDEV);
  const mark = a.get(NFQA_MARK);
  return { id: hdr.readUInt32BE(0), payload, mark: mark && mark.length >= 4 ? mark.readUInt32BE(0) : 0, ...(indev && indev.length >= 4 ? { indev: indev.readUInt32BE(0) } : {}) };
}

/**
 * The verdict on packet `id` of queue `num` (no ack asked: one message per packet, fire and
 * forget), with the packet's new mark when given.
 */
export function verdictRequest(num: number, id: number, verdict: number, mark?: number): Request {
  const hdr = Buffer.alloc(8);
  hdr.writeUInt32BE(verdict, 0);
  hdr.writeUInt32BE(id >>> 0, 4);
  const attrs: Attr[] = [{ type: NFQA_VERDICT_HDR, data: hdr }];
  if (mark !== undefined) attrs.push({ type: NFQA_MARK, data: be32(mark) });
  return request((NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_VERDICT, 0, nfgenmsg(0, num), attrs);
}

// --- the rule: `queue num N` as nft_compat's xt NFQUEUE target, revision 3 ---

const NFNL_SUBSYS_NFTABLES = 10;
const NFNL_MSG_BATCH_BEGIN = 0x10;
const NFNL_MSG_BATCH_END = 0x11;
const NFT_MSG_NEWRULE = 6;
const NLM_F_CREATE = 0x400;
const NLM_F_APPEND = 0x800;
const NFTA_RULE_TABLE = 1;
const NFTA_RULE_CHAIN = 2;
const NFTA_RULE_EXPRESSIONS = 4;
const NFTA_LIST_ELEM = 1;
const NFTA_EXPR_NAME = 1;
const NFTA_EXPR_DATA = 2;
const NFTA_TARGET_NAME = 1;
const NFTA_TARGET_REV = 2;
const NFTA_TARGET_INFO = 3;

const cstr = (s: string) => Buffer.from(`${s}\0`);

/**
 * One nfnetlink batch appending `queue num <num>` to `chain` of table `family table`, with
 * xt_NFQUEUE's `flags` (NFQ_FLAG_BYPASS: without a reader the packet goes on, for a later
 * rule to drop and count, rather than the kernel's uncounted drop).
 */
export function queueRuleBatch(family: string, table: string, chain: string, num: number, flags = 0): { begin: Request; rule: Request; end: Request } {
  // struct xt_NFQ_info_v3 { __u16 queuenum; __u16 queues_total; __u16 flags; }, XT_ALIGNed to 8, host order.
  const info = Buffer.alloc(8);
  info.writeUInt16LE(num, 0);
  info.writeUInt16LE(1, 2);
  info.writeUInt16LE(flags, 4);
  const rev = Buffer.alloc(4);
  rev.writeUInt32BE(3);
  const target: Attr = {
    type: NFTA_LIST_ELEM,
    nested: [
      { type: NFTA_EXPR_NAME, data: cstr('target') },
      { type: NFTA_EXPR_DATA, nested: [
        { type: NFTA_TARGET_NAME, data: cstr('NFQUEUE') },
        { type: NFTA_TARGET_REV, data: rev },
        { type: NFTA_TARGET_INFO, data: info },
      ] },
    ],
  };
  const marker = (type: number): Request => ({ type, flags: 1, body: nfgenmsg(0, NFNL_SUBSYS_NFTABLES) });
  return {
    begin: marker(NFNL_MSG_BATCH_BEGIN),
    rule: request((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, nfgenmsg(NFPROTO[family], 0), [
      { type: NFTA_RULE_TABLE, data: cstr(table) },
      { type: NFTA_RULE_CHAIN, data: cstr(chain) },
      { type: NFTA_RULE_EXPRESSIONS, nested: [target] },
    ]),
    end: marker(NFNL_MSG_BATCH_END),
  };
}

// --- whether the kernel has the target at all (nft_compat's revision query) ---

const NFNL_SUBSYS_NFT_COMPAT = 11;
const NFNL_MSG_COMPAT_GET = 0;
const NFTA_COMPAT_NAME = 1;
const NFTA_COMPAT_REV = 2;
const NFTA_COMPAT_TYPE = 3;
const NFT_COMPAT_TARGET = 1;

/**
 * Asks nft_compat for xtables target `name` at revision `rev` (the kernel loads its module
 * if it can): the answer is a message if the kernel has it, ENOENT if not. Changes nothing,
 * so `up` can refuse before it makes anything.
 */
export function compatTargetRequest(name: string, rev: number, family = 'ip'): Request {
  return request((NFNL_SUBSYS_NFT_COMPAT << 8) | NFNL_MSG_COMPAT_GET, 0, nfgenmsg(NFPROTO[family], 0), [
    { type: NFTA_COMPAT_NAME, data: cstr(name) },
    { type: NFTA_COMPAT_REV, data: be32(rev) },
    { type: NFTA_COMPAT_TYPE, data: be32(NFT_COMPAT_TARGET) },
  ]);
}

/** The queue rule's target and revision (queueRuleBatch). */
export const QUEUE_TARGET = { name: 'NFQUEUE', rev: 3 };
