// The sandboxes table's CHECK on `mode` as databases before TAP sandboxes made it: ('veth',
// 'macvlan'). SQLite cannot alter a CHECK, so such a table is rebuilt in one transaction
// from its own stored definition with only the CHECK changed, whatever columns other
// migrations added meanwhile: copy, drop, rename, indexes made again, and the id sequence
// kept (link names derive from ids, which must never be reused).
import type Database from 'better-sqlite3';

const OLD_CHECK = /CHECK\s*\(\s*mode\s+IN\s*\(\s*'veth'\s*,\s*'macvlan'\s*\)\s*\)/;
export const MODE_CHECK = "CHECK (mode IN ('veth', 'macvlan', 'tap'))";

/** Rebuilds the sandboxes table if its CHECK predates tap; returns whether it did. */
export function migrateModeCheck(db: Database.Database): boolean {
  const table = db.prepare<[], { sql: string }>("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'sandboxes'").get();
  if (!table || !OLD_CHECK.test(table.sql)) return false;
  db.transaction(() => {
    const seq = db.prepare<[], { seq: number }>("SELECT seq FROM sqlite_sequence WHERE name = 'sandboxes'").get()?.seq;
    const indexes = db.prepare<[], { sql: string }>("SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'sandboxes' AND sql IS NOT NULL").all();
    const created = table.sql.replace(OLD_CHECK, MODE_CHECK).replace(/^CREATE TABLE\s+(IF NOT EXISTS\s+)?("?sandboxes"?)/i, 'CREATE TABLE sandboxes_tn_migrating');
    db.exec(created);
    db.exec('INSERT INTO sandboxes_tn_migrating SELECT * FROM sandboxes');
    db.exec('DROP TABLE sandboxes');
    db.exec('ALTER TABLE sandboxes_tn_migrating RENAME TO sandboxes');
    for (const i of indexes) db.exec(i.sql);
    if (seq !== undefined) {
      db.prepare("UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = 'sandboxes'").run(seq);
      db.prepare("INSERT INTO sqlite_sequence (name, seq) SELECT 'sandboxes', ? WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'sandboxes')").run(seq);
    }
  })();
  return true;
}
