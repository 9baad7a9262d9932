// Pure encoding of nftables set-element transactions as nfnetlink messages (no I/O; the
// socket is in nft.ts). Layouts follow include/uapi/linux/netfilter/nf_tables.h and
// nfnetlink.h.
//
// Why: a create, delete or pool acquire changes only a sandbox's set elements, and one
// libnftables call for that costs ~0.4 ms, nearly all of it libnftables refreshing its cache
// of the table (it reads every chain, set and object first). The same elements sent as one
// nfnetlink batch cost a few tens of µs. Everything else (tables, chains, rules, objects,
// listings) stays with libnftables and its JSON API.
//
// The input is the same JSON the libnftables path takes ({add|delete: {element: ...}}), so
// both paths are fed by one ruleset builder and can be checked against each other. What
// this codec does not know (an unknown set, a value form it does not encode, a
// non-concatenated interval set) makes it return undefined, and the caller uses libnftables.
import { KeyType, SetSchema, SetSchemas, schemaKey } from '../core/nft-schema.js';
import type { Request } from './rtnetlink-codec.js';

const NFNL_SUBSYS_NFTABLES = 10;
const NFNL_MSG_BATCH_BEGIN = 0x10;
const NFNL_MSG_BATCH_END = 0x11;
const NFT_MSG_NEWSETELEM = 12;
const NFT_MSG_DELSETELEM = 14;

const NLM_F_REQUEST = 0x1;
const NLM_F_CREATE = 0x400;

const NFTA_SET_ELEM_LIST_TABLE = 1;
const NFTA_SET_ELEM_LIST_SET = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS = 3;
const NFTA_LIST_ELEM = 1;
const NFTA_SET_ELEM_KEY = 1;
const NFTA_SET_ELEM_DATA = 2;
const NFTA_SET_ELEM_TIMEOUT = 4;
const NFTA_SET_ELEM_OBJREF = 9;
const NFTA_SET_ELEM_KEY_END = 10;
const NFTA_DATA_VALUE = 1;
const NFTA_DATA_VERDICT = 2;
const NFTA_VERDICT_CODE = 1;
const NFTA_VERDICT_CHAIN = 2;

const VERDICTS: Record<string, number> = { accept: 1, drop: 0, continue: -1, return: -5 };
const CHAIN_VERDICTS: Record<string, number> = { jump: -3, goto: -4 };

export const NFPROTO: Record<string, number> = { inet: 1, ip: 2, arp: 3, ip6: 10, bridge: 7, netdev: 5 };

/** Key types this codec encodes, with their length in bytes (before 4-byte padding in a concatenation). */
const TYPE_LEN: Record<KeyType, number> = { ipv4_addr: 4, ether_addr: 6, ifname: 16, inet_proto: 1, inet_service: 2 };

export type { KeyType, SetSchema, SetSchemas };
export { schemaKey };

class Unsupported extends Error {}

/** Writes one key field at `off` of `b` (zeroed). */
function field(b: Buffer, off: number, type: KeyType, v: unknown): void {
  switch (type) {
    case 'ipv4_addr': {
      if (typeof v !== 'string') throw new Unsupported();
      const parts = v.split('.');
      if (parts.length !== 4) throw new Unsupported();
      for (let i = 0; i < 4; i++) {
        const p = parts[i];
        // Decimal only, no leading zero (inet_pton's rule: "010" is not 10 to everyone).
        if (!/^(0|[1-9]\d{0,2})$/.test(p) || Number(p) > 255) throw new Unsupported();
        b[off + i] = Number(p);
      }
      return;
    }
    case 'ether_addr': {
      if (typeof v !== 'string' || !/^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$/.test(v)) throw new Unsupported();
      for (let i = 0; i < 6; i++) b[off + i] = parseInt(v.substr(i * 3, 2), 16);
      return;
    }
    case 'ifname': {
      if (typeof v !== 'string' || Buffer.byteLength(v) > 15 || v.includes('*')) throw new Unsupported();
      b.write(v, off);
      return;
    }
    case 'inet_proto': {
      if (!Number.isInteger(v) || (v as number) < 0 || (v as number) > 255) throw new Unsupported();
      b[off] = v as number;
      return;
    }
    case 'inet_service': {
      if (!Number.isInteger(v) || (v as number) < 0 || (v as number) > 65535) throw new Unsupported();
      b.writeUInt16BE(v as number, off);
      return;
    }
  }
}

/** Bytes a field takes in the key: its own length alone, rounded up to 32-bit registers in a concatenation. */
const fieldLen = (t: KeyType, concat: boolean): number => (concat ? (TYPE_LEN[t] + 3) & ~3 : TYPE_LEN[t]);

