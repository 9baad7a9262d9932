// The resolver's answer cache, shared by all sandboxes (policy is still applied per
// sandbox, by the gate, on every answer it serves). Works on wire bytes: a hit copies the
// stored answer, writes the asker's message ID and question (its letter case), and counts
// each record's TTL down by the answer's age, without decoding or encoding a packet.
import dnsPacket from 'dns-packet';

export interface CacheOptions {
  /** Most entries kept; the least recently stored go first. 0 turns the cache off. */
  maxEntries: number;
  /** Cap of how long an answer is kept (s). */
  maxTtl: number;
}

/** Negative answers (NXDOMAIN, no data) are kept at most this long (s): a name may appear soon. */
const NEGATIVE_MAX_TTL = 60;
const TYPE_OPT = 41;
const RCODE_NXDOMAIN = 3;

interface Entry {
  wire: Buffer;
  /** Byte offsets of the TTL field of every record but OPT (whose TTL field holds flags). */
  ttlOffsets: number[];
  storedAt: number;
  expiresAt: number;
  /** Decoded once, when the gate first needs it. */
  packet?: dnsPacket.Packet;
}

export interface CacheHit {
  /** The answer to send: the asker's ID and question, TTLs counted down. */
  wire: Buffer;
  /** Seconds the answer has been in the cache. */
  age: number;
  /** The stored answer, decoded (TTLs as stored: subtract `age`). */
  packet(): dnsPacket.Packet;
}

/** Offset just past a name at `off` (labels, ending in a zero or a compression pointer), or -1. */
export function skipName(buf: Buffer, off: number): number {
  for (;;) {
    if (off >= buf.length) return -1;
    const len = buf[off];
    if (len === 0) return off + 1;
    if ((len & 0xc0) === 0xc0) return off + 2 <= buf.length ? off + 2 : -1;
    if (len > 63) return -1;
    off += 1 + len;
  }
}

/** A byte in ASCII lower case (names compare case-insensitively in ASCII only, RFC 4343). */
const asciiLower = (c: number): number => (c >= 0x41 && c <= 0x5a ? c | 0x20 : c);

/**
 * Name (ASCII lower case: names compare case-insensitively in ASCII only, RFC 4343), type
 * and class of a message's single question, as in a cache key; `nameEnd` when the caller
 * has walked the name already.
 */
function questionKey(msg: Buffer, nameEnd = skipName(msg, 12)): string {
  if (nameEnd < 0 || nameEnd + 4 > msg.length || msg[nameEnd - 1] !== 0) return '\u0000invalid';
  const name = Buffer.from(msg.subarray(12, nameEnd));
  for (let i = 0; i < name.length; i++) name[i] = asciiLower(name[i]);
  return `${name.toString('latin1')}|${msg.readUInt16BE(nameEnd)}|${msg.readUInt16BE(nameEnd + 2)}`;
}

/**
 * Whether `answer` answers the question(s) of `query`: same count, and the same names (ASCII
 * letter case aside), types and classes. An answer for anything else (spoofed, or an
 * upstream's mistake) must be neither passed on nor judged by the gate nor kept.
 */
export function sameQuestion(query: Buffer, answer: Buffer): boolean {
  if (query.length < 12 || answer.length < 12 || query.readUInt16BE(4) !== answer.readUInt16BE(4)) return false;
  let [q, a] = [12, 12];
  for (let i = query.readUInt16BE(4); i > 0; i--) {
    const [qEnd, aEnd] = [skipName(query, q), skipName(answer, a)];
    if (qEnd < 0 || aEnd < 0 || qEnd + 4 > query.length || aEnd + 4 > answer.length || qEnd - q !== aEnd - a) return false;
    for (let j = 0; j < qEnd + 4 - q; j++) if (asciiLower(query[q + j]) !== asciiLower(answer[a + j])) return false;
    [q, a] = [qEnd + 4, aEnd + 4];
  }
  return true;
}

/**
 * The cache key of a query, or undefined when its answer must not be shared: not exactly
 * one question, or EDNS options (cookies, client subnet) that make the answer the asker's
 * own. The key holds what shapes the answer: name (any letter case), type, class, the RD
 * and CD flags, and EDNS presence, UDP size and DO bit.
 */
export function cacheKey(query: Buffer): string | undefined {
  if (query.length < 12 || (query[2] & 0x78) !== 0 /* not a standard query */ || query.readUInt16BE(4) !== 1 || query.readUInt16BE(6) !== 0 || query.readUInt16BE(8) !== 0) return undefined;
  const nameEnd = skipName(query, 12);
  if (nameEnd < 0 || nameEnd + 4 > query.length || query[nameEnd - 1] !== 0) return undefined;
  const flags = query[2] & 0x01 /* RD */ | (query[3] & 0x10) /* CD */;
  let edns = '';
  const arcount = query.readUInt16BE(10);
  if (arcount > 1) return undefined;
  if (arcount === 1) {
    // One additional record, which must be an OPT without options.
    const o = nameEnd + 4;
    if (o + 11 > query.length || query[o] !== 0 || query.readUInt16BE(o + 1) !== TYPE_OPT || query.readUInt16BE(o + 9) !== 0) return undefined;
    edns = `e${query.readUInt16BE(o + 3)}:${query[o + 7] & 0x80}`;
  }
  return `${questionKey(query, nameEnd)}|${flags}|${edns}`;
}

