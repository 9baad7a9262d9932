// The state store keeps sandbox labels in one column; a database made before labels gets it
// on open, its sandboxes with none.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { Store } from '../../src/store/store.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'toastnet-store-labels-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('store: labels', () => {
  it('a database made before labels gets the column; its sandboxes have none, and labels then persist', () => {
    const file = path.join(dir, 'old.db');
    const old = new Database(file);
    old.exec(`CREATE TABLE sandboxes (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE, ip TEXT NOT NULL UNIQUE,
      mode TEXT NOT NULL CHECK (mode IN ('veth', 'macvlan')), state TEXT NOT NULL CHECK (state IN ('creating', 'ready')), created_at INTEGER NOT NULL,
      policy TEXT NOT NULL DEFAULT '{}');
      INSERT INTO sandboxes (name, ip, mode, state, created_at) VALUES ('before', '10.166.0.2', 'veth', 'ready', 1);`);
    old.close();
    let s = new Store(file);
    assert.deepEqual(s.getByName('before')?.labels, {});
    const id = s.insertSandbox('after', '10.166.0.3', 'veth');
    s.setLabels(id, { team: 'ml', 'app.kubernetes.io/name': 'web' });
    s.close();
    s = new Store(file); // opened again: no second migration, labels kept
    assert.deepEqual(s.getByName('after')?.labels, { team: 'ml', 'app.kubernetes.io/name': 'web' });
    assert.deepEqual(s.list().map((r) => [r.name, r.labels]), [['before', {}], ['after', { team: 'ml', 'app.kubernetes.io/name': 'web' }]]);
    s.close();
  });
});
