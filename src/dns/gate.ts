// What the resolver does for one sandbox, on top of plain forwarding: per-sandbox query
// limits, the domain allow-list (a query for a name not on it is refused; the addresses an
// allowed name resolves to are admitted in the kernel, for the answer's TTL, before the
// sandbox sees the answer), and rebinding protection (answers pointing into denied space
// are stripped unless the sandbox's policy opens that destination). What goes upstream is
// rebuilt from the query, never the sandbox's own bytes (upstream-query.ts). An answer is
// judged with the sandbox's facts when it arrives, not when it was asked: the sandbox may
// have gone (its address given to another) or changed its policy in between.
import dnsPacket from 'dns-packet';
import { cidrContains, parseCidr, parseIPv4 } from '../core/ipv4.js';
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

/** Forward `query` (rebuilt: what goes upstream) for `sandbox`, or answer with `reply` (or nothing). */
export type QueryDecision = { forward: true; sandbox: GateSandbox; query: Buffer } | { forward: false; reply?: Buffer };

export class DnsGate {
  /** By sandbox id: an address's next owner starts afresh. */
  private readonly buckets = new Map<number, Bucket>();
  private readonly denied;
  private readonly subnet;

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
    let q: dnsPacket.Packet;
    try {
      q = dnsPacket.decode(query);
    } catch {
      return { forward: false };
    }
    if (q.type !== 'query' || !q.questions?.length) return { forward: false }; // not a query
    const question = q.questions[0];
    const name = (question?.name ?? '').toLowerCase();
    const type = String(question?.type ?? '');
    const limit = this.allowQuery(s, now);
    if (limit !== 'ok') {
      this.hooks.log({ sandbox: s.name, name, type, verdict: 'limited', answer: [], reason: limit === 'rate' ? `over dns.qps ${s.policy.dns.qps}` : `over dns.maxFailuresPerMinute ${s.policy.dns.maxFailuresPerMinute}` }, s);
      return { forward: false, reply: this.refusal(q, RCODE_REFUSED) };
    }
    if (q.questions.length !== 1) {
      // Resolvers send one question; more would smuggle names past the allow-list.
      this.failed(s, now);
      this.hooks.log({ sandbox: s.name, name, type, verdict: 'refused', answer: [], reason: 'more than one question' }, s);
      return { forward: false, reply: this.refusal(q, RCODE_REFUSED) };
    }
    const wire = wireName(query);
    const upstream = upstreamQuery(query, wire);
    if ('rcode' in upstream) {
      // What a stub resolver never sends (UPDATE, records in a query) is refused, not cleaned.
      this.failed(s, now);
      this.hooks.log({ sandbox: s.name, name, type, verdict: 'refused', answer: [], reason: upstream.reason }, s);
      return { forward: false, reply: this.refusal(q, upstream.rcode) };
    }
    const { maxNameLength, maxLabelLength } = s.policy.dns;
    if (!wire || wire.length > maxNameLength || wire.labels.some((l) => l > maxLabelLength)) {
      // Long names and labels are how data is smuggled out through DNS; measured in bytes
      // on the wire (a decoded name hides dots inside labels and multi-byte characters).
      this.failed(s, now);
      this.hooks.log({ sandbox: s.name, name, type, verdict: 'refused', answer: [], reason: `over dns.maxNameLength ${maxNameLength} or dns.maxLabelLength ${maxLabelLength}` }, s);
      return { forward: false, reply: this.refusal(q, RCODE_REFUSED) };
    }
    if (s.policy.domains && !domainAllowed(s.policy.domains, name)) {
      this.failed(s, now);
      this.hooks.log({ sandbox: s.name, name, type, verdict: 'refused', answer: [], reason: 'not in egress.domains' }, s);
      return { forward: false, reply: this.refusal(q, this.o.refuseWith === 'nxdomain' ? RCODE_NXDOMAIN : RCODE_REFUSED) };
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
    const rcode = (a.flags ?? 0) & 0x0f;
    if (rcode === RCODE_NXDOMAIN || rcode === RCODE_REFUSED) this.failed(s, now);
    // The name asked decides; follow its CNAME chain (in any record order) to the addresses at its end.
    const chain = new Set([qname]);
    for (let grew = true; grew;) {
      grew = false;
      for (const r of a.answers ?? []) {
        const target = String((r as { data?: unknown }).data).toLowerCase();
        if (r.type === 'CNAME' && chain.has(r.name.toLowerCase()) && !chain.has(target)) {
          chain.add(target);
          grew = true;
        }
      }
    }
    const keep: dnsPacket.Answer[] = [];
    const admitted: string[] = [];
    let minTtl = Infinity;
    const stripped: string[] = [];
    for (const r of a.answers ?? []) {
      if (r.type === 'A') {
        const ip = String(r.data);
        // Every A record is checked for rebinding; only the chain's are admitted.
        if (this.isRebinding(s, ip)) {
          stripped.push(ip);
          continue;
        }
        if (chain.has(r.name.toLowerCase())) {
          admitted.push(ip);
          minTtl = Math.min(minTtl, Math.max(0, (r.ttl ?? 0) - age));
        }
      }
      keep.push(r);
    }
    if (s.policy.domains && admitted.length > 0) {
      const ttl = Math.max(this.o.minTtl, Math.min(this.o.maxTtl, Number.isFinite(minTtl) ? minTtl : this.o.minTtl));
      this.hooks.admit(s, admitted, ttl);
    }
    this.hooks.log({ sandbox: s.name, name: qname, type, verdict: stripped.length ? 'stripped' : 'answered', answer: admitted, ...(stripped.length ? { reason: `rebinding: ${stripped.join(', ')}` } : {}) }, s);
    if (stripped.length === 0) return answer;
    const aged = (rs: dnsPacket.Answer[] | undefined) => rs?.map((r) => (r.type === 'OPT' ? r : { ...r, ttl: Math.max(0, (r.ttl ?? 0) - age) }) as dnsPacket.Answer);
    if (!cached) return dnsPacket.encode({ ...a, answers: keep });
    // From the cache: the asker's ID and question (already in `answer`), TTLs counted down.
    return dnsPacket.encode({ ...a, id: answer.readUInt16BE(0), questions: dnsPacket.decode(answer).questions, answers: aged(keep), authorities: aged(a.authorities), additionals: aged(a.additionals) });
  }

  /** An answer into denied space (private, metadata, the sandbox subnet) the policy does not open. */
  private isRebinding(s: GateSandbox, ip: string): boolean {
    let n: number;
    try {
      n = parseIPv4(ip);
    } catch {
      return false;
    }
    if (!this.denied.some((c) => cidrContains(c, n))) return false;
    // Other sandboxes: no allow entry opens them (only groups, which need no DNS answer).
    if (cidrContains(this.subnet, n)) return true;
    // Explicitly opened: an allow entry of the sandbox's policy covers the address.
    return !s.policy.allow.some((r) => cidrContains(r.cidr, n));
  }
}
