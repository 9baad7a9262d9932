// Packets of name-checked connections that the name gate dropped with no verdict: the
// daemon was down, or its queue was full (core/name-check.ts SKB_MARK_NAME_QUEUED). The
// drop needs no daemon; this reports it, once, as events and counts.
//
// The kernel counts them by source address (a set element with a counter each), and the
// set outlives `up`'s rebuilds of the gate's table (core/ruleset.ts nameGateTable), so the
// counts only grow while the instance is up. What has been reported is kept in the state
// store, written in the same transaction as the events that report it: a daemon that dies
// between the two neither loses a count nor reports one twice. Not counted at all (they fail
// closed all the same): packets waiting in the queue when the daemon dies, which the kernel
// drops with the queue, and those in the instant between the gate's rules and its queue rule
// at a rebuild (the chain's policy drops them).
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

/** Store key: the counts already reported, by source. */
const SEEN = 'name_gate_unjudged_seen';

export class UnjudgedTally {
  constructor(
    private readonly store: Store,
    private readonly kernel: UnjudgedCounters,
    private readonly sandboxAt: (ip: string) => string | undefined,
  ) {}

  /**
   * What the counters gained since the last report. `record` writes them (the events) and
   * runs inside the transaction that records them as reported; the drops are returned once
   * that transaction committed (for counts kept in memory). Nothing is written when nothing
   * changed.
   */
  poll(record: (drops: UnjudgedDrop[]) => void, now = Date.now()): UnjudgedDrop[] {
    const counts = this.kernel.bySource();
    if (!counts) return [];
    const seen = parse(this.store.getMeta(SEEN));
    const drops: UnjudgedDrop[] = [];
    for (const [ip, n] of counts) {
      const before = seen[ip] ?? 0;
      // An element that expired (a day without drops) and came back starts at 0.
      const packets = n >= before ? n - before : n;
      if (packets > 0) drops.push({ time: now, sandbox: this.sandboxAt(ip) ?? '', ip, packets });
    }
    // Sources whose element expired are forgotten too, or their next count would be taken
    // for a continuation of the old one.
    const forgotten = Object.keys(seen).some((ip) => !counts.has(ip));
    if (drops.length === 0 && !forgotten) return [];
    this.store.transaction(() => {
      if (drops.length > 0) record(drops);
      this.store.setMeta(SEEN, JSON.stringify(Object.fromEntries(counts)));
    });
    return drops;
  }
}

function parse(s: string | undefined): Record<string, number> {
  if (!s) return {};
  try {
    return JSON.parse(s) as Record<string, number>;
  } catch {
    return {};
  }
}
