// Exact denial counts by reason (service/accounting.ts denialCountsOf): read from the
// counters the ruleset puts in each deny_<reason> chain, on a listing shaped as libnftables
// answers `list table` (built from the ruleset itself, with counters filled in).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ConfigSchema } from '../../src/config/schema.js';
import { resolve } from '../../src/config/load.js';
import { BLOCKED_COUNT_COMMENT, REPORTED_COUNT_COMMENT, RulesetBuilder } from '../../src/core/ruleset.js';
import { DENY_REASONS } from '../../src/core/deny-reasons.js';
import { denialCountsOf } from '../../src/service/accounting.js';

type Rule = { chain: string; comment?: string; expr: Record<string, unknown>[] };

describe('denialCountsOf', () => {
  it('every deny chain has an exact blocked count; report mode\'s count where it applies; logging and other chains do not add', () => {
    const cmds = new RulesetBuilder(resolve(ConfigSchema.parse({ dnsUpstreams: ['192.0.2.53'] }), [])).fullTable([]) as { add?: { rule?: Rule } }[];
    const rules = cmds.map((c) => c.add?.rule).filter((r): r is Rule => r !== undefined);
    const listing = rules.map((r, i) => ({
      // As listed: each counter with what it counted (here: a number per rule).
      rule: { ...r, expr: r.expr.map((e) => ('counter' in e ? { counter: { packets: 1000 + i, bytes: 0 } } : e)) },
    }));
    const counts = denialCountsOf(listing);
    assert.deepEqual(Object.keys(counts).sort(), Object.keys(DENY_REASONS).sort());
    for (const reason of Object.keys(DENY_REASONS)) {
      const i = rules.findIndex((r) => r.chain === `deny_${reason}` && r.comment === BLOCKED_COUNT_COMMENT);
      const j = rules.findIndex((r) => r.chain === `deny_${reason}` && r.comment === REPORTED_COUNT_COMMENT);
      assert.ok(i >= 0, reason);
      assert.deepEqual(counts[reason], { blocked: 1000 + i, reported: j >= 0 ? 1000 + j : 0 }, reason);
    }
  });
});
