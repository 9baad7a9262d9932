// The daemon's side of the name checks (core/name-check.ts): starts the gate's reader
// (kernel/name-check-worker.ts), keeps it told of every checked sandbox's policy by
// address and (checks without an allow-list) of what its DNS answered, and turns what it
// judged into denial events and per-sandbox counts.
import type { Worker } from 'node:worker_threads';
import { GateUpdate, answerClockMs, checksAnswers, nameCheckPolicy } from '../core/name-check.js';
import type { NameJudgement } from '../kernel/name-check-worker.js';
import type { LiveSandboxes, LiveSpec } from './live-sandboxes.js';
import type { EventLog } from './events.js';
import type { NameGateCounters } from '../api/types.js';
import type { UnjudgedTally } from './unjudged.js';
import { startKernelReader } from './kernel-reader.js';

export interface NameCheckCounts {
  /** Connections whose first flight named what they may (an allowed domain, or what the sandbox's DNS answered). */
  allowed: number;
  /** Connections reset (or, in report mode, reported) for naming something else, or nothing. */
  mismatched: number;
  /** Packets dropped with no verdict: the daemon down or its queue full (service/unjudged.ts). */
  unjudged: number;
}

/** Judged connections remembered with their name for the flow log (oldest forgotten first). */
const NAMES_KEPT = 65_536;

export class NameChecks {
  private worker?: Worker;
  private readonly counts = new Map<number, NameCheckCounts>();
  private queue?: number;
  private gate = { packets: 0, judged: 0, mismatched: 0, busyMs: 0, unjudged: 0 };
  private unjudgedTimer?: NodeJS.Timeout;
  /** "src:sport>dst:dport" -> the name the connection sent; bounded by count, not time (a flow's closed record comes minutes later). */
  private readonly names = new Map<string, string>();
  /** Where answers are taken back from (takeBackAnswers), once the daemon gave it. */
  private history?: AnswerHistory;

  constructor(private readonly live: LiveSandboxes, private readonly events: EventLog) {}

  /** Starts reading queue `queue`; every live sandbox's policy is posted before the first packet is read. */
  start(queue: number, log: (m: string) => void): Promise<void> {
    this.queue = queue;
    const r = startKernelReader<{ judged?: NameJudgement[]; work?: { packets: number; busyMs: number } }, { raised: boolean }>('name-check-worker', { queue }, 'name checks', (m) => {
      if (m.work) {
        this.gate.packets += m.work.packets;
        this.gate.busyMs += m.work.busyMs;
      }
      if (m.judged) this.record(m.judged);
    }, log);
    this.worker = r.worker;
    // Every live sandbox's policy before the first packet is read (messages arrive in order).
    this.worker.postMessage(this.live.specs().map((s) => update(s.ip, s)));
    this.live.onChange = (ip, s, before) => {
      this.worker?.postMessage([update(ip, s)]);
      // Checks without an allow-list turned on for a sandbox already there: what it was
      // answered before is taken back from the query log, after its policy (messages arrive
      // in order). A sandbox just made has nothing to take back, and its create no query.
      if (!s || !checksAnswers(s.policy) || before?.id !== s.id || checksAnswers(before.policy)) return;
      // Called inside the engine's policy change: a failed read of the log is said, never thrown there.
      try {
        this.takeBackFor(s);
      } catch (err) {
        log(`name checks: taking back answers from the query log: ${(err as Error).message}`);
      }
    };
    return r.ready.then(({ raised }) => {
      // Not fatal: the gate works, but a sandbox flooding the machine with processes can delay it.
      if (!raised) log('name checks: the reader runs at normal priority: it could not take nice -10 (no CAP_SYS_NICE?)');
    });
  }

  /**
   * Tells the reader that `name` gave the sandbox `addresses` for `ttl` seconds (checks
   * without an allow-list): posted before the answer leaves the resolver, so the reader has
   * it before any connection that follows the answer.
   */
  answered(s: { id: number; ip: string }, name: string, addresses: string[], ttl: number): void {
    const u: GateUpdate = { ip: s.ip, id: s.id, answer: { name, addresses, until: answerClockMs() + ttl * 1000 } };
    this.worker?.postMessage([u]);
  }

  /**
   * What the reader is missing of the query log: for each sandbox checked without an
   * allow-list, the answers the log kept from the last `maxTtl` seconds, posted as if given
   * now, each valid `maxTtl` seconds from when it was given (the log keeps no TTL: the
   * longest an admission lasts). Now for every such sandbox (a restarted daemon), and later
   * for each sandbox whose checks turn on (so its cut connections can reconnect to what it
   * was answered before). Only what the sandbox of that name was given since it was made
   * (or acquired from the pool, `createdAt`): names are reused, another's answers are not its.
   * Returns how many answers were posted.
   */
  takeBackAnswers(history: AnswerHistory): number {
    this.history = history;
    let posted = 0;
    for (const s of this.live.specs()) posted += this.takeBackFor(s);
    return posted;
  }

