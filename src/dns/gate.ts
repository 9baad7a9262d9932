// What the resolver does for one sandbox, on top of plain forwarding: per-sandbox query
// limits, the domain allow-list (a query for a name not on it is refused; the addresses an
// allowed name resolves to are admitted in the kernel, for the answer's TTL, before the
// sandbox sees the answer), and rebinding protection (answers pointing into denied space
// are stripped unless the sandbox's policy opens that destination). What goes upstream is
// rebuilt from the query, never the sandbox's own bytes (upstream-query.ts). An answer is
// judged with the sandbox's facts when it arrives, not when it was asked: the sandbox may
// have gone (its address given to another) or changed its policy in between.
import { createRequire } from 'node:module';
import dnsPacket from 'dns-packet';
import { cidrContains, ipv4OrNegative, parseCidr } from '../core/ipv4.js';
import { Policy, domainAllowed } from '../core/policy.js';
import { checksAnswers } from '../core/name-check.js';
import { DENIED_RANGES } from '../core/denied-ranges.js';
import { countsFit, upstreamQuery, wireName } from './upstream-query.js';
import type { QueryLogEntry } from '../api/types.js';

export type { QueryLogEntry };

export interface GateSandbox {
  /** Its identity: the row id, never reused (names and addresses are). */
  id: number;
  name: string;
  ip: string;
  policy: Policy;
}

export interface GateHooks {
  /** The sandbox at this source address, or undefined (then the query is dropped). */
  sandbox(ip: string): GateSandbox | undefined;
  /** The sandbox with this id as it is now (its current policy), or undefined once it is gone. */
  sandboxById(id: number): GateSandbox | undefined;
  /** Admits `sandbox` to `addresses` in the kernel for `ttl` seconds; synchronous. */
  admit(sandbox: GateSandbox, addresses: string[], ttl: number): void;
  /**
   * Told, before the answer leaves, that `name` gave `sandbox` these addresses for `ttl`
   * seconds: for a sandbox whose names are checked without an allow-list (its connections
   * must name what its DNS answered, core/name-check.ts). Synchronous.
   */
  answeredName?(sandbox: GateSandbox, name: string, addresses: string[], ttl: number): void;
  log(entry: QueryLogEntry, sandbox: GateSandbox): void;
}

export interface GateOptions {
  /** Clamp of the admission time to the answer's TTL, in seconds. */
  minTtl: number;
  maxTtl: number;
  refuseWith: 'refused' | 'nxdomain';
  subnet: string;
}

interface Bucket {
  tokens: number;
  at: number;
  failures: number[];
}

const RCODE_REFUSED = 5;
const RCODE_NXDOMAIN = 3;

/** dns-packet's names of record types (its types module, which its typings do not declare). */
const recordTypes = createRequire(import.meta.url)('dns-packet/types.js') as { toString(type: number): string };

/** What the gate reads of a query: its first question's name (lower case) and type, and how many questions. */
interface Asked {
  name: string;
  type: string;
  questions: number;
}

/**
 * The question of a query of the plain shape stubs send (header, one question of plain
 * labels, no records), read from its bytes as dns-packet would decode it (labels as UTF-8,
 * joined by dots; the root as "."); undefined for any other message, which dns-packet
 * decodes instead. Nearly every query is plain: decoding it whole cost ~4 us a query.
 */
export function plainQuestion(query: Buffer): Asked | undefined {
  if (query.length < 17 || (query[2] & 0x80) !== 0 || query[4] !== 0 || query[5] !== 1) return undefined;
  if ((query[6] | query[7] | query[8] | query[9] | query[10] | query[11]) !== 0) return undefined;
  const labels: string[] = [];
  let off = 12;
  let total = 0;
  for (;;) {
    if (off >= query.length) return undefined;
    const len = query[off];
    if (len === 0) break;
    if (len > 63 || off + 1 + len > query.length) return undefined; // pointers and the like: dns-packet's to judge
    total += len + 1;
    if (total > 254) return undefined;
    labels.push(query.toString('utf-8', off + 1, off + 1 + len));
    off += 1 + len;
  }
  if (off + 5 > query.length) return undefined;
  return { name: (labels.length === 0 ? '.' : labels.join('.')).toLowerCase(), type: recordTypes.toString(query.readUInt16BE(off + 1)), questions: 1 };
}

