import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { formatStats, formatTop, topRows } from '../../src/cli/stats-view.js';
import type { SandboxStats } from '../../src/service/accounting.js';

function s(name: string, sent: number, received: number, blocked = 0, extra: Partial<SandboxStats> = {}): SandboxStats {
  return { name, ip: `10.166.0.${name.length}`, sent: { packets: sent / 100, bytes: sent }, received: { packets: received / 100, bytes: received }, blocked: { packets: blocked, logged: {} }, quota: {}, limits: {}, ...extra };
}

describe('topRows', () => {
  it('rates are the difference over the interval, busiest first', () => {
    const before = [s('a', 1000, 0), s('b', 0, 0), s('c', 0, 0, 10)];
    const now = [s('a', 3000, 0), s('b', 10_000, 2000), s('c', 0, 0, 30)];
    const rows = topRows(before, now, 2);
    assert.deepEqual(rows.map((r) => [r.name, r.outRate, r.inRate, r.blockedRate]), [['b', 5000, 1000, 0], ['a', 1000, 0, 0], ['c', 0, 0, 10]]);
  });

  it('a sandbox new since the last reading counts from zero; a counter that went down gives 0, not a negative rate', () => {
    const rows = topRows([s('old', 5000, 0)], [s('old', 1000, 0), s('new', 400, 0)], 1);
    assert.deepEqual(rows.map((r) => [r.name, r.outRate]), [['new', 400], ['old', 0]]);
  });
});

describe('formatTop', () => {
  it('one line per sandbox under a header, capped with a count of the rest', () => {
    const rows = topRows([], [s('a', 1e6, 0), s('bb', 2e6, 0), s('ccc', 0, 0)], 1);
    const text = formatTop(rows, 2).split('\n');
    assert.match(text[0], /^SANDBOX\s+ADDRESS\s+OUT\/s\s+IN\/s/);
    assert.match(text[1], /^bb\s+10\.166\.0\.2\s+16\.0 Mbit\/s/);
    assert.match(text[2], /^a\s/);
    assert.equal(text[3], '... and 1 more');
    assert.equal(text.length, 4);
  });
});

describe('formatStats', () => {
  it('shows traffic, blocked by reason, quota use, limits and DNS when present', () => {
    const text = formatStats(s('web', 1_500_000, 2000, 7, {
      blocked: { packets: 7, logged: { private: 2, quota_out: 1 } },
      quota: { egress: { bytes: 1e9, used: 2.5e8 } },
      limits: { egressRate: 1_250_000, maxConnections: 50 },
      dns: { queries: 9, refused: 1, limited: 0, stripped: 0 },
    }));
    assert.match(text, /^web \(10\.166\.0\.3\)$/m);
    assert.match(text, /sent\s+1\.5 MB in 15000 packets/);
    assert.match(text, /blocked\s+7 packets; logged by reason: private 2, quota_out 1/);
    assert.match(text, /quota out\s+250\.0 MB of 1\.0 GB used/);
    assert.match(text, /limits\s+egress 10\.0 Mbit\/s, 50 connections/);
    assert.match(text, /dns\s+9 queries, 1 refused/);
  });

  it('says "none" without limits and omits what is absent', () => {
    const text = formatStats(s('x', 0, 0));
    assert.match(text, /limits\s+none/);
    assert.doesNotMatch(text, /quota|dns/);
  });
});