/** TTL field offsets of all records, and the smallest TTL that bounds how long the answer may be kept; undefined if malformed. */
function walkRecords(a: Buffer): { ttlOffsets: number[]; minTtl: number } | undefined {
  const counts = [a.readUInt16BE(4), a.readUInt16BE(6), a.readUInt16BE(8), a.readUInt16BE(10)];
  let off = 12;
  for (let i = 0; i < counts[0]; i++) {
    off = skipName(a, off);
    if (off < 0 || off + 4 > a.length) return undefined;
    off += 4;
  }
  const ttlOffsets: number[] = [];
  let minTtl = Infinity;
  for (let section = 1; section < 4; section++) {
    for (let i = 0; i < counts[section]; i++) {
      off = skipName(a, off);
      if (off < 0 || off + 10 > a.length) return undefined;
      const type = a.readUInt16BE(off);
      const rdlen = a.readUInt16BE(off + 8);
      if (type !== TYPE_OPT) {
        ttlOffsets.push(off + 4);
        // Additional records (glue) do not bound the answer's lifetime; answer and authority do.
        if (section < 3) minTtl = Math.min(minTtl, a.readUInt32BE(off + 4));
      }
      off += 10 + rdlen;
      if (off > a.length) return undefined;
    }
  }
  return { ttlOffsets, minTtl };
}

export class DnsCache {
  private readonly entries = new Map<string, Entry>();
  hits = 0;
  misses = 0;

  constructor(private readonly o: CacheOptions) {}

  get size(): number {
    return this.entries.size;
  }

  /** A cached answer for `query` (whose key is `key`), or undefined. `now` in ms (monotonic). */
  get(key: string, query: Buffer, now: number): CacheHit | undefined {
    const e = this.entries.get(key);
    if (!e || e.expiresAt <= now) {
      if (e) this.entries.delete(key);
      this.misses++;
      return undefined;
    }
    this.hits++;
    const age = Math.floor((now - e.storedAt) / 1000);
    const wire = Buffer.from(e.wire);
    wire.writeUInt16BE(query.readUInt16BE(0), 0);
    // The question as asked (same bytes but for letter case: some stubs check it, 0x20).
    query.copy(wire, 12, 12, skipName(query, 12));
    if (age > 0) for (const t of e.ttlOffsets) wire.writeUInt32BE(Math.max(0, wire.readUInt32BE(t) - age), t);
    return { wire, age, packet: () => (e.packet ??= dnsPacket.decode(e.wire)) };
  }

  /** Stores an upstream's answer to a query with key `key`, when it may be kept. */
  put(key: string, answer: Buffer, now: number): void {
    if (this.o.maxEntries <= 0 || answer.length < 12) return;
    // Only a standard answer to exactly the question asked: what is kept is served to every
    // sandbox, so an answer for another name (spoofed or broken) must not get in.
    if ((answer[2] & 0x78) !== 0 || answer.readUInt16BE(4) !== 1 || !key.startsWith(`${questionKey(answer)}|`)) return;
    const rcode = answer[3] & 0x0f;
    const truncated = (answer[2] & 0x02) !== 0;
    if (truncated || (rcode !== 0 && rcode !== RCODE_NXDOMAIN) || (answer[2] & 0x80) === 0) return;
    const w = walkRecords(answer);
    if (!w) return;
    const negative = rcode === RCODE_NXDOMAIN || answer.readUInt16BE(6) === 0;
    // A negative answer without an SOA says nothing about how long it holds: not kept.
    if (!Number.isFinite(w.minTtl) || w.minTtl <= 0) return;
    const ttl = Math.min(w.minTtl, this.o.maxTtl, negative ? NEGATIVE_MAX_TTL : Infinity);
    this.entries.delete(key); // re-inserted last: the Map's order is the eviction order
    this.entries.set(key, { wire: Buffer.from(answer), ttlOffsets: w.ttlOffsets, storedAt: now, expiresAt: now + ttl * 1000 });
    if (this.entries.size > this.o.maxEntries) {
      // Evict the oldest tenth in one pass: one key at a time would rescan the Map's
      // deleted slots from its start on every insert (8 us per put when full of one-off names).
      const target = Math.floor(this.o.maxEntries * 0.9);
      for (const k of this.entries.keys()) {
        if (this.entries.size <= target) break;
        this.entries.delete(k);
      }
    }
  }

  delete(key: string): void {
    this.entries.delete(key);
  }

  clear(): void {
    this.entries.clear();
  }
}
