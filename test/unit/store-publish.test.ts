// The store's publish column: a database made before it gets it (every sandbox publishing
// nothing), and what a sandbox publishes is kept as given.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { Store } from '../../src/store/store.js';

describe('store: published ports', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tn-store-publish-'));
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('adds the column to a database made before it; existing sandboxes publish nothing', () => {
    const file = path.join(dir, 'old.db');
    const old = new Database(file);
    // The sandboxes table as it was before the publish column.
    old.exec(`CREATE TABLE sandboxes (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE, ip TEXT NOT NULL UNIQUE,
      mode TEXT NOT NULL, state TEXT NOT NULL, created_at INTEGER NOT NULL, policy TEXT NOT NULL DEFAULT '{}')`);
    old.prepare("INSERT INTO sandboxes (name, ip, mode, state, created_at) VALUES ('web', '10.166.0.2', 'veth', 'ready', 1)").run();
    old.close();
    const s = new Store(file);
    try {
      assert.deepEqual(s.list().map((r) => [r.name, r.publish]), [['web', []]]);
      const id = s.list()[0].id;
      s.setPublish(id, [{ hostPort: 8080, containerPort: 80, protocol: 'tcp', hostIP: '192.0.2.2' }]);
      assert.deepEqual(s.getByName('web')!.publish, [{ hostPort: 8080, containerPort: 80, protocol: 'tcp', hostIP: '192.0.2.2' }]);
    } finally {
      s.close();
    }
    // Opening it again does not add the column twice.
    new Store(file).close();
  });

  it('a new sandbox publishes nothing until told', () => {
    const s = new Store(path.join(dir, 'new.db'));
    try {
      const id = s.insertSandbox('a', '10.166.0.3', 'veth');
      assert.deepEqual(s.getByName('a')!.publish, []);
      s.setPublish(id, [{ hostPort: 53, containerPort: 5353, protocol: 'udp' }]);
      assert.deepEqual(s.getByName('a')!.publish, [{ hostPort: 53, containerPort: 5353, protocol: 'udp' }]);
    } finally {
      s.close();
    }
  });
});
