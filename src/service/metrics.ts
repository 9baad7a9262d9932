// Prometheus metrics for the daemon (opt-in: config `metricsListen`), with prom-client:
// the build (version, Node), operation latencies as histograms, the resolver's counters, logged denials by reason,
// process health, and per-sandbox traffic counters. Per-sandbox series are bounded: the
// busiest `maxSandboxSeries` sandboxes get their own label; what the others hold is a
// gauge (toastnet_sandboxes_unlabelled: it goes down as sandboxes leave or join the
// labelled ones, which a counter must never do), so thousands of sandboxes do not flood
// the scraper.
import http from 'node:http';
import client from 'prom-client';
import type { SandboxStats } from './accounting.js';
import type { ResolverCounters } from '../api/types.js';
import { toastnetVersion } from '../version.js';

export interface MetricSources {
  stats(): SandboxStats[];
  /** The resolver's counters, when it runs. */
  dns(): ResolverCounters | undefined;
  /** Logged denials by reason since the daemon started. */
  denials(): Record<string, number>;
}

export const OPERATIONS = ['create', 'remove', 'policy_set', 'up', 'gc', 'stats'] as const;
export type Operation = (typeof OPERATIONS)[number];

export class Metrics {
  readonly registry = new client.Registry();
  private readonly opDuration: client.Histogram<'op' | 'outcome'>;

