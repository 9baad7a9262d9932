// The options each TAP sandbox's device was made with (vnet_hdr, queues, owner, group): they
// are not derivable, and a VMM must be told them again by get/ls. A table of its own, keyed
// by sandbox id, so the sandboxes table stays what every mode shares.
import type Database from 'better-sqlite3';
import type { TapDevice } from '../core/tap.js';

const SCHEMA = `
CREATE TABLE IF NOT EXISTS tap_devices (
  sandbox_id INTEGER PRIMARY KEY,
  vnet_hdr INTEGER NOT NULL,
  queues INTEGER NOT NULL,
  owner INTEGER,
  grp INTEGER
);
`;

interface Row {
  vnet_hdr: number;
  queues: number;
  owner: number | null;
  grp: number | null;
}

export class TapDevices {
  private readonly stmts;

  constructor(db: Database.Database) {
    db.exec(SCHEMA);
    this.stmts = {
      set: db.prepare('INSERT OR REPLACE INTO tap_devices (sandbox_id, vnet_hdr, queues, owner, grp) VALUES (?, ?, ?, ?, ?)'),
      get: db.prepare<[number], Row>('SELECT * FROM tap_devices WHERE sandbox_id = ?'),
      delete: db.prepare('DELETE FROM tap_devices WHERE sandbox_id = ?'),
    };
  }

  set(id: number, d: TapDevice): void {
    this.stmts.set.run(id, d.vnetHdr ? 1 : 0, d.queues, d.owner ?? null, d.group ?? null);
  }

  get(id: number): TapDevice | undefined {
    const r = this.stmts.get.get(id);
    if (!r) return undefined;
    return { vnetHdr: r.vnet_hdr === 1, queues: r.queues, ...(r.owner !== null ? { owner: r.owner } : {}), ...(r.grp !== null ? { group: r.grp } : {}) };
  }

  delete(id: number): void {
    this.stmts.delete.run(id);
  }
}