/** What an answer holds for the gate, apart from its age and the sandbox that asked. */
interface Reading {
  qname: string;
  type: string;
  rcode: number;
  /** A records of the asked name's CNAME chain that pass the rebinding check. */
  admitted: string[];
  /** Their smallest TTL as in the answer (Infinity when none). */
  admittedTtl: number;
  /** A records stripped as rebinding. */
  stripped: string[];
}

/** An answer's facts the gate judges: its question, rcode, and its A and CNAME records. */
export interface AnswerFacts {
  /** The first question's name (lower case; "" when none) and type. */
  qname: string;
  type: string;
  rcode: number;
  /** A and CNAME records of the answer section, names in lower case (`data`: the address or the target, lower case). */
  records: { type: 'A' | 'CNAME'; name: string; data: string; ttl: number }[];
}

/** What a decoded answer holds for the gate (the records other than A and CNAME play no part). */
export function packetFacts(a: dnsPacket.Packet): AnswerFacts {
  const records: AnswerFacts['records'] = [];
  for (const r of a.answers ?? []) {
    if (r.type === 'A' || r.type === 'CNAME') records.push({ type: r.type, name: r.name.toLowerCase(), data: String((r as { data?: unknown }).data).toLowerCase(), ttl: r.ttl ?? 0 });
  }
  return { qname: (a.questions?.[0]?.name ?? '').toLowerCase(), type: String(a.questions?.[0]?.type ?? ''), rcode: (a.flags ?? 0) & 0x0f, records };
}

/**
 * A name at `off` as dns-packet's name.decode reads it (labels as UTF-8 joined by dots, the
 * root as ".", compression pointers only backwards, at most 254 bytes), and the bytes it
 * takes at `off`; undefined where dns-packet would throw.
 */
function readName(buf: Buffer, off: number): { name: string; bytes: number } | undefined {
  const labels: string[] = [];
  let oldOffset = off;
  let total = 0;
  let bytes = 0;
  let jumped = false;
  for (;;) {
    if (off >= buf.length) return undefined;
    const len = buf[off++];
    if (!jumped) bytes++;
    if (len === 0) break;
    if ((len & 0xc0) === 0) {
      if (off + len > buf.length) return undefined;
      total += len + 1;
      if (total > 254) return undefined;
      labels.push(buf.toString('utf-8', off, off + len));
      off += len;
      if (!jumped) bytes += len;
    } else if ((len & 0xc0) === 0xc0) {
      if (off + 1 > buf.length) return undefined;
      const jump = buf.readUInt16BE(off - 1) - 0xc000;
      if (jump >= oldOffset) return undefined;
      off = oldOffset = jump;
      if (!jumped) bytes++;
      jumped = true;
    } else {
      return undefined;
    }
  }
  return { name: labels.length === 0 ? '.' : labels.join('.'), bytes };
}

/**
 * packetFacts() of an answer read from its bytes, for the shape upstreams send (one
 * question; answer records A, with 4 bytes of data, and CNAME; no authority records; at most
 * an OPT without options), without decoding it whole (~3 us and its garbage, per miss);
 * undefined for anything else, which dns-packet decodes instead.
 */
export function wireFacts(buf: Buffer): AnswerFacts | undefined {
  if (buf.length < 12 || buf.readUInt16BE(4) !== 1 || buf.readUInt16BE(8) !== 0 || buf.readUInt16BE(10) > 1) return undefined;
  const q = readName(buf, 12);
  if (!q || 12 + q.bytes + 4 > buf.length) return undefined;
  let off = 12 + q.bytes + 4;
  const records: AnswerFacts['records'] = [];
  for (let i = buf.readUInt16BE(6); i > 0; i--) {
    const n = readName(buf, off);
    if (!n || off + n.bytes + 10 > buf.length) return undefined;
    off += n.bytes;
    const type = buf.readUInt16BE(off);
    const ttl = buf.readUInt32BE(off + 4);
    const rdlen = buf.readUInt16BE(off + 8);
    off += 10;
    if (off + rdlen > buf.length) return undefined;
    if (type === 1 && rdlen === 4) {
      records.push({ type: 'A', name: n.name.toLowerCase(), data: `${buf[off]}.${buf[off + 1]}.${buf[off + 2]}.${buf[off + 3]}`, ttl });
    } else if (type === 5) {
      const target = readName(buf, off);
      if (!target || target.bytes !== rdlen) return undefined;
      records.push({ type: 'CNAME', name: n.name.toLowerCase(), data: target.name.toLowerCase(), ttl });
    } else {
      return undefined;
    }
    off += rdlen;
  }
  if (buf.readUInt16BE(10) === 1) {
    // An OPT at the root without options: nothing dns-packet could fail on.
    if (off + 11 > buf.length || buf[off] !== 0 || buf.readUInt16BE(off + 1) !== 41 || buf.readUInt16BE(off + 9) !== 0) return undefined;
  }
  return { qname: q.name.toLowerCase(), type: recordTypes.toString(buf.readUInt16BE(12 + q.bytes)), rcode: buf[3] & 0x0f, records };
}

