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

  it('identical entries of one window are one row with their count; a different one, or the next window, is a row of its own', () => {
    const log = new DnsLog(new Database(':memory:'));
    const hit = { sandbox: 'a', name: 'pypi.test', type: 'A', verdict: 'answered' as const, answer: ['192.0.2.1'] };
    for (let i = 0; i < 5; i++) log.record({ ...hit, answer: [...hit.answer] }, 1000 + i);
    log.record({ ...hit, sandbox: 'b' }, 1005); // another sandbox
    log.record({ ...hit, answer: ['192.0.2.2'] }, 1006); // another answer
    log.record({ ...hit, verdict: 'refused', answer: [], reason: 'not in egress.domains' }, 1007);
    log.record({ ...hit, verdict: 'refused', answer: [], reason: 'over dns.qps 50' }, 1008); // another reason
    let rows = log.list({ limit: 100 });
    assert.deepEqual(rows.map((r) => [r.sandbox, r.answer.join(','), r.verdict, r.count]), [
      ['a', '192.0.2.1', 'answered', 5], ['b', '192.0.2.1', 'answered', undefined], ['a', '192.0.2.2', 'answered', undefined],
      ['a', '', 'refused', undefined], ['a', '', 'refused', undefined],
    ]);
    assert.equal(rows[0].time, new Date(1000).toISOString(), 'the time of the first');
    log.record({ ...hit }, 2000); // after the write: a new window
    rows = log.list({ limit: 100 });
    assert.equal(rows.length, 6);
    assert.equal(rows[5].count, undefined);
  });
});
