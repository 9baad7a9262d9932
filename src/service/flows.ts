// The audit log of allowed flows: every connection (or UDP/ICMP flow) a sandbox opened, as
// conntrack tells it (kernel/flow-worker.ts), attributed to the sandbox and to the name it
// was opened for where that is known, kept in SQLite (same database as the denial events)
// up to `flowRetention` rows, for `toastnet events --flows` and GET /v1/flows.
//
// Records are appended, never rewritten: one when the kernel confirms a flow (state open;
// the kernel's new event carries no counters) and one when the entry goes (state closed,
// with its packets and bytes each way and both times), paired by `conntrackId`. Appending keeps a
// batch one INSERT per event and lets a follower poll by id (an updated row would never
// show up after `since`). A flow's closed record comes when conntrack reaps the entry: after
// its timeout (a closed TCP connection's TIME_WAIT is 120 s by default), plus up to 60 s
// until the garbage collector's next scan (gc_worker's longest interval).
//
// A flow belongs to the sandbox that had its source address when it was opened: the
// sandbox is looked up at the open record and remembered by conntrack id for the close,
// since the address may by then be another sandbox's (or nobody's: a removed sandbox's
// flows are deleted, which is their close). A flow whose open this daemon did not see (it
// started earlier) is attributed at its close.
import type { Worker } from 'node:worker_threads';
import type Database from 'better-sqlite3';
import type { CtEvent } from '../kernel/conntrack-events.js';
import type { FlowWorkerData, FlowWorkerMessage } from '../kernel/flow-worker.js';
import type { FlowCounts, FlowQuery, FlowRecord } from '../api/types.js';
import { startKernelReader } from './kernel-reader.js';

export type { FlowRecord };

const PROTO_NAMES: Record<number, string> = { 1: 'icmp', 6: 'tcp', 17: 'udp', 132: 'sctp' };
/** Flows remembered between their open and close records (conntrack's default table is 262,144 entries). */
const MAX_OPEN = 262_144;
/** Addresses remembered per sandbox with the name they were answered for. */
const MAX_NAMES_PER_SANDBOX = 4096;
const MAX_SANDBOXES_WITH_NAMES = 10_000;
/**
 * The socket's receive buffer: what absorbs a burst while the worker is descheduled. An
 * event takes ~1 KiB of buffer (skb overhead included), so 64 MiB holds ~60,000 events, a
 * few seconds at the measured rates (docs/performance.md).
 */
const RECEIVE_BUFFER = 64 << 20;
/** Events the main thread may fall behind by before the worker stops reading (~10 s at 20,000 events a second; ~300 bytes each while queued). */
const MAX_BACKLOG = 200_000;

export interface FlowOwner {
  id: number;
  name: string;
}

export interface FlowSources {
  /** The sandbox with this address now. */
  sandboxAt(ip: string): FlowOwner | undefined;
  /** The name a name check saw on this connection (TLS SNI, HTTP Host), if it was judged. */
  checkedName?(src: string, sport: number, dst: string, dport: number): string | undefined;
}

interface Open {
  sandbox: string;
  sandboxId: number;
  start: number;
  name?: string;
}

type Row = {
  id: number; time: number; sandbox: string; state: 'open' | 'closed'; start: number; end: number | null; proto: string;
  src: string; sport: number; dst: string; dport: number; sent_packets: number | null; sent_bytes: number | null;
  received_packets: number | null; received_bytes: number | null; name: string | null; ct_id: number;
};

export class FlowLog {
  private readonly insert;
  private readonly trim;
  private readonly waiters = new Set<() => void>();
  private readonly open = new Map<string, Open>();
  /** By sandbox id: address -> the name the resolver answered with it (newest last). */
  private readonly answered = new Map<number, Map<string, string>>();
  private worker?: Worker;
  private progress?: Int32Array;
  private writeFailures = 0;
  /** Since this log started: records written, events the kernel dropped (socket buffer full), events whose write failed, events of no sandbox. */
  readonly counts: FlowCounts = { recorded: 0, dropped: { kernel: 0, daemon: 0 }, unattributed: 0 };

  constructor(private readonly db: Database.Database, private readonly retention = 1_000_000) {
    db.exec(`CREATE TABLE IF NOT EXISTS flows (
      id INTEGER PRIMARY KEY, time INTEGER NOT NULL, sandbox TEXT NOT NULL, state TEXT NOT NULL,
      start INTEGER NOT NULL, end INTEGER, proto TEXT NOT NULL, src TEXT NOT NULL, sport INTEGER NOT NULL, dst TEXT NOT NULL, dport INTEGER NOT NULL,
      sent_packets INTEGER, sent_bytes INTEGER, received_packets INTEGER, received_bytes INTEGER, name TEXT, ct_id INTEGER NOT NULL)`);
    // No AUTOINCREMENT (its sequence table is one more write per row): ids still only grow,
    // since the trim below deletes the oldest rows and never the newest.
    db.exec('CREATE INDEX IF NOT EXISTS flows_by_sandbox ON flows (sandbox, id)');
    this.insert = db.prepare(`INSERT INTO flows (time, sandbox, state, start, end, proto, src, sport, dst, dport, sent_packets, sent_bytes, received_packets, received_bytes, name, ct_id)
      VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`);
    // By primary key range: deletes only the rows beyond the bound, however large the table.
    this.trim = db.prepare('DELETE FROM flows WHERE id <= (SELECT max(id) FROM flows) - ?');
  }