/** Forward `query` (rebuilt: what goes upstream) for `sandbox`, or answer with `reply` (or nothing). */
export type QueryDecision = { forward: true; sandbox: GateSandbox; query: Buffer } | { forward: false; reply?: Buffer };

export class DnsGate {
  /** By sandbox id: an address's next owner starts afresh. */
  private readonly buckets = new Map<number, Bucket>();
  private readonly denied;
  private readonly subnet;
  /** Readings of cached answers (their decoded packets, one per cache entry), by policy object. */
  private readonly readings = new WeakMap<dnsPacket.Packet, WeakMap<Policy, Reading>>();

  constructor(private readonly hooks: GateHooks, private readonly o: GateOptions) {
    this.denied = [...DENIED_RANGES, o.subnet].map((c) => parseCidr(c));
    this.subnet = parseCidr(o.subnet);
  }

  private refusal(q: Pick<dnsPacket.Packet, 'id' | 'flags' | 'questions'>, rcode: number): Buffer {
    return dnsPacket.encode({ id: q.id, type: 'response', flags: ((q.flags ?? 0) & dnsPacket.RECURSION_DESIRED) | dnsPacket.RECURSION_AVAILABLE | rcode, questions: q.questions });
  }

  /** Token bucket per sandbox; also refuses while too many queries failed in the last minute. */
  private allowQuery(s: GateSandbox, now: number): 'ok' | 'rate' | 'failures' {
    let b = this.buckets.get(s.id);
    if (!b) this.buckets.set(s.id, (b = { tokens: s.policy.dns.burst, at: now, failures: [] }));
    b.tokens = Math.min(s.policy.dns.burst, b.tokens + (Math.max(0, now - b.at) / 1000) * s.policy.dns.qps);
    b.at = now;
    while (b.failures.length > 0 && b.failures[0] < now - 60_000) b.failures.shift();
    if (b.failures.length >= s.policy.dns.maxFailuresPerMinute) return 'failures';
    if (b.tokens < 1) return 'rate';
    b.tokens -= 1;
    return 'ok';
  }

  private failed(s: GateSandbox, now: number): void {
    this.buckets.get(s.id)?.failures.push(now);
  }

  /** Forgets a removed sandbox's limiter state (ids are never reused: this only frees memory). */
  forget(id: number): void {
    this.buckets.delete(id);
  }

  /** Forgets the limiter state of every sandbox that is gone (after removals the caller did not see one by one). */
  forgetGone(): void {
    for (const id of this.buckets.keys()) if (!this.hooks.sandboxById(id)) this.buckets.delete(id);
  }

