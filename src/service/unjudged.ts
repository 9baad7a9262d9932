// Packets of name-checked connections that the name gate dropped with no verdict: the
// daemon was down, or its queue was full (core/name-check.ts SKB_MARK_NAME_QUEUED). The
// drop needs no daemon; this reports it, exactly once, as events and counts.
//
// The kernel counts them by source address (a set element with a counter each). What has
// been reported is kept in the state store, written in the same transaction as the events
// that report it, so a daemon that dies between the two neither loses a count nor reports
// one twice. Every `up` (so every daemon start) rebuilds the gate's table and its counters
// start again: what they held beyond what was reported is carried over first (carry()).
import type { Store } from '../store/store.js';

/** Dropped packets of one sandbox, as one event reports them. */
export interface UnjudgedDrop {
  time: number;
  sandbox: string;
  ip: string;
  packets: number;
}

/**
 * The kernel side: the per-source counts, undefined when the gate's table is not there. Read
 * every second: listing the small set costs ~0.1 ms, where libnftables 1.0.6 lists named
 * counters of every table (7 ms beside a table of 5,000 sandboxes).
 */
export interface UnjudgedCounters {
  bySource(): Map<string, number> | undefined;
}

/** Store keys: the counts already reported, by source; drops carried over a rebuild, not reported yet. */
const SEEN = 'name_gate_unjudged_seen';
const CARRIED = 'name_gate_unjudged_carried';

export class UnjudgedTally {
  constructor(
    private readonly store: Store,
    private readonly kernel: UnjudgedCounters,
    private readonly sandboxAt: (ip: string) => string | undefined,
  ) {}

  /** Before the gate's table is rebuilt: what its counters hold and nobody reported, kept in the store. */
  carry(now = Date.now()): void {
    const counts = this.kernel.bySource();
    if (!counts) return;
    const carried = [...this.carried(), ...this.gained(counts, now)];
    this.store.transaction(() => {
      this.store.setMeta(CARRIED, JSON.stringify(carried));
      this.store.setMeta(SEEN, '{}');
    });
  }

  /**
   * What to report now: drops carried over a rebuild, and what the counters gained since the
   * last report. `report` writes them (events, counts) and runs inside the transaction that
   * records them as reported. Nothing is written when nothing was gained.
   */
  poll(report: (drops: UnjudgedDrop[]) => void, now = Date.now()): number {
    const carried = this.carried();
    const counts = this.kernel.bySource();
    const drops = [...carried, ...(counts ? this.gained(counts, now) : [])];
    if (drops.length === 0) return 0;
    this.store.transaction(() => {
      report(drops);
      if (carried.length > 0) this.store.setMeta(CARRIED, '[]');
      if (counts) this.store.setMeta(SEEN, JSON.stringify(Object.fromEntries(counts)));
    });
    return drops.length;
  }

  /** Per source, what the counters hold beyond what was reported (an element that expired and came back starts at 0). */
  private gained(counts: Map<string, number>, now: number): UnjudgedDrop[] {
    const seen = this.seen();
    const out: UnjudgedDrop[] = [];
    for (const [ip, n] of counts) {
      const before = seen[ip] ?? 0;
      const packets = n >= before ? n - before : n;
      if (packets > 0) out.push({ time: now, sandbox: this.sandboxAt(ip) ?? '', ip, packets });
    }
    return out;
  }

  private seen(): Record<string, number> {
    return parse(this.store.getMeta(SEEN), {});
  }

  private carried(): UnjudgedDrop[] {
    return parse(this.store.getMeta(CARRIED), []);
  }
}

function parse<T>(s: string | undefined, fallback: T): T {
  if (!s) return fallback;
  try {
    return JSON.parse(s) as T;
  } catch {
    return fallback;
  }
}