  /** Starts reading conntrack events for sandboxes of `subnet` (network/mask as numbers). */
  start(o: { network: number; mask: number; gateway: string }, sources: FlowSources, log: (m: string) => void): Promise<{ receiveBuffer: number }> {
    const progress = new SharedArrayBuffer(4);
    this.progress = new Int32Array(progress);
    const data: FlowWorkerData = { ...o, receiveBuffer: RECEIVE_BUFFER, maxBacklog: MAX_BACKLOG, progress };
    const r = startKernelReader<FlowWorkerMessage, { receiveBuffer: number }>('flow-worker', data, 'flows', (m) => {
      if (m.events) {
        Atomics.add(this.progress!, 0, m.events.length);
        Atomics.notify(this.progress!, 0);
        try {
          this.record(m.events, sources);
        } catch (err) {
          // The database refused the batch (full disk, say): its events are lost, and counted.
          this.counts.dropped.daemon += m.events.length;
          if (this.writeFailures++ % 1000 === 0) log(`flows: ${m.events.length} events not written: ${(err as Error).message}`);
        }
      }
      if (m.kernelDrops !== undefined) this.counts.dropped.kernel = m.kernelDrops;
    }, log);
    this.worker = r.worker;
    return r.ready;
  }

  async stop(): Promise<void> {
    await this.worker?.terminate();
    this.worker = undefined;
    for (const w of this.waiters) w();
  }

  /** The resolver answered `name` with `addresses` to sandbox `sandboxId`: a flow to one of them was opened for that name. */
  noteAnswer(sandboxId: number, name: string, addresses: string[]): void {
    if (addresses.length === 0) return;
    let m = this.answered.get(sandboxId);
    if (!m) {
      if (this.answered.size >= MAX_SANDBOXES_WITH_NAMES) this.answered.delete(this.answered.keys().next().value!);
      this.answered.set(sandboxId, (m = new Map()));
    }
    for (const a of addresses) {
      m.delete(a); // re-inserted: newest last
      m.set(a, name);
      if (m.size > MAX_NAMES_PER_SANDBOX) m.delete(m.keys().next().value!);
    }
  }

  /** A removed sandbox's answers are forgotten (its id is never reused). */
  forget(sandboxId: number): void {
    this.answered.delete(sandboxId);
  }

  /** Writes one batch of events in one transaction, then enforces the retention bound. */
  record(events: CtEvent[], sources: FlowSources, now = Date.now()): void {
    let written = 0;
    this.db.transaction(() => {
      for (const e of events) {
        const key = `${e.id}/${e.src}:${e.sport}>${e.dst}:${e.dport}/${e.proto}`;
        let o = this.open.get(key);
        if (e.kind === 'destroy') this.open.delete(key);
        if (!o) {
          const s = sources.sandboxAt(e.src);
          if (!s) {
            this.counts.unattributed++;
            continue;
          }
          o = { sandbox: s.name, sandboxId: s.id, start: e.start ?? now, name: this.answered.get(s.id)?.get(e.dst) };
          if (e.kind === 'new') {
            if (this.open.size >= MAX_OPEN) this.open.delete(this.open.keys().next().value!);
            this.open.set(key, o);
          }
        }
        const name = (e.proto === 6 ? sources.checkedName?.(e.src, e.sport, e.dst, e.dport) : undefined) ?? o.name;
        const closed = e.kind === 'destroy';
        this.insert.run(
          now, o.sandbox, closed ? 'closed' : 'open', e.start ?? o.start, closed ? (e.stop ?? now) : null, PROTO_NAMES[e.proto] ?? String(e.proto),
          e.src, e.sport, e.dst, e.dport, e.origPackets ?? null, e.origBytes ?? null, e.replyPackets ?? null, e.replyBytes ?? null, name ?? null, e.id,
        );
        written++;
      }
      if (written > 0) this.trim.run(this.retention);
    })();
    this.counts.recorded += written;
    if (written === 0) return;
    for (const w of this.waiters) w();
    this.waiters.clear();
  }

  list(o: FlowQuery = {}): FlowRecord[] {
    const limit = Math.min(Math.max(o.limit ?? 100, 1), 10_000);
    const rows = this.db.prepare(`SELECT * FROM flows WHERE id > ? ${o.sandbox ? 'AND sandbox = ?' : ''} ORDER BY id DESC LIMIT ?`)
      .all(...[o.since ?? 0, ...(o.sandbox ? [o.sandbox] : []), limit]) as Row[];
    return rows.reverse().map(toRecord);
  }

  /** Rows kept now (at most the retention bound). */
  size(): number {
    return (this.db.prepare('SELECT count(*) AS n FROM flows').get() as { n: number }).n;
  }

  /** Resolves when new records arrive or after `ms` (long polling for `events --flows --follow`). */
  wait(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.waiters.delete(done);
        resolve();
      }, ms);
      const done = () => {
        clearTimeout(t);
        resolve();
      };
      this.waiters.add(done);
    });
  }
}

function toRecord(r: Row): FlowRecord {
  const iso = (ms: number) => new Date(ms).toISOString();
  return {
    id: r.id,
    time: iso(r.time),
    sandbox: r.sandbox,
    state: r.state,
    start: iso(r.start),
    ...(r.end !== null ? { end: iso(r.end) } : {}),
    proto: r.proto,
    src: r.src,
    sport: r.sport,
    dst: r.dst,
    dport: r.dport,
    ...(r.sent_packets !== null ? { sent: { packets: r.sent_packets, bytes: r.sent_bytes ?? 0 }, received: { packets: r.received_packets ?? 0, bytes: r.received_bytes ?? 0 } } : {}),
    ...(r.name !== null ? { name: r.name } : {}),
    conntrackId: r.ct_id,
  };
}
