// Denial events: what the kernel logged to NFLOG (tn:<reason> prefixes), attributed to a
// sandbox and to the rule that decided, kept in SQLite (capped) for `toastnet events` and
// the API. The kernel rate-limits the logging itself, so a flood cannot fill the host.
import type { Worker } from 'node:worker_threads';
import type Database from 'better-sqlite3';
import { DENY_REASONS, DenyReason } from '../core/deny-reasons.js';
import type { LoggedPacket } from '../kernel/nflog-codec.js';
import type { DenialEvent, DnsQueryRecord, QueryLogEntry } from '../api/types.js';
import { startKernelReader } from './kernel-reader.js';

// The records the API answers with live with its types (api/types.ts), which the client
// package exports without this module's native imports.
export type { DenialEvent, DnsQueryRecord };

const PROTO_NAMES: Record<number, string> = { 1: 'icmp', 6: 'tcp', 17: 'udp' };
const KEEP = 100_000;

/**
 * At most `rate` per second (bursts of `burst`) per key: what keeps a sandbox flooding the
 * resolver from turning every refused query into a database write.
 */
export class LogLimiter<K = string> {
  private readonly buckets = new Map<K, { tokens: number; at: number }>();

  constructor(private readonly rate = 20, private readonly burst = 50) {}

  allow(key: K, now = performance.now()): boolean {
    let b = this.buckets.get(key);
    if (!b) this.buckets.set(key, (b = { tokens: this.burst, at: now }));
    b.tokens = Math.min(this.burst, b.tokens + (Math.max(0, now - b.at) / 1000) * this.rate);
    b.at = now;
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }

  forget(key: K): void {
    this.buckets.delete(key);
  }
}

export interface Attribution {
  sandbox: string;
  rule: string;
  action: 'blocked' | 'reported';
}

export class EventLog {
  private readonly insert;
  private readonly insertNamed;
  private readonly waiters = new Set<() => void>();
  private worker?: Worker;
  private inserted = 0;
  /** Logged denials by reason since this log started (for metrics). */
  readonly byReason: Record<string, number> = {};

  constructor(private readonly db: Database.Database) {
    db.exec(`CREATE TABLE IF NOT EXISTS events (
      id INTEGER PRIMARY KEY AUTOINCREMENT, time INTEGER NOT NULL, sandbox TEXT NOT NULL, reason TEXT NOT NULL,
      rule TEXT NOT NULL, action TEXT NOT NULL, src TEXT NOT NULL, dst TEXT NOT NULL, proto TEXT NOT NULL, dport INTEGER)`);
    db.exec('CREATE INDEX IF NOT EXISTS events_by_sandbox ON events (sandbox, id)');
    // The name a name check saw (added after the table's first version: older stores gain it).
    addColumnIfMissing(db, 'events', 'name', 'TEXT');
    // How many packets a record stands for, where one stands for many (name_unjudged).
    addColumnIfMissing(db, 'events', 'packets', 'INTEGER');
    this.insert = db.prepare('INSERT INTO events (time, sandbox, reason, rule, action, src, dst, proto, dport, name) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)');
    this.insertNamed = db.prepare('INSERT INTO events (time, sandbox, reason, rule, action, src, dst, proto, dport, name) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)');
    this.insertCounted = db.prepare("INSERT INTO events (time, sandbox, reason, rule, action, src, dst, proto, dport, name, packets) VALUES (?, ?, ?, ?, 'blocked', ?, '', 'tcp', NULL, NULL, ?)");
  }

  private readonly insertCounted;

  /** Starts reading NFLOG `group`; `attribute` names the sandbox and rule of a logged packet. */
  start(group: number, attribute: (p: LoggedPacket, reason: DenyReason) => Attribution | undefined, log: (m: string) => void): Promise<void> {
    const r = startKernelReader<{ packets?: LoggedPacket[] }>('nflog-worker', { group }, 'NFLOG', (m) => {
      if (m.packets) this.record(m.packets, attribute);
    }, log);
    this.worker = r.worker;
    return r.ready.then(() => undefined);
  }

  async stop(): Promise<void> {
    await this.worker?.terminate();
    this.worker = undefined;
    for (const w of this.waiters) w();
  }

  record(packets: LoggedPacket[], attribute: (p: LoggedPacket, reason: DenyReason) => Attribution | undefined): void {
    let n = 0;
    for (const p of packets) {
      const m = /^tn:([a-z_]+) ?$/.exec(p.prefix);
      if (!m || !(m[1] in DENY_REASONS)) continue;
      const reason = m[1] as DenyReason;
      const a = attribute(p, reason);
      if (!a) continue;
      this.insert.run(p.time, a.sandbox, reason, a.rule, a.action, p.src, p.dst, PROTO_NAMES[p.proto] ?? String(p.proto), p.dport ?? null);
      this.byReason[reason] = (this.byReason[reason] ?? 0) + 1;
      n++;
    }
    this.afterInsert(n);
  }

