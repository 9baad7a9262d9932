// The query the resolver sends upstream for a sandbox: rebuilt from scratch, never the
// sandbox's own bytes. A stub resolver needs one question, the RD and CD bits, and EDNS's
// UDP payload size and DO bit; everything else a sandbox can write into a query (answer,
// authority and additional records, EDNS options, other opcodes, spare header bits,
// trailing bytes) would otherwise ride an allowed query to the upstream, a channel out of
// any allow-list. Built from buffers, without dns-packet: it runs for every query.
import { skipName } from './cache.js';

export const RCODE_FORMERR = 1;
export const RCODE_REFUSED = 5;

/** EDNS payload size sent upstream at most (the DNS flag day 2020 value: no IP fragmentation). */
export const MAX_UDP_PAYLOAD = 1232;
/** Below this, RFC 6891 says to read 512. */
const MIN_UDP_PAYLOAD = 512;
const TYPE_OPT = 41;
const HEADER = 12;
const OPT_LENGTH = 11;

/**
 * Whether the header's counts can fit in the message: a question takes at least 5 bytes (root
 * name, type, class) and a record 11. A message claiming more is malformed, and must be
 * refused before dns-packet sees it: its decoder reads past the end without failing, so one
 * 600-byte message claiming 65,535 records costs it milliseconds (seen: 3.5 ms each, enough
 * for one sandbox's junk to stall the resolver for everyone).
 */
export function countsFit(msg: Buffer): boolean {
  if (msg.length < HEADER) return false;
  const minimum = HEADER + msg.readUInt16BE(4) * 5 + (msg.readUInt16BE(6) + msg.readUInt16BE(8) + msg.readUInt16BE(10)) * OPT_LENGTH;
  return minimum <= msg.length;
}

export type UpstreamQuery = { wire: Buffer } | { rcode: number; reason: string };

/**
 * The question name's length and label lengths in wire bytes (offset 12), and the offset
 * just past it; undefined if malformed.
 */
export function wireName(query: Buffer): { length: number; labels: number[]; end: number } | undefined {
  const labels: number[] = [];
  let off = HEADER;
  for (;;) {
    if (off >= query.length) return undefined;
    const len = query[off];
    if (len === 0) break;
    if (len > 63) return undefined; // compression pointers and reserved types have no place in a question
    labels.push(len);
    off += 1 + len;
  }
  // Presentation length: labels plus the dots between them.
  return { length: labels.reduce((a, b) => a + b, 0) + Math.max(0, labels.length - 1), labels, end: off + 1 };
}

/**
 * The upstream form of `query` (its ID kept: the forwarder writes its own on sending), or
 * the rcode to refuse it with. Refused: any opcode but QUERY, anything but one question,
 * records in the answer or authority section (a query has none), a malformed additional
 * section or more than one OPT record. `name`: wireName(query), when the caller has it.
 */
export function upstreamQuery(query: Buffer, name = wireName(query)): UpstreamQuery {
  if (query.length < HEADER || (query[2] & 0x80) !== 0) return { rcode: RCODE_FORMERR, reason: 'not a query' };
  const opcode = (query[2] >> 3) & 0x0f;
  if (opcode !== 0) return { rcode: RCODE_REFUSED, reason: `opcode ${opcode}: only QUERY is forwarded` };
  if (query.readUInt16BE(4) !== 1) return { rcode: RCODE_FORMERR, reason: 'not exactly one question' };
  if (query.readUInt16BE(6) !== 0 || query.readUInt16BE(8) !== 0) return { rcode: RCODE_FORMERR, reason: 'records in the answer or authority section' };
  if (!name || name.end + 4 > query.length) return { rcode: RCODE_FORMERR, reason: 'malformed question' };
  const questionEnd = name.end + 4;

  // Of the additional records only an OPT's size and DO bit go on; the rest is dropped.
  let payload = -1;
  let dnssecOk = false;
  let off = questionEnd;
  for (let i = query.readUInt16BE(10); i > 0; i--) {
    const end = skipName(query, off);
    if (end < 0 || end + 10 > query.length) return { rcode: RCODE_FORMERR, reason: 'malformed additional section' };
    const rdEnd = end + 10 + query.readUInt16BE(end + 8);
    if (rdEnd > query.length) return { rcode: RCODE_FORMERR, reason: 'malformed additional section' };
    if (query.readUInt16BE(end) === TYPE_OPT) {
      if (payload >= 0 || end !== off + 1) return { rcode: RCODE_FORMERR, reason: 'more than one OPT record, or one not at the root' };
      payload = Math.min(MAX_UDP_PAYLOAD, Math.max(MIN_UDP_PAYLOAD, query.readUInt16BE(end + 2)));
      dnssecOk = (query[end + 6] & 0x80) !== 0;
    }
    off = rdEnd;
  }

  // Byte by byte: Buffer's writeUInt* calls cost more than the rest of the rebuild.
  const wire = Buffer.allocUnsafe(questionEnd + (payload >= 0 ? OPT_LENGTH : 0));
  wire[0] = query[0];
  wire[1] = query[1];
  wire[2] = query[2] & 0x01; // RD; QR, opcode, AA and TC are zero
  wire[3] = query[3] & 0x10; // CD; RA, Z, AD and rcode are zero
  wire[4] = 0;
  wire[5] = 1; // one question
  wire[6] = wire[7] = wire[8] = wire[9] = 0; // no answer or authority records
  wire[10] = 0;
  wire[11] = payload >= 0 ? 1 : 0;
  query.copy(wire, HEADER, HEADER, questionEnd);
  if (payload >= 0) {
    const o = questionEnd;
    wire[o] = 0; // root name
    wire[o + 1] = 0;
    wire[o + 2] = TYPE_OPT;
    wire[o + 3] = payload >> 8;
    wire[o + 4] = payload & 0xff;
    wire[o + 5] = wire[o + 6] = 0; // extended rcode, version 0
    wire[o + 7] = dnssecOk ? 0x80 : 0; // DO
    wire[o + 8] = wire[o + 9] = wire[o + 10] = 0; // flags' low byte; no options
  }
  return { wire };
}
