// Persistent state of one instance in SQLite (better-sqlite3 v12: synchronous, so a state
// change and its IPAM bookkeeping commit together, and cheap: ~20 µs per statement).
// Only what cannot be derived is stored: names of links, namespaces and MACs follow from
// id, name and address (core/names.ts).
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { ToastnetError } from '../errors.js';
import type { SandboxMode } from '../core/sandbox-elements.js';
import type { PolicyInput } from '../core/policy.js';
import type { PortMapping } from '../core/publish.js';
import { POOL_PREFIX } from '../core/names.js';
import { type RuntimeAttachment, attachmentKey } from '../core/cni.js';
import { migrateModeCheck } from './mode-check.js';
import { TapDevices } from './tap-devices.js';

/** Bounds of the pool members' names on the name index: [POOL_PREFIX, the prefix with its last character + 1). */
const POOL_NAMES: [string, string] = [POOL_PREFIX, POOL_PREFIX.slice(0, -1) + String.fromCharCode(POOL_PREFIX.charCodeAt(POOL_PREFIX.length - 1) + 1)];

export type SandboxState = 'creating' | 'ready';

export interface SandboxRow {
  id: number;
  name: string;
  ip: string;
  mode: SandboxMode;
  state: SandboxState;
  createdAt: number;
  /** The sandbox's own policy document as given (instance defaults not merged in). */
  policy: PolicyInput;
  /** Its published ports (checked when they were given). */
  publish: PortMapping[];
  /** Set when the sandbox is a runtime's namespace attached through CNI (core/cni.ts). */
  attachment?: RuntimeAttachment;
  /** Its labels (a pool member has none until acquired). */
  labels: Record<string, string>;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sandboxes (
  id INTEGER PRIMARY KEY AUTOINCREMENT,      -- never reused: link names derive from it
  name TEXT NOT NULL UNIQUE,
  ip TEXT NOT NULL UNIQUE,                   -- the address lease
  mode TEXT NOT NULL CHECK (mode IN ('veth', 'macvlan', 'tap')),
  state TEXT NOT NULL CHECK (state IN ('creating', 'ready')),
  created_at INTEGER NOT NULL,
  policy TEXT NOT NULL DEFAULT '{}',           -- the sandbox's own policy document (JSON)
  publish TEXT NOT NULL DEFAULT '[]',          -- its published ports (JSON, core/publish.ts)
  labels TEXT NOT NULL DEFAULT '{}'            -- its labels (JSON object)
);
CREATE TABLE IF NOT EXISTS released (ip INTEGER PRIMARY KEY, seq INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS released_by_seq ON released (seq);
-- What the kernel had counted when its table was last rebuilt (up): the kernel's counters
-- start again from zero, and the totals are this plus what they count now.
CREATE TABLE IF NOT EXISTS usage_carried (
  sandbox_id INTEGER PRIMARY KEY,
  out_packets INTEGER NOT NULL DEFAULT 0, out_bytes INTEGER NOT NULL DEFAULT 0,
  in_packets INTEGER NOT NULL DEFAULT 0, in_bytes INTEGER NOT NULL DEFAULT 0,
  blocked_packets INTEGER NOT NULL DEFAULT 0
);
-- Counts read from the kernel just before a rebuild, written ahead of it (meta
-- usage_pending_epoch says which rebuild): folded into usage_carried once the rebuild is
-- known to have happened, dropped if it did not (the kernel still holds them).
CREATE TABLE IF NOT EXISTS usage_pending (
  sandbox_id INTEGER PRIMARY KEY,
  out_packets INTEGER NOT NULL, out_bytes INTEGER NOT NULL,
  in_packets INTEGER NOT NULL, in_bytes INTEGER NOT NULL,
  blocked_packets INTEGER NOT NULL
);
`;

/** Counts carried over a table rebuild (see usage_carried). */
export interface CarriedUsage {
  outPackets: number;
  outBytes: number;
  inPackets: number;
  inBytes: number;
  blockedPackets: number;
}

interface Row {
  id: number;
  name: string;
  ip: string;
  mode: SandboxMode;
  state: SandboxState;
  created_at: number;
  policy: string;
  publish: string;
  attachment: string | null;
  labels: string;
}

const toSandbox = (r: Row): SandboxRow => ({
  id: r.id, name: r.name, ip: r.ip, mode: r.mode, state: r.state, createdAt: r.created_at, policy: JSON.parse(r.policy) as PolicyInput, publish: JSON.parse(r.publish) as PortMapping[],
  ...(r.attachment ? { attachment: JSON.parse(r.attachment) as RuntimeAttachment } : {}),
  labels: JSON.parse(r.labels) as Record<string, string>,
});

export class Store {
  readonly db: Database.Database;
  /** Options of TAP sandboxes' devices. */
  readonly taps: TapDevices;
  private readonly stmts;

  constructor(readonly file: string) {
    fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
    try {
      this.db = new Database(file);
    } catch (err) {
      throw new ToastnetError('not_ready', `state database ${file}: ${(err as Error).message}`);
    }
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = NORMAL');
    this.db.pragma('busy_timeout = 5000');
    this.db.exec(SCHEMA);
    // Databases made before TAP sandboxes: their CHECK on mode refuses 'tap'.
    migrateModeCheck(this.db);
    this.taps = new TapDevices(this.db);
    // Databases made before per-sandbox policies: add the column.
    const cols = this.db.prepare<[], { name: string }>('PRAGMA table_info(sandboxes)').all().map((c) => c.name);
    if (!cols.includes('policy')) this.db.exec("ALTER TABLE sandboxes ADD COLUMN policy TEXT NOT NULL DEFAULT '{}'");
    // ... and before published ports.
    if (!cols.includes('publish')) this.db.exec("ALTER TABLE sandboxes ADD COLUMN publish TEXT NOT NULL DEFAULT '[]'");
    // CNI attachments (a runtime's namespace): the key the spec names them by, and what they are.
    if (!cols.includes('attach_key')) this.db.exec('ALTER TABLE sandboxes ADD COLUMN attach_key TEXT');
    if (!cols.includes('attachment')) this.db.exec('ALTER TABLE sandboxes ADD COLUMN attachment TEXT');
    this.db.exec('CREATE UNIQUE INDEX IF NOT EXISTS sandboxes_by_attach_key ON sandboxes (attach_key) WHERE attach_key IS NOT NULL');
    // ... and before labels.
    if (!cols.includes('labels')) this.db.exec("ALTER TABLE sandboxes ADD COLUMN labels TEXT NOT NULL DEFAULT '{}'");
    this.stmts = {
      getMeta: this.db.prepare<[string], { value: string }>('SELECT value FROM meta WHERE key = ?'),
      setMeta: this.db.prepare('INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value'),
      insert: this.db.prepare("INSERT INTO sandboxes (name, ip, mode, state, created_at, policy) VALUES (?, ?, ?, 'creating', ?, ?)"),
      setPolicy: this.db.prepare('UPDATE sandboxes SET policy = ? WHERE id = ?'),
      setPublish: this.db.prepare('UPDATE sandboxes SET publish = ? WHERE id = ?'),
      setLabels: this.db.prepare('UPDATE sandboxes SET labels = ? WHERE id = ?'),
      markReady: this.db.prepare("UPDATE sandboxes SET state = 'ready' WHERE id = ?"),
      delete: this.db.prepare('DELETE FROM sandboxes WHERE id = ?'),
      deleteUsage: this.db.prepare('DELETE FROM usage_carried WHERE sandbox_id = ?'),
      getUsage: this.db.prepare<[number], { out_packets: number; out_bytes: number; in_packets: number; in_bytes: number; blocked_packets: number }>('SELECT * FROM usage_carried WHERE sandbox_id = ?'),
      addUsage: this.db.prepare(`INSERT INTO usage_carried (sandbox_id, out_packets, out_bytes, in_packets, in_bytes, blocked_packets) VALUES (?, ?, ?, ?, ?, ?)
        ON CONFLICT(sandbox_id) DO UPDATE SET out_packets = out_packets + excluded.out_packets, out_bytes = out_bytes + excluded.out_bytes,
        in_packets = in_packets + excluded.in_packets, in_bytes = in_bytes + excluded.in_bytes, blocked_packets = blocked_packets + excluded.blocked_packets`),
      byName: this.db.prepare<[string], Row>('SELECT * FROM sandboxes WHERE name = ?'),
      setAttachment: this.db.prepare('UPDATE sandboxes SET attach_key = ?, attachment = ? WHERE id = ?'),
      byAttachKey: this.db.prepare<[string], Row>('SELECT * FROM sandboxes WHERE attach_key = ?'),
      // Pool members (names POOL_PREFIX<id>), found by a range on the name index.
      firstPoolMember: this.db.prepare<[string, string], Row>("SELECT * FROM sandboxes WHERE name >= ? AND name < ? AND state = 'ready' ORDER BY id LIMIT 1"),
      countPool: this.db.prepare<[string, string], { n: number }>('SELECT count(*) AS n FROM sandboxes WHERE name >= ? AND name < ?'),
      rename: this.db.prepare('UPDATE sandboxes SET name = ?, policy = ?, created_at = ? WHERE id = ?'),
      list: this.db.prepare<[], Row>('SELECT * FROM sandboxes ORDER BY id'),
      count: this.db.prepare<[], { n: number }>('SELECT count(*) AS n FROM sandboxes'),
      released: this.db.prepare<[], { ip: number }>('SELECT ip FROM released ORDER BY seq'),
      takeReleased: this.db.prepare('DELETE FROM released WHERE ip = ?'),
      addReleased: this.db.prepare('INSERT OR REPLACE INTO released (ip, seq) VALUES (?, ?)'),
      nextSeq: this.db.prepare<[], { s: number | null }>('SELECT max(seq) AS s FROM released'),
      firstSeq: this.db.prepare<[], { s: number | null }>('SELECT min(seq) AS s FROM released'),
      nextId: this.db.prepare<[], { seq: number }>("SELECT seq FROM sqlite_sequence WHERE name = 'sandboxes'"),
    };
  }

  close(): void {
    this.db.close();
  }

  getMeta(key: string): string | undefined {
    return this.stmts.getMeta.get(key)?.value;
  }

  setMeta(key: string, value: string): void {
    this.stmts.setMeta.run(key, value);
  }

  transaction<T>(fn: () => T): T {
    return this.db.transaction(fn)();
  }

  /** Inserts a sandbox in state 'creating'; throws conflict if the name is taken. */
  insertSandbox(name: string, ip: string, mode: SandboxMode, policy: PolicyInput = {}, now = Date.now()): number {
    try {
      return Number(this.stmts.insert.run(name, ip, mode, now, JSON.stringify(policy)).lastInsertRowid);
    } catch (err) {
      if ((err as { code?: string }).code === 'SQLITE_CONSTRAINT_UNIQUE' && /sandboxes\.name/.test((err as Error).message)) {
        throw new ToastnetError('conflict', `sandbox "${name}" already exists`);
      }
      throw err;
    }
  }

  setPolicy(id: number, policy: PolicyInput): void {
    this.stmts.setPolicy.run(JSON.stringify(policy), id);
  }

  /** Sets a sandbox's published ports (at its creation, or a pool member's acquisition). */
  setPublish(id: number, publish: PortMapping[]): void {
    this.stmts.setPublish.run(JSON.stringify(publish), id);
  }

  setLabels(id: number, labels: Record<string, string>): void {
    this.stmts.setLabels.run(JSON.stringify(labels), id);
  }

  markReady(id: number): void {
    this.stmts.markReady.run(id);
  }

  deleteSandbox(id: number): void {
    this.stmts.delete.run(id);
    this.stmts.deleteUsage.run(id);
    this.taps.delete(id);
  }

  carriedUsage(id: number): CarriedUsage {
    const r = this.stmts.getUsage.get(id);
    return { outPackets: r?.out_packets ?? 0, outBytes: r?.out_bytes ?? 0, inPackets: r?.in_packets ?? 0, inBytes: r?.in_bytes ?? 0, blockedPackets: r?.blocked_packets ?? 0 };
  }

  /** Adds what the kernel counted to the carried totals (before its counters are rebuilt). */
  carryUsage(id: number, u: CarriedUsage): void {
    this.stmts.addUsage.run(id, u.outPackets, u.outBytes, u.inPackets, u.inBytes, u.blockedPackets);
  }

  /** Writes ahead what the kernel counted, before rebuild `epoch` resets it (see usage_pending). */
  setPendingUsage(epoch: number, counts: Iterable<[number, CarriedUsage]>): void {
    this.transaction(() => {
      this.db.exec('DELETE FROM usage_pending');
      const ins = this.db.prepare('INSERT INTO usage_pending (sandbox_id, out_packets, out_bytes, in_packets, in_bytes, blocked_packets) VALUES (?, ?, ?, ?, ?, ?)');
      for (const [id, u] of counts) ins.run(id, u.outPackets, u.outBytes, u.inPackets, u.inBytes, u.blockedPackets);
      this.setMeta('usage_pending_epoch', String(epoch));
    });
  }

  /** The rebuild whose counts are written ahead and not yet settled, if any. */
  pendingUsageEpoch(): number | undefined {
    const v = this.getMeta('usage_pending_epoch');
    return v === undefined || v === '' ? undefined : Number(v);
  }

  /** Settles the counts written ahead: into the carried totals when the rebuild happened (`fold`), else dropped; the epoch becomes the instance's. */
  settlePendingUsage(fold: boolean): void {
    this.transaction(() => {
      const epoch = this.pendingUsageEpoch();
      if (epoch === undefined) return;
      if (fold) {
        const rows = this.db.prepare('SELECT * FROM usage_pending').all() as { sandbox_id: number; out_packets: number; out_bytes: number; in_packets: number; in_bytes: number; blocked_packets: number }[];
        for (const r of rows) this.stmts.addUsage.run(r.sandbox_id, r.out_packets, r.out_bytes, r.in_packets, r.in_bytes, r.blocked_packets);
        this.setMeta('usage_epoch', String(epoch));
      }
      this.db.exec('DELETE FROM usage_pending');
      this.setMeta('usage_pending_epoch', '');
    });
  }

  firstPoolMember(): SandboxRow | undefined {
    const r = this.stmts.firstPoolMember.get(...POOL_NAMES);
    return r ? toSandbox(r) : undefined;
  }

  countPool(): number {
    return this.stmts.countPool.get(...POOL_NAMES)!.n;
  }

  /**
   * Gives a row a new name, policy and creation time (a pool member becoming a sandbox, or
   * going back to the pool); conflict if the name is taken.
   */
  renameSandbox(id: number, name: string, policy: PolicyInput, createdAt = Date.now()): void {
    try {
      this.stmts.rename.run(name, JSON.stringify(policy), createdAt, id);
    } catch (err) {
      if ((err as { code?: string }).code === 'SQLITE_CONSTRAINT_UNIQUE') throw new ToastnetError('conflict', `sandbox "${name}" already exists`);
      throw err;
    }
  }

  /** Records that the sandbox is a runtime's namespace attached through CNI. */
  setAttachment(id: number, a: RuntimeAttachment): void {
    try {
      this.stmts.setAttachment.run(attachmentKey(a.network, a.containerId, a.ifname), JSON.stringify(a), id);
    } catch (err) {
      if ((err as { code?: string }).code === 'SQLITE_CONSTRAINT_UNIQUE') throw new ToastnetError('conflict', `container ${a.containerId} already has ${a.ifname} on network ${a.network}`);
      throw err;
    }
  }

  getByAttachment(network: string, containerId: string, ifname: string): SandboxRow | undefined {
    const r = this.stmts.byAttachKey.get(attachmentKey(network, containerId, ifname));
    return r ? toSandbox(r) : undefined;
  }

  getByName(name: string): SandboxRow | undefined {
    const r = this.stmts.byName.get(name);
    return r ? toSandbox(r) : undefined;
  }

  list(): SandboxRow[] {
    return this.stmts.list.all().map(toSandbox);
  }

  count(): number {
    return this.stmts.count.get()!.n;
  }

  /** The id the next insert will get (names of links derive from it). */
  peekNextId(): number {
    return (this.stmts.nextId.get()?.seq ?? 0) + 1;
  }

  releasedInOrder(): number[] {
    return this.stmts.released.all().map((r) => r.ip);
  }

  takeReleased(ip: number): void {
    this.stmts.takeReleased.run(ip);
  }

  addReleased(ip: number): void {
    this.stmts.addReleased.run(ip, (this.stmts.nextSeq.get()?.s ?? 0) + 1);
  }

  /** Puts an address back at the head of the reuse order (undo of a failed create). */
  addReleasedFirst(ip: number): void {
    this.stmts.addReleased.run(ip, (this.stmts.firstSeq.get()?.s ?? 1) - 1);
  }
}
