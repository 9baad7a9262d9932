// Name checks on the first flight: whether what a sandbox sends first on a connection to an
// address its DNS admitted names a domain its allow-list holds (the TLS ClientHello's SNI,
// the HTTP Host). An admitted address is often a CDN's, shared by thousands of sites: the
// address says nothing about which of them the connection is for, the first flight does.
// Without an allow-list (egress.verifyNames alone), every connection to the internet must
// name what the sandbox's own DNS answered with its address (AnsweredNames).
// Pure: the bytes come from the kernel's queue (kernel/name-check-worker.ts), the verdict
// goes back to it.
import { FirstFlight, FIRST_FLIGHT_MAX, parseFirstFlight } from './first-flight.js';
import { Policy, PortRange, domainAllowed } from './policy.js';

/**
 * Conntrack mark bits of a checked connection: pending (set by the filter when it opens,
 * cleared by the daemon when its first flight named an allowed domain), denied (set by the
 * daemon instead: the gate resets the connection). Other bits of the mark are left alone.
 */
export const CT_MARK_NAME_PENDING = 0x20000000;
export const CT_MARK_NAME_DENIED = 0x40000000;

/**
 * The packet mark bit of a packet on its way to the queue. The reader's verdict clears it;
 * a packet that comes out of the queue rule still carrying it got no verdict from a reader
 * (none bound: the daemon is down; or the queue full: it is overloaded), and the chain after
 * the gate counts it, by sandbox, and drops it. That is how failing closed is reported.
 */
export const SKB_MARK_NAME_QUEUED = 0x20000000;

/**
 * The packet mark bit of a packet the reader judged against: it goes through the gate again
 * (NF_REPEAT) and meets its reset, whether or not the connection's mark could be written.
 */
export const SKB_MARK_NAME_DENIED = 0x40000000;

/**
 * The gate's chain (after the filter on the forward hook: priority 0 there), and the chain
 * after it (`unjudged`) that drops what the queue gave back without a verdict and counts it
 * by source address (the set: a counter each).
 */
export const NAME_GATE = { chain: 'name_gate', priority: 5, unjudged: { chain: 'name_unjudged', priority: 6, set: 'unjudged' } };

/** The instance's queue number: its NFLOG group's number (another numbering, derived from the instance name the same way). */
export const nameCheckQueue = (logGroup: number): number => logGroup;

/** What the judge needs of a sandbox's policy. */
export interface NameCheckPolicy {
  /**
   * The allowed names. Without an allow-list (egress.verifyNames alone) a name passes when
   * the sandbox's own DNS answers gave the connection's address for it (AnsweredNames).
   */
  domains?: string[];
  /** TCP ports where a connection may name nothing (SSH, say): TLS and HTTP there are still checked. */
  unnamedPorts: PortRange[];
  /** Report mode: judged, logged, never cut. */
  report: boolean;
}

/** The name-check part of a resolved policy, or undefined when its connections are not checked. */
export function nameCheckPolicy(p: Policy): NameCheckPolicy | undefined {
  if (!p.verifyNames) return undefined;
  return { ...(p.domains ? { domains: p.domains } : {}), unnamedPorts: p.unnamedPorts ?? [], report: p.mode === 'report' };
}

/**
 * The clock answers' lifetimes are kept in (ms): the wall clock at the thread's start, then
 * monotonic, so a step of the system clock neither stretches nor cuts them. The resolver's
 * thread and the reader's agree on it (each adds its own time since its own origin).
 */
export const answerClockMs = (): number => performance.timeOrigin + performance.now();

/**
 * Whether a sandbox's connections are checked against what its DNS answered: name checks
 * without an allow-list, and an internet to name (without one, nothing goes there).
 */
export const checksAnswers = (p: Policy): boolean => p.verifyNames === true && !p.domains && p.internet;

/** A name as the resolver compares it: lower case, no trailing dot. */
const normalName = (n: string) => n.toLowerCase().replace(/\.$/, '');

/**
 * What one sandbox's resolver answered, for name checks without an allow-list: by name
 * asked, the addresses at the end of its CNAME chain (the resolver's semantics: the name
 * asked decides), each until the time an admission of it would expire. A connection then
 * passes when it names what DNS told this sandbox its address is, so the query log says
 * what the sandbox reached, and an address it never asked for (or asked for by another
 * name) is named in vain.
 *
 * Bounded, since a sandbox chooses what it asks and a zone it controls chooses the answers
 * (thousands of A records over TCP): at most `perName` addresses a name (the latest), and
 * at most `maxEntries` (name, address) pairs in all, the names answered longest ago going
 * first. One reader holds every sandbox's, so what one sandbox asks must not grow without end.
 */