  /** A connection a name check judged against (core/name-check.ts): its name, if it sent one. */
  recordNameMismatch(e: { time: number; sandbox: string; why: string; reported: boolean; src: string; dst: string; dport: number; name?: string }): void {
    this.insertNamed.run(e.time, e.sandbox, 'name_mismatch', e.why, e.reported ? 'reported' : 'blocked', e.src, e.dst, 'tcp', e.dport, e.name ?? null);
    this.byReason.name_mismatch = (this.byReason.name_mismatch ?? 0) + 1;
    this.afterInsert(1);
  }

  /**
   * Packets of a name-checked sandbox that the gate dropped with no verdict (the daemon down
   * or its queue full: service/unjudged.ts), as one record that counts them. The destination
   * is not known: the kernel counts by source.
   */
  recordUnjudged(e: { time: number; sandbox: string; ip: string; packets: number }): void {
    this.insertCounted.run(e.time, e.sandbox, 'name_unjudged', 'name gate: no verdict (the daemon down or its queue full)', e.ip, e.packets);
    this.afterInsert(1);
  }

  /** Counts unjudged packets in the metrics' denials, once their record is written (recordUnjudged runs inside a transaction that may yet fail). */
  countUnjudged(packets: number): void {
    this.byReason.name_unjudged = (this.byReason.name_unjudged ?? 0) + packets;
  }

  /** A refused DNS query as a denial event (the destination is the name asked). */
  recordQuery(e: QueryLogEntry, now = Date.now()): void {
    this.insert.run(now, e.sandbox, 'domain', e.reason ?? 'egress.domains', 'blocked', '', e.name, 'dns', null);
    this.byReason.domain = (this.byReason.domain ?? 0) + 1;
    this.afterInsert(1);
  }

  list(o: { sandbox?: string; since?: number; limit?: number } = {}): DenialEvent[] {
    const limit = Math.min(Math.max(o.limit ?? 100, 1), 10_000);
    const rows = this.db.prepare(`SELECT * FROM events WHERE id > ? ${o.sandbox ? 'AND sandbox = ?' : ''} ORDER BY id DESC LIMIT ?`)
      .all(...[o.since ?? 0, ...(o.sandbox ? [o.sandbox] : []), limit]) as (Omit<DenialEvent, 'time' | 'dport' | 'name' | 'packets'> & { time: number; dport: number | null; name: string | null; packets: number | null })[];
    return rows.reverse().map(({ name, packets, ...r }) => ({
      ...r, time: new Date(r.time).toISOString(), dport: r.dport ?? undefined, ...(name !== null ? { name } : {}), ...(packets !== null ? { packets } : {}),
    }));
  }

  /** After `n` rows went in: the table trimmed to KEEP rows every 1,000, and whoever waits for events woken. */
  private afterInsert(n: number): void {
    const before = this.inserted;
    this.inserted += n;
    if (Math.floor(this.inserted / 1000) > Math.floor(before / 1000)) this.db.prepare('DELETE FROM events WHERE id <= (SELECT max(id) FROM events) - ?').run(KEEP);
    for (const w of this.waiters) w();
    this.waiters.clear();
  }

  /** Resolves when new events arrive or after `ms` (long polling for `events --follow`). */
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

/** Adds a column that a later version of a table has, to a store made by an earlier one. */
function addColumnIfMissing(db: Database.Database, table: string, column: string, type: string): void {
  if (!(db.prepare(`PRAGMA table_info(${table})`).all() as { name: string }[]).some((c) => c.name === column)) db.exec(`ALTER TABLE ${table} ADD COLUMN ${column} ${type}`);
}

/** Rows of the query log written by one INSERT (8 parameters each: far under SQLite's 32,766). */
const ROWS_PER_INSERT = 100;

/** A query log entry waiting to be written: when first seen, what, and how many identical ones came in its window. */
type Queued = [time: number, entry: QueryLogEntry, count: number];

/**
 * The per-sandbox DNS query log: name, type, answer, verdict (capped like events).
 * Identical entries of one sandbox queued for the same write (the writes come every 100 ms,
 * at 1,000 distinct entries, and when the log is read) are one row with a count: the log's cost then follows the distinct questions, not the query rate (a row per
 * query was 30 % of the resolver's time on cache hits under load), and a sandbox repeating
 * one question thousands of times a second cannot push every other entry out of the
 * capped log within seconds.
 */
export class DnsLog {
  private readonly insert;
  private readonly answered;
  private inserted = 0;