  constructor(sources: MetricSources, maxSandboxSeries = 200) {
    const registers = [this.registry];
    client.collectDefaultMetrics({ register: this.registry, prefix: 'toastnet_daemon_' });
    this.opDuration = new client.Histogram({
      name: 'toastnet_operation_duration_seconds',
      help: 'Time the daemon took for an operation (create, remove, policy_set, up, gc, stats)',
      labelNames: ['op', 'outcome'],
      buckets: [0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers,
    });

    // The usual Prometheus "info" gauge: constant 1, the facts in its labels, so a
    // dashboard can join on it and see when a host runs another version.
    new client.Gauge({
      name: 'toastnet_build_info',
      help: 'The toastnet version and Node version of this daemon (always 1)',
      labelNames: ['version', 'node'],
      registers,
    }).set({ version: toastnetVersion(), node: process.versions.node }, 1);

    // Scrape-time readings: one kernel read per scrape for all sandboxes.
    let cached: { at: number; stats: SandboxStats[]; labelled: SandboxStats[]; rest: SandboxStats[] } | undefined;
    // The per-sandbox counters below are collected one after another: read the kernel, and
    // pick the busiest, once per scrape.
    const reading = () => {
      if (!cached || performance.now() - cached.at > 500) {
        const all = sources.stats();
        const busy = [...all].sort((a, b) => b.sent.bytes + b.received.bytes - (a.sent.bytes + a.received.bytes) || a.name.localeCompare(b.name));
        cached = { at: performance.now(), stats: all, labelled: busy.slice(0, maxSandboxSeries), rest: busy.slice(maxSandboxSeries) };
      }
      return cached;
    };
    const stats = () => reading().stats;
    new client.Gauge({
      name: 'toastnet_sandboxes',
      help: 'Live sandboxes',
      registers,
      collect() {
        this.set(stats().length);
      },
    });
    const picks: Record<string, (s: SandboxStats) => number> = {
      sent_bytes: (s) => s.sent.bytes,
      sent_packets: (s) => s.sent.packets,
      received_bytes: (s) => s.received.bytes,
      received_packets: (s) => s.received.packets,
      blocked_packets: (s) => s.blocked.packets,
    };
    const helps: Record<string, string> = {
      sent_bytes: 'Bytes a sandbox sent (IP, before limits and policy)',
      sent_packets: 'Packets a sandbox sent',
      received_bytes: 'Bytes a sandbox received',
      received_packets: 'Packets a sandbox received',
      blocked_packets: 'Packets of a sandbox blocked by policy or limits',
    };
    for (const [what, pick] of Object.entries(picks)) {
      const name = `toastnet_sandbox_${what}_total`;
      new client.Counter({
        name,
        help: helps[what],
        labelNames: ['sandbox'],
        registers,
        collect: () => {
          const c = this.registry.getSingleMetric(name) as client.Counter<'sandbox'>;
          c.reset();
          for (const s of reading().labelled) c.inc({ sandbox: s.name }, pick(s));
        },
      });
    }
    new client.Gauge({
      name: 'toastnet_sandboxes_unlabelled',
      help: 'Sums over the sandboxes without their own series (beyond metricsMaxSandboxes), by counter',
      labelNames: ['counter'],
      registers,
      collect: () => {
        const g = this.registry.getSingleMetric('toastnet_sandboxes_unlabelled') as client.Gauge<'counter'>;
        const { rest } = reading();
        for (const [what, pick] of Object.entries(picks)) g.set({ counter: what }, rest.reduce((n, s) => n + pick(s), 0));
      },
    });
    new client.Counter({
      name: 'toastnet_dns_total',
      help: 'Resolver counters: queries, answered, cached (of answered), servfail, dropped, upstreamTimeouts',
      labelNames: ['counter'],
      registers,
      collect() {
        this.reset();
        for (const [k, v] of Object.entries(sources.dns() ?? {})) if (k !== 'cacheEntries') this.inc({ counter: k }, v);
      },
    });
    new client.Gauge({
      name: 'toastnet_dns_cache_entries',
      help: 'Answers in the resolver cache',
      registers,
      collect() {
        this.set(sources.dns()?.cacheEntries ?? 0);
      },
    });
    new client.Counter({
      name: 'toastnet_denials_logged_total',
      help: 'Denials the kernel logged, by reason (the kernel logs at most 20/s per reason: a sample)',
      labelNames: ['reason'],
      registers,
      collect() {
        this.reset();
        for (const [reason, n] of Object.entries(sources.denials())) this.inc({ reason }, n);
      },
    });
  }


  /** Runs `fn` and records how long it took (sync or async), with its outcome. */
  time<T>(op: Operation, fn: () => T): T {
    const end = this.opDuration.startTimer({ op });
    try {
      const r = fn();
      if (r instanceof Promise) {
        return r.then((v) => {
          end({ outcome: 'ok' });
          return v;
        }, (err) => {
          end({ outcome: 'error' });
          throw err;
        }) as T;
      }
      end({ outcome: 'ok' });
      return r;
    } catch (err) {
      end({ outcome: 'error' });
      throw err;
    }
  }

  /** Latency quantiles per operation (from the histogram buckets), for status. */
  async latencies(): Promise<Record<string, { count: number; p50: number; p99: number }>> {
    const m = await this.opDuration.get();
    const byOp = new Map<string, { le: number; count: number }[]>();
    const counts = new Map<string, number>();
    for (const v of m.values) {
      const op = String(v.labels.op);
      if (v.metricName?.endsWith('_bucket')) {
        const list = byOp.get(op) ?? [];
        const rawLe = (v.labels as Record<string, string | number | undefined>).le;
        const le = rawLe === '+Inf' ? Infinity : Number(rawLe);
        const prev = list.find((x) => x.le === le);
        if (prev) prev.count += v.value;
        else list.push({ le, count: v.value });
        byOp.set(op, list);
      } else if (v.metricName?.endsWith('_count')) counts.set(op, (counts.get(op) ?? 0) + v.value);
    }
    const out: Record<string, { count: number; p50: number; p99: number }> = {};
    for (const [op, buckets] of byOp) {
      buckets.sort((a, b) => a.le - b.le);
      const n = counts.get(op) ?? 0;
      if (n === 0) continue;
      const q = (p: number) => buckets.find((b) => b.count >= p * n)?.le ?? Infinity;
      out[op] = { count: n, p50: q(0.5), p99: q(0.99) };
    }
    return out;
  }
}

/** Serves GET /metrics on `host:port` (loopback unless configured otherwise). */
export async function startMetricsServer(metrics: Metrics, host: string, port: number): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    if (req.method !== 'GET' || (req.url ?? '').replace(/\?.*$/, '') !== '/metrics') {
      res.writeHead(404).end('not found: GET /metrics\n');
      return;
    }
    metrics.registry.metrics().then((text) => {
      res.writeHead(200, { 'content-type': metrics.registry.contentType }).end(text);
    }, (err: Error) => {
      res.writeHead(500).end(`${err.message}\n`);
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return server;
}