/** The key (and, for a range, its inclusive end) of one element value. */
function key(schema: SetSchema, val: unknown): { start: Buffer; end?: Buffer } {
  const concat = schema.key.length > 1;
  const values = concat ? (val as { concat?: unknown[] } | null)?.concat : [val];
  if (!Array.isArray(values) || values.length !== schema.key.length) throw new Unsupported();
  // A lone interval field is stored as start/end-exclusive pairs (rbtree): not encoded here.
  if (schema.interval && !concat) throw new Unsupported();
  let len = 0;
  for (const t of schema.key) len += fieldLen(t, concat);
  const start = Buffer.alloc(len);
  const end = schema.interval ? Buffer.alloc(len) : undefined;
  let off = 0;
  for (let i = 0; i < values.length; i++) {
    const t = schema.key[i];
    const v = values[i];
    const r = (v as { range?: unknown[] } | null)?.range;
    const [lo, hi] = Array.isArray(r) && r.length === 2 ? r : [v, v];
    if (lo !== hi && !end) throw new Unsupported();
    field(start, off, t, lo);
    if (end) {
      field(end, off, t, hi);
      // Fields are big-endian: byte order is value order. An inverted range is the kernel's
      // error to report, through libnftables.
      const n = TYPE_LEN[t];
      if (Buffer.compare(start.subarray(off, off + n), end.subarray(off, off + n)) > 0) throw new Unsupported();
    }
    off += fieldLen(t, concat);
  }
  return { start, end };
}

/**
 * Writes netlink attributes into one growing buffer, nested lengths patched in place: the
 * per-attribute Buffer allocations of a generic encoder cost more than the kernel round trip.
 */
class AttrWriter {
  private buf = Buffer.allocUnsafe(1024);
  off = 0;

  private room(n: number): void {
    if (this.off + n <= this.buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.off + n));
    this.buf.copy(next, 0, 0, this.off);
    this.buf = next;
  }

  raw(b: Buffer): void {
    this.room(b.length);
    b.copy(this.buf, this.off);
    this.off += b.length;
  }

  private header(type: number, len: number): void {
    this.room(4);
    this.buf.writeUInt16LE(len, this.off);
    this.buf.writeUInt16LE(type, this.off + 2);
    this.off += 4;
  }

  private pad(): void {
    const n = (4 - (this.off % 4)) % 4;
    this.room(n);
    this.buf.fill(0, this.off, this.off + n);
    this.off += n;
  }

  attr(type: number, data: Buffer): void {
    this.header(type, 4 + data.length);
    this.raw(data);
    this.pad();
  }

  be32(type: number, v: number): void {
    this.header(type, 8);
    this.room(4);
    this.buf.writeInt32BE(v, this.off);
    this.off += 4;
  }

  cstr(type: number, s: string): void {
    const n = Buffer.byteLength(s);
    this.header(type, 4 + n + 1);
    this.room(n + 1);
    this.buf.write(s, this.off);
    this.buf[this.off + n] = 0;
    this.off += n + 1;
    this.pad();
  }

  nested(type: number, inner: () => void): void {
    const at = this.off;
    this.header(type | NLA_F_NESTED, 0);
    inner();
    if (this.off - at > 0xffff) throw new Unsupported(); // attribute lengths are 16-bit
    this.buf.writeUInt16LE(this.off - at, at);
  }

  take(): Buffer {
    return Buffer.from(this.buf.subarray(0, this.off));
  }
}

const NLA_F_NESTED = 0x8000;

function verdict(w: AttrWriter, v: unknown): void {
  if (typeof v !== 'object' || v === null) throw new Unsupported();
  const entries = Object.entries(v);
  if (entries.length !== 1) throw new Unsupported();
  const [[name, arg]] = entries;
  const target = (arg as { target?: unknown } | null)?.target;
  if (Object.hasOwn(VERDICTS, name) && arg === null) {
    w.nested(NFTA_DATA_VERDICT, () => w.be32(NFTA_VERDICT_CODE, VERDICTS[name]));
  } else if (Object.hasOwn(CHAIN_VERDICTS, name) && typeof target === 'string') {
    w.nested(NFTA_DATA_VERDICT, () => {
      w.be32(NFTA_VERDICT_CODE, CHAIN_VERDICTS[name]);
      w.cstr(NFTA_VERDICT_CHAIN, target);
    });
  } else {
    throw new Unsupported();
  }
}