  private takeBackFor(s: LiveSpec, now = Date.now()): number {
    const at = this.live.at(s.ip);
    const h = this.history;
    const made = at && h?.createdAt(at.name);
    if (!this.worker || !h || !checksAnswers(s.policy) || !at || made === undefined) return 0;
    const clock = answerClockMs() - now; // wall time -> the answers' clock
    const updates: GateUpdate[] = h.log.answeredSince(at.name, Math.max(made, now - h.maxTtl * 1000))
      .map((e) => ({ ip: s.ip, id: s.id, answer: { name: e.name, addresses: e.answer, until: e.time + clock + h.maxTtl * 1000 } }));
    if (updates.length > 0) this.worker.postMessage(updates);
    return updates.length;
  }

  /** The reader's work so far (status), undefined when it is not running. */
  get counters(): NameGateCounters | undefined {
    return this.worker && this.queue !== undefined ? { queue: this.queue, ...this.gate, busyMs: Math.round(this.gate.busyMs * 1000) / 1000 } : undefined;
  }

  private record(judged: NameJudgement[]): void {
    for (const j of judged) {
      this.gate.judged++;
      if (j.verdict === 'deny') this.gate.mismatched++;
      if (j.name !== undefined) {
        if (this.names.size >= NAMES_KEPT) this.names.delete(this.names.keys().next().value!);
        this.names.set(`${j.src}:${j.sport}>${j.dst}:${j.dport}`, j.name);
      }
      const at = this.live.at(j.src);
      if (!at) continue;
      const c = this.countsFor(at.spec.id);
      if (j.verdict === 'allow') {
        c.allowed++;
        continue;
      }
      c.mismatched++;
      this.events.recordNameMismatch({ time: j.time, sandbox: at.name, why: j.why ?? 'name check', reported: j.reported, src: j.src, dst: j.dst, dport: j.dport, name: j.name });
    }
  }

  private countsFor(id: number): NameCheckCounts {
    let c = this.counts.get(id);
    if (!c) this.counts.set(id, (c = { allowed: 0, mismatched: 0, unjudged: 0 }));
    return c;
  }

  /**
   * Reports, every `everyMs` and once now, what the gate dropped with no verdict (the kernel
   * counts it, service/unjudged.ts): an event per sandbox and poll, and counts.
   */
  reportUnjudged(tally: UnjudgedTally, log: (m: string) => void, everyMs = 1000): void {
    const poll = () => {
      try {
        // The events in the transaction that marks the drops reported; the counts in memory
        // once it committed (a failed write reports them again at the next poll).
        const drops = tally.poll((ds) => {
          for (const d of ds) this.events.recordUnjudged(d);
        });
        for (const d of drops) {
          this.events.countUnjudged(d.packets);
          this.gate.unjudged += d.packets;
          const at = this.live.at(d.ip);
          if (at && at.name === d.sandbox) this.countsFor(at.spec.id).unjudged += d.packets;
        }
      } catch (err) {
        log(`name checks: reading the unjudged count: ${(err as Error).message}`);
      }
    };
    poll();
    this.unjudgedTimer = setInterval(poll, everyMs);
    this.unjudgedTimer.unref();
  }

  /** The name a judged TCP connection sent first (TLS SNI, HTTP Host), while remembered. */
  nameOf(src: string, sport: number, dst: string, dport: number): string | undefined {
    return this.names.get(`${src}:${sport}>${dst}:${dport}`);
  }

  countsOf(id: number): NameCheckCounts | undefined {
    return this.counts.get(id);
  }

  async stop(): Promise<void> {
    clearInterval(this.unjudgedTimer);
    this.live.onChange = undefined;
    await this.worker?.terminate();
    this.worker = undefined;
  }
}

/** The query log as takeBackAnswers reads it, and for how long an answer counts. */
export interface AnswerHistory {
  log: { answeredSince(sandbox: string, since: number): { time: number; name: string; answer: string[] }[] };
  createdAt: (name: string) => number | undefined;
  maxTtl: number;
}

function update(ip: string, s: LiveSpec | undefined): GateUpdate {
  const policy = s ? nameCheckPolicy(s.policy) : undefined;
  return policy ? { ip, id: s!.id, policy } : { ip, id: s?.id ?? 0 };
}
