import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { Metrics, PROCESS_METRICS_PREFIX } from '../../src/service/metrics.js';
import { stubSources } from './metric-sources.js';
import type { SandboxStats } from '../../src/service/accounting.js';
import type { ResolverCounters } from '../../src/api/types.js';
import { toastnetVersion } from '../../src/version.js';

function traffic(name: string, bytes: number): SandboxStats {
  return {
    name, ip: '10.0.0.1', limits: {}, quota: {},
    sent: { bytes, packets: bytes / 100 }, received: { bytes: 2 * bytes, packets: bytes / 50 }, blocked: { packets: 3, logged: {} },
    shaped: { egress: { bytes: 0, packets: 0, dropped: bytes / 1000, backlog: 0 }, ingress: { bytes: 0, packets: 0, dropped: 1, backlog: 0 } },
    nameChecks: { allowed: 0, mismatched: 0, unjudged: bytes / 200 },
  };
}

/** Every sample of `name`: its labels and value. */
async function samples(m: Metrics, name: string): Promise<{ labels: Record<string, string | number>; value: number }[]> {
  const metric = (await m.registry.getMetricsAsJSON()).find((x) => x.name === name);
  assert.ok(metric, `${name} is exported`);
  return metric.values.map((v) => ({ labels: v.labels as Record<string, string | number>, value: v.value }));
}

const byLabel = (list: { labels: Record<string, string | number>; value: number }[], label: string) =>
  Object.fromEntries(list.map((s) => [String(s.labels[label]), s.value]));