export class AnsweredNames {
  private readonly byName = new Map<string, Map<string, number>>();
  private entries = 0;

  constructor(private readonly maxEntries = 2048, private readonly perName = 32) {}

  /** Records an answer: `name` gave `addresses`, valid until `until` (ms, the clock of `now`). */
  add(name: string, addresses: string[], until: number, now: number): void {
    const n = normalName(name);
    let addrs = this.byName.get(n);
    if (addrs) {
      this.entries -= addrs.size;
      this.byName.delete(n); // re-inserted below: the Map's order is the order of last answers
      for (const [a, t] of addrs) if (t <= now) addrs.delete(a);
    } else addrs = new Map();
    for (const a of addresses.slice(-this.perName)) {
      const t = Math.max(addrs.get(a) ?? 0, until);
      addrs.delete(a); // re-inserted: the latest last
      addrs.set(a, t);
    }
    for (const a of addrs.keys()) {
      if (addrs.size <= this.perName) break;
      addrs.delete(a);
    }
    this.byName.set(n, addrs);
    this.entries += addrs.size;
    for (const [oldest, its] of this.byName) {
      if (this.entries <= this.maxEntries || oldest === n) break;
      this.byName.delete(oldest);
      this.entries -= its.size;
    }
  }

  /** Whether an answer for `name` gave `address`, and still holds at `now`. */
  answered(name: string, address: string, now: number): boolean {
    return (this.byName.get(normalName(name))?.get(address) ?? 0) > now;
  }

  /** Names held. */
  get size(): number {
    return this.byName.size;
  }

  /** (name, address) pairs held. */
  get pairs(): number {
    return this.entries;
  }
}

/**
 * What the gate's reader is told, in order: a sandbox's policy by address (none: not checked
 * any more), and what its DNS answered (only for checks without an allow-list).
 */
export type GateUpdate =
  | { ip: string; id: number; policy?: NameCheckPolicy }
  | { ip: string; id: number; answer: { name: string; addresses: string[]; until: number } };

/**
 * The checked sandboxes by address, as the gate's reader knows them: whose (the sandbox's
 * id, never reused), their policy, and what their DNS answered. The id keeps one sandbox's
 * answers from serving the next sandbox at its address: an answer for a sandbox that is no
 * longer there is dropped, and a new sandbox starts with none.
 */
export class CheckedSandboxes {
  private readonly byIp = new Map<string, { id: number; policy: NameCheckPolicy; answers?: AnsweredNames }>();

  apply(u: GateUpdate, now: number): void {
    const was = this.byIp.get(u.ip);
    if ('answer' in u) {
      if (was?.id !== u.id || was.policy.domains) return; // gone, or checked against its allow-list
      (was.answers ??= new AnsweredNames()).add(u.answer.name, u.answer.addresses, u.answer.until, now);
    } else if (u.policy) {
      // A policy change keeps what the sandbox's DNS answered: those answers were given all the same.
      this.byIp.set(u.ip, { id: u.id, policy: u.policy, ...(was?.id === u.id && was.answers ? { answers: was.answers } : {}) });
    } else this.byIp.delete(u.ip);
  }

  get(ip: string): { policy: NameCheckPolicy; answers?: AnsweredNames } | undefined {
    return this.byIp.get(ip);
  }
}

export type Judgement =
  | { verdict: 'more' }
  | { verdict: 'allow'; kind: FirstFlight['kind']; name?: string }
  | { verdict: 'deny'; kind: FirstFlight['kind']; name?: string; why: string };

const IP_LITERAL = /^(\d{1,3}\.){3}\d{1,3}$|:/;

const portListed = (ports: PortRange[], port: number) => ports.some((r) => (!r.proto || r.proto === 'tcp') && port >= r.from && port <= r.to);

/**
 * The verdict on a connection to `dport` from what its client sent so far. `answered`
 * says whether the sandbox's DNS answered a name with the connection's address (asked only
 * without an allow-list).
 */
