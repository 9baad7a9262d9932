// The Grafana dashboard in deploy/grafana reads only what the daemon exports: every metric
// its queries select, every label they match or group on, as the metrics module registers
// them (built here with stub sources, so a renamed metric fails this test, not a
// dashboard in production).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { Metrics } from '../../src/service/metrics.js';
import { stubSources } from './metric-sources.js';
import { readPromql, type PromqlReads } from './promql-reads.js';

// dist/test/unit/ -> the repository's deploy/grafana/.
const DASHBOARD = new URL('../../../deploy/grafana/toastnet.json', import.meta.url);
/** Labels Prometheus adds to every series it scrapes. */
const TARGET_LABELS = ['instance', 'job'];

interface Exported {
  type: string;
  labels: string[];
}

/** Every series name the daemon exports (a histogram's _bucket, _sum and _count), with its labels. */
async function exportedSeries(): Promise<Map<string, Exported>> {
  const { registry } = new Metrics(stubSources());
  const out = new Map<string, Exported>();
  for (const { name, type } of await registry.getMetricsAsJSON()) {
    const labels = [...((registry.getSingleMetric(name) as unknown as { labelNames?: readonly string[] }).labelNames ?? [])];
    const t = String(type);
    if (t === 'histogram') {
      out.set(`${name}_bucket`, { type: t, labels: [...labels, 'le'] });
      out.set(`${name}_sum`, { type: t, labels });
      out.set(`${name}_count`, { type: t, labels });
    } else if (t === 'summary') {
      out.set(name, { type: t, labels: [...labels, 'quantile'] });
      out.set(`${name}_sum`, { type: t, labels });
      out.set(`${name}_count`, { type: t, labels });
    } else out.set(name, { type: t, labels });
  }
  return out;
}

/** Every PromQL expression in the dashboard: panel targets (at any depth) and template variable queries. */
function dashboardQueries(dash: unknown): { where: string; reads: PromqlReads }[] {
  const out: { where: string; reads: PromqlReads }[] = [];
  const walk = (v: unknown, where: string): void => {
    if (Array.isArray(v)) v.forEach((x, i) => walk(x, `${where}[${i}]`));
    else if (v && typeof v === 'object') {
      const o = v as Record<string, unknown>;
      if (typeof o.expr === 'string') out.push({ where: `${where} ${JSON.stringify(o.expr)}`, reads: readPromql(o.expr) });
      for (const [k, x] of Object.entries(o)) if (k !== 'templating') walk(x, `${where}.${k}`);
    }
  };
  walk(dash, 'dashboard');
  for (const v of (dash as { templating?: { list?: { name: string; type: string; query?: unknown }[] } }).templating?.list ?? []) {
    if (v.type !== 'query') continue;
    const q = typeof v.query === 'string' ? v.query : (v.query as { query?: string } | undefined)?.query ?? '';
    // Grafana's label_values(SELECTOR, LABEL): the selector is PromQL, the label one it must have.
    const lv = /^label_values\((.*),\s*([A-Za-z_]\w*)\s*\)$/s.exec(q.trim());
    assert.ok(lv, `variable ${v.name}: label_values(selector, label) expected, got ${q}`);
    const reads = readPromql(lv[1]);
    reads.grouping.push(lv[2]);
    out.push({ where: `variable ${v.name}`, reads });
  }
  return out;
}

describe('Grafana dashboard (deploy/grafana/toastnet.json)', () => {
  it('the PromQL reader finds metrics, matcher labels and grouping labels (it is not blind)', () => {
    const r = readPromql('histogram_quantile(0.99, sum by (le, op) (rate(a_bucket{instance=~"$instance", outcome="ok"}[$__rate_interval]))) / on(job) b offset 5m');
    assert.deepEqual(r.selectors, [{ metric: 'a_bucket', labels: ['instance', 'outcome'] }, { metric: 'b', labels: [] }]);
    assert.deepEqual(r.grouping, ['le', 'op', 'job']);
    assert.deepEqual(readPromql('sum(rate(process_cpu_seconds_total[5m]))').selectors.map((s) => s.metric), ['process_cpu_seconds_total']);
    assert.deepEqual(readPromql('{__name__=~"toastnet_.*"}').selectors, [{ metric: '', labels: ['__name__'] }]);
  });

  it('queries only metrics and labels the daemon exports', async () => {
    const exported = await exportedSeries();
    const dash = JSON.parse(fs.readFileSync(DASHBOARD, 'utf8')) as unknown;
    const queries = dashboardQueries(dash);
    assert.ok(queries.length >= 10, `${queries.length} queries found`);
    const used = new Set<string>();
    for (const { where, reads } of queries) {
      assert.ok(reads.selectors.length > 0, `${where}: selects no metric`);
      const labelsInScope = new Set(TARGET_LABELS);
      for (const s of reads.selectors) {
        const m = exported.get(s.metric);
        assert.ok(m, `${where}: ${s.metric || 'a selector without a metric name'} is not a metric the daemon exports`);
        used.add(s.metric);
        for (const l of s.labels) assert.ok(m.labels.includes(l) || TARGET_LABELS.includes(l), `${where}: ${s.metric} has no label ${l}`);
        for (const l of m.labels) labelsInScope.add(l);
      }
      for (const l of reads.grouping) assert.ok(labelsInScope.has(l), `${where}: groups by ${l}, a label none of its metrics has`);
    }
    // What the dashboard is for: each of these is on it.
    for (const m of [
      'toastnet_sandboxes', 'toastnet_addresses', 'toastnet_pool_idle_members',
      'toastnet_sandbox_sent_bytes_total', 'toastnet_sandbox_received_bytes_total', 'toastnet_sandbox_blocked_packets_total',
      'toastnet_denials_logged_total', 'toastnet_dns_queries_total', 'toastnet_operation_duration_seconds_bucket',
    ]) assert.ok(used.has(m), `the dashboard shows ${m}`);
  });

  it('panels have unique ids and fit the 24-column grid', () => {
    const dash = JSON.parse(fs.readFileSync(DASHBOARD, 'utf8')) as { panels: { id: number; title: string; gridPos: { x: number; w: number } }[] };
    const ids = dash.panels.map((p) => p.id);
    assert.equal(new Set(ids).size, ids.length);
    for (const p of dash.panels) assert.ok(p.gridPos.x + p.gridPos.w <= 24, p.title);
  });
});