describe('Metrics', () => {
  it('exposes toastnet_build_info{version,node} 1', async () => {
    const m = new Metrics(stubSources());
    const text = await m.registry.metrics();
    assert.match(text, /^# TYPE toastnet_build_info gauge$/m);
    const lines = text.split('\n').filter((l) => l.startsWith('toastnet_build_info'));
    assert.deepEqual(lines, [`toastnet_build_info{version="${toastnetVersion()}",node="${process.versions.node}"} 1`]);
  });

  it('DNS queries by outcome add up to the queries; upstream timeouts are a metric of their own', async () => {
    const dns: ResolverCounters = { queries: 15, answered: 6, cached: 4, refused: 2, servfail: 1, dropped: 2, upstreamTimeouts: 7, cacheEntries: 9 };
    const m = new Metrics(stubSources({ dns: () => dns }));
    const outcomes = byLabel(await samples(m, 'toastnet_dns_queries_total'), 'outcome');
    assert.deepEqual(outcomes, { answered: 6, cached: 4, refused: 2, servfail: 1, dropped: 2 });
    assert.equal(Object.values(outcomes).reduce((a, b) => a + b, 0), dns.queries);
    assert.deepEqual((await samples(m, 'toastnet_dns_upstream_timeouts_total')).map((s) => s.value), [7]);
    assert.deepEqual((await samples(m, 'toastnet_dns_cache_entries')).map((s) => s.value), [9]);
  });

  it('per-sandbox traffic: one metric per quantity, labelled series for the busiest and unlabelled sums that add up', async () => {
    const all = [traffic('quiet', 100), traffic('busy', 10_000), traffic('middling', 1_000)];
    const m = new Metrics(stubSources({ stats: () => all }), 1);
    const quantities: [string, (s: SandboxStats) => number][] = [
      ['sent_bytes', (s) => s.sent.bytes], ['sent_packets', (s) => s.sent.packets],
      ['received_bytes', (s) => s.received.bytes], ['received_packets', (s) => s.received.packets],
      ['blocked_packets', (s) => s.blocked.packets],
      ['shaped_dropped_packets', (s) => s.shaped!.egress!.dropped + s.shaped!.ingress!.dropped],
      ['name_unjudged_packets', (s) => s.nameChecks!.unjudged],
    ];
    for (const [key, pick] of quantities) {
      const labelled = await samples(m, `toastnet_sandbox_${key}_total`);
      assert.deepEqual(labelled.map((s) => s.labels), [{ sandbox: 'busy' }], key);
      const rest = await samples(m, `toastnet_sandboxes_unlabelled_${key}`);
      assert.deepEqual(rest.map((s) => s.labels), [{}], `${key}: one unlabelled series, no label mixing units`);
      assert.equal(labelled[0].value + rest[0].value, all.reduce((n, s) => n + pick(s), 0), key);
    }
    const names = (await m.registry.getMetricsAsJSON()).map((x) => x.name);
    assert.ok(!names.includes('toastnet_sandboxes_unlabelled'), 'the old gauge mixing bytes and packets is gone');
  });

  it('sandbox labels in metricsLabels are labels of the per-sandbox series (label_<key>); no others, and no new series', async () => {
    const all = [traffic('a', 300), traffic('b', 200), traffic('c', 100)];
    const m = new Metrics(stubSources({
      stats: () => all,
      sandboxes: () => [
        { name: 'a', mode: 'veth', labels: { team: 'ml', 'app.kubernetes.io/name': 'web', secret: 'x' } },
        { name: 'b', mode: 'veth', labels: { team: 'infra' } },
        { name: 'c', mode: 'veth', labels: {} },
      ] as { name: string; mode: 'veth'; labels: Record<string, string> }[],
    }), 2, ['team', 'app.kubernetes.io/name']);
    const series = await samples(m, 'toastnet_sandbox_sent_bytes_total');
    assert.deepEqual(series.map((s) => s.labels), [
      { sandbox: 'a', label_team: 'ml', label_app_kubernetes_io_name: 'web' },
      { sandbox: 'b', label_team: 'infra', label_app_kubernetes_io_name: '' },
    ], 'the busiest two only, each with its promoted labels; "secret" is not promoted');
    assert.ok(!(await m.registry.metrics()).includes('secret'));
    // Without metricsLabels, the series carry the sandbox only.
    const plain = await samples(new Metrics(stubSources({ stats: () => all, sandboxes: () => [{ name: 'a', mode: 'veth', labels: { team: 'ml' } }] }), 2), 'toastnet_sandbox_sent_bytes_total');
    assert.deepEqual(plain.map((s) => s.labels), [{ sandbox: 'a' }, { sandbox: 'b' }]);
  });

  it('sandboxes by mode, addresses by state (adding up to the capacity), idle pool members', async () => {
    const m = new Metrics(stubSources({
      sandboxes: () => [{ name: 'a', mode: 'veth', labels: {} }, { name: 'b', mode: 'veth', labels: {} }, { name: 'c', mode: 'macvlan', labels: {} }],
      capacity: () => ({ addresses: { capacity: 14, used: 6, free: 8, releasing: 1 }, pool: { idle: 2 } }),
    }));
    assert.deepEqual(byLabel(await samples(m, 'toastnet_sandboxes'), 'mode'), { veth: 2, macvlan: 1, tap: 0 });
    const addresses = byLabel(await samples(m, 'toastnet_addresses'), 'state');
    assert.deepEqual(addresses, { free: 8, assigned: 5, releasing: 1 });
    assert.equal(Object.values(addresses).reduce((a, b) => a + b, 0), 14);
    assert.deepEqual((await samples(m, 'toastnet_pool_idle_members')).map((s) => s.value), [2]);
    const none = new Metrics(stubSources());
    assert.deepEqual(byLabel(await samples(none, 'toastnet_sandboxes'), 'mode'), { veth: 0, macvlan: 0, tap: 0 }, 'every mode has a series, at 0 too');
  });

  it('follows Prometheus naming: all under toastnet_, _total on counters only, Node\'s own metrics prefixed', async () => {
    const m = new Metrics(stubSources());
    const metrics = await m.registry.getMetricsAsJSON();
    for (const { name, type } of metrics) {
      assert.match(name, /^toastnet_[a-z0-9_]+$/, name);
      // prom-client's own names are kept as its dashboards know them (some gauges end in _total).
      if (name.startsWith(PROCESS_METRICS_PREFIX)) continue;
      assert.equal(name.endsWith('_total'), String(type) === 'counter', `${name} (${type}): _total marks counters, and only them`);
      assert.doesNotMatch(name, /_(milliseconds|ms|kilobytes|kb|mb)(_|$)/, `${name}: base units (seconds, bytes)`);
    }
    const names = metrics.map((x) => x.name);
    assert.ok(names.includes(`${PROCESS_METRICS_PREFIX}process_resident_memory_bytes`), 'Node\'s process metrics are there, prefixed');
    assert.ok(names.some((n) => n.startsWith(`${PROCESS_METRICS_PREFIX}nodejs_`)));
    for (const gone of ['toastnet_dns_total', 'toastnet_sandboxes_unlabelled']) assert.ok(!names.includes(gone), `${gone}: its series mixed units`);
  });

  it('README lists every metric the daemon exports, with its type', async () => {
    // dist/test/unit/metrics.test.js -> the repository's README.md.
    const readme = fs.readFileSync(new URL('../../../README.md', import.meta.url), 'utf8');
    const rows = readme.split('\n').filter((l) => l.startsWith('| `toastnet_'));
    for (const { name, type } of await new Metrics(stubSources()).registry.getMetricsAsJSON()) {
      if (name.startsWith(PROCESS_METRICS_PREFIX)) continue; // documented as a family
      const row = rows.find((r) => r.split('|')[1].includes(`\`${name}\``));
      assert.ok(row, `README's metrics table lists ${name}`);
      assert.equal(row.split('|')[2].trim(), String(type), `${name}'s type in README`);
    }
    assert.ok(rows.some((r) => r.includes(`\`${PROCESS_METRICS_PREFIX}process_*\``)));
  });
});
