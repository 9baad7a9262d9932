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
  /** The records kept (all but the stripped). */
  keep: dnsPacket.Answer[];
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
    let a: dnsPacket.Packet;
    const age = cached?.age ?? 0;
    try {
      a = cached?.packet ?? dnsPacket.decode(answer);
    } catch {
      return answer;
    }
    const qname = (a.questions?.[0]?.name ?? '').toLowerCase();
    const type = String(a.questions?.[0]?.type ?? '');
    // The engine hands out one policy object until the policy changes: asked under this
    // very policy, the name passed onQuery's allow-list check already.
    if (s.policy !== asker.policy && s.policy.domains && !domainAllowed(s.policy.domains, qname)) {
      this.failed(s, now);
      this.hooks.log({ sandbox: s.name, name: qname, type, verdict: 'refused', answer: [], reason: 'not in egress.domains (changed while the query was upstream)' }, s);
      // The asker's ID and question are in `answer` (a cached packet holds the first asker's).
      const asked = cached ? dnsPacket.decode(answer) : a;
      return this.refusal({ id: answer.readUInt16BE(0), flags: asked.flags, questions: asked.questions }, this.o.refuseWith === 'nxdomain' ? RCODE_NXDOMAIN : RCODE_REFUSED);
    }
    const r = cached ? this.cachedReading(a, s.policy) : this.reading(a, s.policy);
    if (r.rcode === RCODE_NXDOMAIN || r.rcode === RCODE_REFUSED) this.failed(s, now);
    if (s.policy.domains && r.admitted.length > 0) {
      // The smallest TTL left of the admitted records (none is below zero).
      const left = Number.isFinite(r.admittedTtl) ? Math.max(0, r.admittedTtl - age) : Infinity;
      const ttl = Math.max(this.o.minTtl, Math.min(this.o.maxTtl, Number.isFinite(left) ? left : this.o.minTtl));
      this.hooks.admit(s, r.admitted, ttl);
    }
    const { stripped } = r;
    this.hooks.log({ sandbox: s.name, name: qname, type, verdict: stripped.length ? 'stripped' : 'answered', answer: r.admitted, ...(stripped.length ? { reason: `rebinding: ${stripped.join(', ')}` } : {}) }, s);
    if (stripped.length === 0) return answer;
    const aged = (rs: dnsPacket.Answer[] | undefined) => rs?.map((x) => (x.type === 'OPT' ? x : { ...x, ttl: Math.max(0, (x.ttl ?? 0) - age) }) as dnsPacket.Answer);
    if (!cached) return dnsPacket.encode({ ...a, answers: r.keep });
    // From the cache: the asker's ID and question (already in `answer`), TTLs counted down.
    return dnsPacket.encode({ ...a, id: answer.readUInt16BE(0), questions: dnsPacket.decode(answer).questions, answers: aged(r.keep), authorities: aged(a.authorities), additionals: aged(a.additionals) });
  }

  /**
   * reading() of a cached answer, kept with it for each policy object that read it (the
   * engine hands out one object per policy until the policy changes): a cache hit then
   * costs no walk of the records and no address parsing.
   */
  private cachedReading(a: dnsPacket.Packet, policy: Policy): Reading {
    let byPolicy = this.readings.get(a);
    if (!byPolicy) this.readings.set(a, (byPolicy = new WeakMap()));
    let r = byPolicy.get(policy);
    if (!r) byPolicy.set(policy, (r = this.reading(a, policy)));
    return r;
  }

  /** What the gate makes of answer `a` under `policy`: what to admit, what to strip. */
  private reading(a: dnsPacket.Packet, policy: Policy): Reading {
    const qname = (a.questions?.[0]?.name ?? '').toLowerCase();
    const type = String(a.questions?.[0]?.type ?? '');
    // The name asked decides; follow its CNAME chain (in any record order) to the addresses at its end.
    const chain = new Set([qname]);
    for (let grew = true; grew;) {
      grew = false;
      for (const r of a.answers ?? []) {
        if (r.type !== 'CNAME') continue;
        const target = String((r as { data?: unknown }).data).toLowerCase();
        if (chain.has(r.name.toLowerCase()) && !chain.has(target)) {
          chain.add(target);
          grew = true;
        }
      }
    }
    const keep: dnsPacket.Answer[] = [];
    const admitted: string[] = [];
    let admittedTtl = Infinity;
    const stripped: string[] = [];
    for (const r of a.answers ?? []) {
      if (r.type === 'A') {
        const ip = String(r.data);
        // Every A record is checked for rebinding; only the chain's are admitted.
        if (this.isRebinding(policy, ip)) {
          stripped.push(ip);
          continue;
        }
        if (chain.has(r.name.toLowerCase())) {
          admitted.push(ip);
          admittedTtl = Math.min(admittedTtl, r.ttl ?? 0);
        }
      }
      keep.push(r);
    }
    return { qname, type, rcode: (a.flags ?? 0) & 0x0f, admitted, admittedTtl, stripped, keep };
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