/** One element's attributes. JSON forms: `val`, `[val, data]` (a map: a verdict, an object's name or a value), `{elem: {val, timeout}}`. */
function element(w: AttrWriter, schema: SetSchema, e: unknown, op: 'add' | 'delete'): void {
  let val = e;
  let data: unknown;
  let timeout: unknown;
  if (schema.data) {
    if (!Array.isArray(e) || e.length !== 2) throw new Unsupported();
    [val, data] = e;
  }
  const wrapped = (val as { elem?: { val?: unknown; timeout?: unknown } } | null)?.elem;
  if (wrapped && typeof wrapped === 'object') {
    val = wrapped.val;
    timeout = wrapped.timeout;
    if (Object.keys(wrapped).some((k) => k !== 'val' && k !== 'timeout')) throw new Unsupported();
  }
  const k = key(schema, val);
  if (op === 'add' && timeout !== undefined && (!Number.isSafeInteger(timeout) || (timeout as number) <= 0 || (timeout as number) > 2 ** 32)) throw new Unsupported();
  if (op === 'add' && schema.data === 'objref' && typeof data !== 'string') throw new Unsupported();
  w.nested(NFTA_SET_ELEM_KEY, () => w.attr(NFTA_DATA_VALUE, k.start));
  if (k.end) w.nested(NFTA_SET_ELEM_KEY_END, () => w.attr(NFTA_DATA_VALUE, k.end!));
  if (op === 'add' && timeout !== undefined) {
    const b = Buffer.alloc(8);
    b.writeBigUInt64BE(BigInt(timeout as number) * 1000n); // seconds in JSON, ms on the wire
    w.attr(NFTA_SET_ELEM_TIMEOUT, b);
  }
  if (op === 'add' && schema.data === 'verdict') w.nested(NFTA_SET_ELEM_DATA, () => verdict(w, data));
  if (op === 'add' && schema.data === 'objref') w.cstr(NFTA_SET_ELEM_OBJREF, data as string);
  if (op === 'add' && typeof schema.data === 'object') {
    const t = schema.data.value;
    const b = Buffer.alloc(TYPE_LEN[t]);
    field(b, 0, t, data);
    w.nested(NFTA_SET_ELEM_DATA, () => w.attr(NFTA_DATA_VALUE, b));
  }
}

const nfgenmsg = (family: number, resId = 0): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt8(family, 0);
  b.writeUInt16BE(resId, 2);
  return b;
};

/** Messages above this size go through libnftables (nested attribute lengths are 16-bit). */
const MAX_MESSAGE = 32 * 1024;

export interface ElementBatch {
  begin: Request;
  /** One message per (set, operation), each acknowledged; the kernel commits all or none. */
  messages: Request[];
  end: Request;
}

/**
 * Encodes a list of `{add|delete: {element: {family, table, name, elem: [...]}}}` commands as
 * one nfnetlink batch, or returns undefined when any command is not an element change this
 * codec knows how to encode.
 */
export function encodeElementBatch(commands: readonly Record<string, unknown>[], schemas: SetSchemas): ElementBatch | undefined {
  const messages: Request[] = [];
  try {
    for (const c of commands) {
      const keys = Object.keys(c);
      if (keys.length !== 1 || (keys[0] !== 'add' && keys[0] !== 'delete')) return undefined;
      const op = keys[0];
      const inner = c[op];
      if (typeof inner !== 'object' || inner === null || Object.keys(inner).length !== 1) return undefined;
      const body = (inner as { element?: { family?: string; table?: string; name?: string; elem?: unknown } }).element;
      if (typeof body !== 'object' || body === null) return undefined;
      const { family, table, name, elem } = body;
      if (typeof family !== 'string' || typeof table !== 'string' || typeof name !== 'string' || !Array.isArray(elem)) return undefined;
      const schema = schemas.get(schemaKey(family, table, name));
      if (!schema || !Object.hasOwn(NFPROTO, family)) return undefined;
      if (elem.length === 0) continue;
      const w = new AttrWriter();
      w.raw(nfgenmsg(NFPROTO[family]));
      w.cstr(NFTA_SET_ELEM_LIST_TABLE, table);
      w.cstr(NFTA_SET_ELEM_LIST_SET, name);
      w.nested(NFTA_SET_ELEM_LIST_ELEMENTS, () => {
        for (const e of elem) w.nested(NFTA_LIST_ELEM, () => element(w, schema, e, op));
      });
      const payload = w.take();
      if (payload.length > MAX_MESSAGE) return undefined;
      const type = (NFNL_SUBSYS_NFTABLES << 8) | (op === 'add' ? NFT_MSG_NEWSETELEM : NFT_MSG_DELSETELEM);
      // "add" as nft means it: an element already there is not an error (no NLM_F_EXCL).
      messages.push({ type, flags: NLM_F_REQUEST | (op === 'add' ? NLM_F_CREATE : 0), body: payload });
    }
  } catch (err) {
    if (err instanceof Unsupported) return undefined;
    throw err;
  }
  const marker = (type: number): Request => ({ type, flags: NLM_F_REQUEST, body: nfgenmsg(0, NFNL_SUBSYS_NFTABLES) });
  return { begin: marker(NFNL_MSG_BATCH_BEGIN), messages, end: marker(NFNL_MSG_BATCH_END) };
}