  onQuery(clientIp: string, query: Buffer, now = performance.now()): QueryDecision {
    const s = this.hooks.sandbox(clientIp);
    if (!s || !countsFit(query)) return { forward: false };
    // Decoded whole only when it is not plain, or to be refused (the refusal repeats its question).
    let q: dnsPacket.Packet | undefined;
    let asked = plainQuestion(query);
    if (!asked) {
      try {
        q = dnsPacket.decode(query);
      } catch {
        return { forward: false };
      }
      if (q.type !== 'query' || !q.questions?.length) return { forward: false }; // not a query
      const question = q.questions[0];
      asked = { name: (question?.name ?? '').toLowerCase(), type: String(question?.type ?? ''), questions: q.questions.length };
    }
    const { name, type } = asked;
    const decoded = () => (q ??= dnsPacket.decode(query));
    const limit = this.allowQuery(s, now);
    if (limit !== 'ok') {
      this.hooks.log({ sandbox: s.name, name, type, verdict: 'limited', answer: [], reason: limit === 'rate' ? `over dns.qps ${s.policy.dns.qps}` : `over dns.maxFailuresPerMinute ${s.policy.dns.maxFailuresPerMinute}` }, s);
      return { forward: false, reply: this.refusal(decoded(), RCODE_REFUSED) };
    }
    if (asked.questions !== 1) {
      // Resolvers send one question; more would smuggle names past the allow-list.
      this.failed(s, now);
      this.hooks.log({ sandbox: s.name, name, type, verdict: 'refused', answer: [], reason: 'more than one question' }, s);
      return { forward: false, reply: this.refusal(decoded(), RCODE_REFUSED) };
    }
    const wire = wireName(query);
    const upstream = upstreamQuery(query, wire);
    if ('rcode' in upstream) {
      // What a stub resolver never sends (UPDATE, records in a query) is refused, not cleaned.
      this.failed(s, now);
      this.hooks.log({ sandbox: s.name, name, type, verdict: 'refused', answer: [], reason: upstream.reason }, s);
      return { forward: false, reply: this.refusal(decoded(), upstream.rcode) };
    }
    const { maxNameLength, maxLabelLength } = s.policy.dns;
    if (!wire || wire.length > maxNameLength || wire.labels.some((l) => l > maxLabelLength)) {
      // Long names and labels are how data is smuggled out through DNS; measured in bytes
      // on the wire (a decoded name hides dots inside labels and multi-byte characters).
      this.failed(s, now);
      this.hooks.log({ sandbox: s.name, name, type, verdict: 'refused', answer: [], reason: `over dns.maxNameLength ${maxNameLength} or dns.maxLabelLength ${maxLabelLength}` }, s);
      return { forward: false, reply: this.refusal(decoded(), RCODE_REFUSED) };
    }
    if (s.policy.domains && !domainAllowed(s.policy.domains, name)) {
      this.failed(s, now);
      this.hooks.log({ sandbox: s.name, name, type, verdict: 'refused', answer: [], reason: 'not in egress.domains' }, s);
      return { forward: false, reply: this.refusal(decoded(), this.o.refuseWith === 'nxdomain' ? RCODE_NXDOMAIN : RCODE_REFUSED) };
    }
    return { forward: true, sandbox: s, query: upstream.wire };
  }

  /**
   * Filters an answer to a query `asker` made and admits its addresses; returns what to
   * send, or undefined when the sandbox is gone (its address may be another's by now). A
   * cached answer comes with its decoded form (TTLs as stored) and its age in seconds, so it
   * is not decoded again and admissions last only what is left of the TTL.
   */
  onAnswer(asker: GateSandbox, answer: Buffer, now = performance.now(), cached?: { packet: dnsPacket.Packet; age: number }): Buffer | undefined {
    // Judged with the sandbox as it is now: the query may have waited upstream for seconds.
    // Nothing is logged for a sandbox that is gone: its name may be another's by now too.
    const s = this.hooks.sandboxById(asker.id);
    if (!s) return undefined;
    // The engine hands out one policy object until the policy changes: asked under this
    // very policy, the name passed onQuery's allow-list check already.
    const recheck = s.policy !== asker.policy && s.policy.domains;
    if (!cached && !recheck) {
      // An upstream's answer of the usual shape is read from its bytes; it is decoded whole
      // only when something in it must be stripped (or it has another shape).
      const facts = wireFacts(answer);
      const r = facts && this.judge(facts, s.policy);
      if (r && r.stripped.length === 0) {
        this.pass(s, r, 0, now);
        return answer;
      }
    }
    let a: dnsPacket.Packet;
    const age = cached?.age ?? 0;
    try {
      a = cached?.packet ?? dnsPacket.decode(answer);
    } catch {
      return answer;
    }
    if (recheck && !domainAllowed(s.policy.domains!, (a.questions?.[0]?.name ?? '').toLowerCase())) {
      const qname = (a.questions?.[0]?.name ?? '').toLowerCase();
      const type = String(a.questions?.[0]?.type ?? '');
      this.failed(s, now);
      this.hooks.log({ sandbox: s.name, name: qname, type, verdict: 'refused', answer: [], reason: 'not in egress.domains (changed while the query was upstream)' }, s);
      // The asker's ID and question are in `answer` (a cached packet holds the first asker's).
      const asked = cached ? dnsPacket.decode(answer) : a;
      return this.refusal({ id: answer.readUInt16BE(0), flags: asked.flags, questions: asked.questions }, this.o.refuseWith === 'nxdomain' ? RCODE_NXDOMAIN : RCODE_REFUSED);
    }
    const r = cached ? this.cachedReading(a, s.policy) : this.judge(packetFacts(a), s.policy);
    this.pass(s, r, age, now);
    if (r.stripped.length === 0) return answer;
    // The records kept: all but the A records stripped.
    const keep = (a.answers ?? []).filter((x) => !(x.type === 'A' && this.isRebinding(s.policy, String(x.data))));
    const aged = (rs: dnsPacket.Answer[] | undefined) => rs?.map((x) => (x.type === 'OPT' ? x : { ...x, ttl: Math.max(0, (x.ttl ?? 0) - age) }) as dnsPacket.Answer);
    if (!cached) return dnsPacket.encode({ ...a, answers: keep });
    // From the cache: the asker's ID and question (already in `answer`), TTLs counted down.
    return dnsPacket.encode({ ...a, id: answer.readUInt16BE(0), questions: dnsPacket.decode(answer).questions, answers: aged(keep), authorities: aged(a.authorities), additionals: aged(a.additionals) });
  }