  constructor(private readonly db: Database.Database) {
    db.exec(`CREATE TABLE IF NOT EXISTS dns_queries (
      id INTEGER PRIMARY KEY AUTOINCREMENT, time INTEGER NOT NULL, sandbox TEXT NOT NULL, name TEXT NOT NULL,
      type TEXT NOT NULL, verdict TEXT NOT NULL, answer TEXT NOT NULL, reason TEXT)`);
    db.exec('CREATE INDEX IF NOT EXISTS dns_queries_by_sandbox ON dns_queries (sandbox, id)');
    // How many identical queries a row stands for (added after the table's first version: older stores gain it; NULL is 1).
    addColumnIfMissing(db, 'dns_queries', 'count', 'INTEGER');
    this.insert = db.prepare('INSERT INTO dns_queries (time, sandbox, name, type, verdict, answer, reason, count) VALUES (?, ?, ?, ?, ?, ?, ?, ?)');
    this.answered = db.prepare("SELECT time, name, answer FROM dns_queries WHERE sandbox = ? AND time >= ? AND verdict IN ('answered', 'stripped') AND answer != '' ORDER BY id");
    this.insertMany = db.prepare(`INSERT INTO dns_queries (time, sandbox, name, type, verdict, answer, reason, count) VALUES ${Array(ROWS_PER_INSERT).fill('(?, ?, ?, ?, ?, ?, ?, ?)').join(', ')}`);
  }

  /** Inserts ROWS_PER_INSERT rows in one statement. */
  private readonly insertMany;

  private queue: Queued[] = [];
  /** The entries of `queue` by what makes two identical. */
  private queuedByKey = new Map<string, Queued>();
  private flushTimer?: NodeJS.Timeout;

  /**
   * Queues an entry, or counts it with an identical one queued already; entries are written
   * in one transaction per 100 ms (one insert per query would cost the resolver ~20 %).
   */
  record(e: QueryLogEntry, now = Date.now()): void {
    const key = `${e.sandbox}\0${e.name}\0${e.type}\0${e.verdict}\0${e.answer.join(',')}\0${e.reason ?? ''}`;
    const same = this.queuedByKey.get(key);
    if (same) {
      same[2]++;
      return;
    }
    if (this.queue.length >= 100_000) return; // the database is not keeping up: drop, never grow without bound
    const q: Queued = [now, e, 1];
    this.queue.push(q);
    this.queuedByKey.set(key, q);
    if (this.queue.length >= 1000) this.flush();
    else if (!this.flushTimer) {
      this.flushTimer = setTimeout(() => this.flush(), 100);
      this.flushTimer.unref();
    }
  }

  /**
   * The answers with addresses `sandbox` was given since `since` (ms), oldest first: what a
   * restarted daemon takes back for name checks without an allow-list. Rows still waiting
   * to be written are written first.
   */
  answeredSince(sandbox: string, since: number): { time: number; name: string; answer: string[] }[] {
    this.flush();
    const rows = this.answered.all(sandbox, since) as { time: number; name: string; answer: string }[];
    return rows.map((r) => ({ time: r.time, name: r.name, answer: r.answer.split(',') }));
  }

  flush(): void {
    if (this.flushTimer) clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    const batch = this.queue;
    this.queue = [];
    this.queuedByKey = new Map();
    if (batch.length === 0) return;
    const row = ([t, e, n]: Queued) => [t, e.sandbox, e.name, e.type, e.verdict, e.answer.join(','), e.reason ?? null, n === 1 ? null : n];
    this.db.transaction(() => {
      // Many rows a statement: one run() per row cost the resolver ~4 us a query at 20,000 queries/s.
      let i = 0;
      for (; i + ROWS_PER_INSERT <= batch.length; i += ROWS_PER_INSERT) this.insertMany.run(batch.slice(i, i + ROWS_PER_INSERT).flatMap(row));
      for (; i < batch.length; i++) this.insert.run(row(batch[i]));
    })();
    this.inserted += batch.length;
    if (this.inserted >= 1000) {
      this.inserted = 0;
      this.db.prepare('DELETE FROM dns_queries WHERE id <= (SELECT max(id) FROM dns_queries) - ?').run(KEEP);
    }
  }

  list(o: { sandbox?: string; since?: number; limit?: number } = {}): DnsQueryRecord[] {
    this.flush();
    const limit = Math.min(Math.max(o.limit ?? 100, 1), 10_000);
    const rows = this.db.prepare(`SELECT * FROM dns_queries WHERE id > ? ${o.sandbox ? 'AND sandbox = ?' : ''} ORDER BY id DESC LIMIT ?`)
      .all(...[o.since ?? 0, ...(o.sandbox ? [o.sandbox] : []), limit]) as (Omit<DnsQueryRecord, 'time' | 'answer' | 'reason' | 'count'> & { time: number; answer: string; reason: string | null; count: number | null })[];
    return rows.reverse().map(({ count, ...r }) => ({
      ...r, time: new Date(r.time).toISOString(), answer: r.answer ? r.answer.split(',') : [], reason: r.reason ?? undefined, ...(count !== null ? { count } : {}),
    }));
  }
}