export function judge(p: NameCheckPolicy, dport: number, f: FirstFlight, answered: (name: string) => boolean = () => false): Judgement {
  switch (f.kind) {
    case 'more':
      return { verdict: 'more' };
    case 'malformed':
      return { verdict: 'deny', kind: f.kind, why: f.why };
    case 'other':
      return portListed(p.unnamedPorts, dport)
        ? { verdict: 'allow', kind: f.kind }
        : { verdict: 'deny', kind: f.kind, why: `names nothing (neither TLS nor HTTP) on port ${dport}` };
    case 'tls':
    case 'http': {
      const what = f.kind === 'tls' ? 'SNI' : 'Host';
      if (f.name === undefined) return { verdict: 'deny', kind: f.kind, why: `no ${what}` };
      if (IP_LITERAL.test(f.name)) return { verdict: 'deny', kind: f.kind, name: f.name, why: `${what} is an address` };
      if (p.domains) {
        return domainAllowed(p.domains, f.name)
          ? { verdict: 'allow', kind: f.kind, name: f.name }
          : { verdict: 'deny', kind: f.kind, name: f.name, why: `${what} ${f.name} is not in egress.domains` };
      }
      return answered(f.name)
        ? { verdict: 'allow', kind: f.kind, name: f.name }
        : { verdict: 'deny', kind: f.kind, name: f.name, why: `${what} ${f.name} is not a name the sandbox's DNS answered with this address` };
    }
  }
}

/**
 * A connection's first bytes in sequence order, from the segments the kernel queued.
 * A segment that repeats bytes already seen must repeat them exactly: two versions of the
 * same bytes (the second one meant for the server, the first one for the filter) are how
 * stream reassembly is evaded, so they decide against the connection.
 */
export class FirstFlightStream {
  /** Sequence number of the connection's first byte. */
  private base: number | undefined;
  private bytes = Buffer.alloc(0);
  /** Segments beyond a gap, by offset, until it fills. */
  private readonly ahead = new Map<number, Buffer>();

  /** Adds a segment (`seq`: TCP sequence number of its first byte); returns the judgement so far. */
  add(seq: number, data: Buffer): FirstFlight {
    if (this.base === undefined) this.base = seq;
    const off = (seq - this.base) | 0; // offset in the stream (wraps with the sequence space)
    if (off < 0) return { kind: 'malformed', why: 'a segment before the connection\'s first byte' };
    if (off + data.length > FIRST_FLIGHT_MAX) return { kind: 'malformed', why: `no decision in the first ${FIRST_FLIGHT_MAX} bytes` };
    if (off < this.bytes.length) {
      const overlap = Math.min(data.length, this.bytes.length - off);
      if (!data.subarray(0, overlap).equals(this.bytes.subarray(off, off + overlap))) return { kind: 'malformed', why: 'a retransmission that differs from the original' };
      data = data.subarray(overlap);
    } else if (off > this.bytes.length) {
      if (this.ahead.size >= 64) return { kind: 'malformed', why: 'too many segments out of order' };
      this.ahead.set(off, Buffer.from(data));
      return { kind: 'more' };
    }
    if (data.length > 0) this.bytes = Buffer.concat([this.bytes, data]);
    for (let filled = true; filled && this.ahead.size > 0;) {
      filled = false;
      for (const [o, seg] of this.ahead) {
        if (o > this.bytes.length) continue;
        this.ahead.delete(o);
        const skip = this.bytes.length - o;
        if (!seg.subarray(0, Math.min(skip, seg.length)).equals(this.bytes.subarray(o, o + Math.min(skip, seg.length)))) {
          return { kind: 'malformed', why: 'a retransmission that differs from the original' };
        }
        if (skip < seg.length) this.bytes = Buffer.concat([this.bytes, seg.subarray(skip)]);
        filled = true;
      }
    }
    return parseFirstFlight(this.bytes);
  }
}

/**
 * Whether `data`, a segment's bytes, begins a first flight of its own (a ClientHello, an
 * HTTP request, or the start of one). A connection just allowed whose mark is not written
 * yet passes without a judgement, but a new connection can take its addresses and ports at
 * once (the first reset, the second opened): what begins a first flight is judged, whatever
 * its addresses. The rest of an allowed connection's first bytes never looks like one.
 */
export function startsFirstFlight(data: Buffer): boolean {
  const k = parseFirstFlight(data).kind;
  return k === 'tls' || k === 'http' || k === 'more';
}

/**
 * `items` reordered in turns by key: the first item of every key (keys in order of first
 * appearance), then the second of every key, and so on; each key's items keep their order.
 * The gate takes its queue so, by sandbox: one sandbox's burst does not stand between
 * another's first flight and its verdict.
 */
export function takeTurns<T>(items: T[], key: (t: T) => number | string): T[] {
  const byKey = new Map<number | string, T[]>();
  for (const t of items) {
    const k = key(t);
    const list = byKey.get(k);
    if (list) list.push(t);
    else byKey.set(k, [t]);
  }
  if (byKey.size <= 1) return items;
  const lists = [...byKey.values()];
  const out: T[] = [];
  for (let i = 0; out.length < items.length; i++) for (const l of lists) if (i < l.length) out.push(l[i]);
  return out;
}
