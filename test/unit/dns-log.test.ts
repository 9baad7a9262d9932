import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import Database from 'better-sqlite3';
import { DnsLog } from '../../src/service/events.js';

describe('DnsLog', () => {
  it('writes every queued entry once, in order, whether in the many-row statement or one by one', () => {
    const log = new DnsLog(new Database(':memory:'));
    // 257: two statements of 100 rows and 57 single rows; an entry with a reason and one with several addresses.
    for (let i = 0; i < 257; i++) {
      log.record({ sandbox: i % 2 ? 'a' : 'b', name: `n${i}.test`, type: 'A', verdict: i === 7 ? 'stripped' : 'answered', answer: i === 3 ? ['192.0.2.1', '192.0.2.2'] : [], ...(i === 7 ? { reason: 'rebinding: 10.0.0.1' } : {}) }, 1000 + i);
    }
    const rows = log.list({ limit: 1000 });
    assert.equal(rows.length, 257);
    assert.deepEqual(rows.map((r) => r.name), Array.from({ length: 257 }, (_, i) => `n${i}.test`));
    assert.deepEqual(rows[3].answer, ['192.0.2.1', '192.0.2.2']);
    assert.equal(rows[7].reason, 'rebinding: 10.0.0.1');
    assert.equal(rows[8].reason, undefined);
    assert.equal(rows[1].sandbox, 'a');
    assert.equal(log.list({ sandbox: 'b', limit: 1000 }).length, 129);
  });
});