  /** Counts a failed answer, admits what `r` admits for what is left of its TTL after `age` s, and logs the answer. */
  private pass(s: GateSandbox, r: Reading, age: number, now: number): void {
    if (r.rcode === RCODE_NXDOMAIN || r.rcode === RCODE_REFUSED) this.failed(s, now);
    const named = checksAnswers(s.policy);
    if ((s.policy.domains || named) && r.admitted.length > 0) {
      // The smallest TTL left of the admitted records (none is below zero).
      const left = Number.isFinite(r.admittedTtl) ? Math.max(0, r.admittedTtl - age) : Infinity;
      const ttl = Math.max(this.o.minTtl, Math.min(this.o.maxTtl, Number.isFinite(left) ? left : this.o.minTtl));
      if (s.policy.domains) this.hooks.admit(s, r.admitted, ttl);
      else this.hooks.answeredName?.(s, r.qname, r.admitted, ttl);
    }
    const { stripped } = r;
    this.hooks.log({ sandbox: s.name, name: r.qname, type: r.type, verdict: stripped.length ? 'stripped' : 'answered', answer: r.admitted, ...(stripped.length ? { reason: `rebinding: ${stripped.join(', ')}` } : {}) }, s);
  }

  /**
   * The judgement of a cached answer, kept with it for each policy object that read it (the
   * engine hands out one object per policy until the policy changes): a cache hit then
   * costs no walk of the records and no address parsing.
   */
  private cachedReading(a: dnsPacket.Packet, policy: Policy): Reading {
    let byPolicy = this.readings.get(a);
    if (!byPolicy) this.readings.set(a, (byPolicy = new WeakMap()));
    let r = byPolicy.get(policy);
    if (!r) byPolicy.set(policy, (r = this.judge(packetFacts(a), policy)));
    return r;
  }

  /** What the gate makes of an answer under `policy`: what to admit, what to strip. */
  private judge(f: AnswerFacts, policy: Policy): Reading {
    // The name asked decides; follow its CNAME chain (in any record order) to the addresses at its end.
    const chain = new Set([f.qname]);
    for (let grew = true; grew;) {
      grew = false;
      for (const r of f.records) {
        if (r.type === 'CNAME' && chain.has(r.name) && !chain.has(r.data)) {
          chain.add(r.data);
          grew = true;
        }
      }
    }
    const admitted: string[] = [];
    let admittedTtl = Infinity;
    const stripped: string[] = [];
    for (const r of f.records) {
      if (r.type !== 'A') continue;
      // Every A record is checked for rebinding; only the chain's are admitted.
      if (this.isRebinding(policy, r.data)) stripped.push(r.data);
      else if (chain.has(r.name)) {
        admitted.push(r.data);
        admittedTtl = Math.min(admittedTtl, r.ttl);
      }
    }
    return { qname: f.qname, type: f.type, rcode: f.rcode, admitted, admittedTtl, stripped };
  }

  /** An answer into denied space (private, metadata, the sandbox subnet) the policy does not open. */
  private isRebinding(policy: Policy, ip: string): boolean {
    const n = ipv4OrNegative(ip);
    if (n < 0) return false;
    if (!this.denied.some((c) => cidrContains(c, n))) return false;
    // Other sandboxes: no allow entry opens them (only groups, which need no DNS answer).
    if (cidrContains(this.subnet, n)) return true;
    // Explicitly opened: an allow entry of the sandbox's policy covers the address.
    return !policy.allow.some((r) => cidrContains(r.cidr, n));
  }
}
