// Prometheus metrics for the daemon (opt-in: config `metricsListen`), with prom-client:
// the build (version, Node), operation latencies as histograms, the instance's sandboxes,
// addresses and warm pool, per-sandbox traffic (bounded: sandbox-traffic-metrics.ts), the
// resolver's queries by outcome, logged denials by reason, and process health. Each metric
// has one unit, so a sum over its series means something; README "Limits and accounting"
// lists them all.
import http from 'node:http';
import client from 'prom-client';
import type { SandboxStats } from './accounting.js';
import type { FlowCounts, ResolverCounters, SandboxInfo, Status } from '../api/types.js';
import { LINK_MODES, type SandboxMode } from '../core/link-modes.js';
import { QUERY_OUTCOMES } from '../dns/query-outcomes.js';
import { registerSandboxTraffic, splitBusiest } from './sandbox-traffic-metrics.js';
import { toastnetVersion } from '../version.js';

export interface MetricSources {
  stats(): SandboxStats[];
  /** The live sandboxes (engine.list()): counted by mode; their labels for metricsLabels. */
  sandboxes(): Pick<SandboxInfo, 'name' | 'mode' | 'labels'>[];
  /** The subnet's addresses and the idle warm-pool members, as status tells them (engine.status()). */
  capacity(): Pick<Status, 'addresses' | 'pool'>;
  /** The resolver's counters, when it runs. */
  dns(): ResolverCounters | undefined;
  /** Logged denials by reason since the daemon started. */
  denials(): Record<string, number>;
  /** Exact blocked and reported packets by deny reason, instance-wide since the table was last built. */
  denialCounts?(): Record<string, { blocked: number; reported: number }>;
  /** The flow log's counts since the daemon started (undefined: no flow log). */
  flows?(): FlowCounts | undefined;
}

export const OPERATIONS = ['create', 'remove', 'policy_set', 'up', 'gc', 'stats', 'cni_add', 'cni_del', 'cni_check', 'cni_gc'] as const;
export type Operation = (typeof OPERATIONS)[number];

/**
 * Node's own metrics (prom-client's defaults: process_*, nodejs_*) carry this prefix, so that
 * they never take the names dashboards and node_exporter use for the host's processes.
 */
export const PROCESS_METRICS_PREFIX = 'toastnet_daemon_';

/**
 * `read`'s value, read again only when older than half a second: prom-client collects
 * metric by metric, and one scrape should cost one reading of each source (the kernel's
 * counters for every sandbox, the instance's status), not one per metric.
 */
function perScrape<T>(read: () => T): () => T {
  let last: { at: number; value: T } | undefined;
  return () => {
    if (!last || performance.now() - last.at > 500) last = { at: performance.now(), value: read() };
    return last.value;
  };
}

export class Metrics {
  readonly registry = new client.Registry();
  private readonly opDuration: client.Histogram<'op' | 'outcome'>;

  /** `labelKeys`: sandbox labels that become labels of the per-sandbox series (config metricsLabels). */
  constructor(sources: MetricSources, maxSandboxSeries = 200, labelKeys: readonly string[] = []) {
    const registers = [this.registry];
    client.collectDefaultMetrics({ register: this.registry, prefix: PROCESS_METRICS_PREFIX });
    this.opDuration = new client.Histogram({
      name: 'toastnet_operation_duration_seconds',
      help: 'Time the daemon took for an operation (create, remove, policy_set, up, gc, stats; cni_add, cni_del, cni_check, cni_gc for the CNI plugin), by outcome (ok, error)',
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

    this.registerInstance(sources, registers);
    const stats = perScrape(() => splitBusiest(sources.stats(), maxSandboxSeries));
    const labels = perScrape(() => new Map(sources.sandboxes().map((s) => [s.name, s.labels])));
    registerSandboxTraffic(stats, registers, labelKeys, (name) => labels().get(name));
    this.registerResolver(sources, registers);
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
    const denialCounts = perScrape(() => sources.denialCounts?.() ?? {});
    new client.Counter({
      name: 'toastnet_denied_packets_total',
      help: 'Packets denied, by reason, exactly (the kernel\'s counter in each deny chain; instance-wide, restarting when `up` rebuilds the table); action: blocked, or reported (report mode let it through)',
      labelNames: ['reason', 'action'],
      registers,
      collect() {
        this.reset();
        for (const [reason, c] of Object.entries(denialCounts())) {
          this.inc({ reason, action: 'blocked' }, c.blocked);
          this.inc({ reason, action: 'reported' }, c.reported);
        }
      },
    });
    this.registerFlows(sources, registers);
  }

  /** The flow log: records written, and the events lost on the way (never silently). */
  private registerFlows(sources: MetricSources, registers: client.Registry[]): void {
    const counts = () => sources.flows?.() ?? { recorded: 0, dropped: { kernel: 0, daemon: 0 }, unattributed: 0 };
    new client.Counter({
      name: 'toastnet_flow_records_total',
      help: 'Flow records written to the flow log (an open and a closed record per flow)',
      registers,
      collect() {
        this.reset();
        this.inc(counts().recorded);
      },
    });
    new client.Counter({
      name: 'toastnet_flow_records_dropped_total',
      help: 'Conntrack events the flow log lost, by where: kernel (the event socket\'s buffer was full: its drop count), daemon (read, but the database refused their batch); both exact',
      labelNames: ['where'],
      registers,
      collect() {
        this.reset();
        const c = counts();
        this.inc({ where: 'kernel' }, c.dropped.kernel);
        this.inc({ where: 'daemon' }, c.dropped.daemon);
      },
    });
  }

  /** Sandboxes by mode, the subnet's addresses by state, idle pool members. */
  private registerInstance(sources: MetricSources, registers: client.Registry[]): void {
    const capacity = perScrape(() => sources.capacity());
    new client.Gauge({
      name: 'toastnet_sandboxes',
      help: 'Live sandboxes, by how they are attached (veth, macvlan, tap); warm-pool members are not sandboxes',
      labelNames: ['mode'],
      registers,
      collect() {
        // Every mode, at 0 too: a series that vanishes reads as "no data", not as none.
        const byMode = Object.fromEntries(Object.keys(LINK_MODES).map((m) => [m, 0])) as Record<SandboxMode, number>;
        for (const s of sources.sandboxes()) byMode[s.mode] = (byMode[s.mode] ?? 0) + 1;
        for (const [mode, n] of Object.entries(byMode)) this.set({ mode }, n);
      },
    });
    new client.Gauge({
      name: 'toastnet_addresses',
      help: 'The subnet\'s sandbox addresses by state: free, assigned (to sandboxes, pool members and those being built), releasing (held by removed sandboxes until their processes end); they add up to the capacity',
      labelNames: ['state'],
      registers,
      collect() {
        const { free, used, releasing } = capacity().addresses;
        this.set({ state: 'free' }, free);
        this.set({ state: 'assigned' }, used - releasing);
        this.set({ state: 'releasing' }, releasing);
      },
    });
    new client.Gauge({
      name: 'toastnet_pool_idle_members',
      help: 'Warm-pool members ready to be taken by a create (they hold assigned addresses)',
      registers,
      collect() {
        this.set(capacity().pool.idle);
      },
    });
  }

  /** The resolver's queries by outcome (they partition the queries), upstream timeouts, cache size. */
  private registerResolver(sources: MetricSources, registers: client.Registry[]): void {
    new client.Counter({
      name: 'toastnet_dns_queries_total',
      help: `Queries the resolver dealt with, by outcome (${QUERY_OUTCOMES.join(', ')}): each counted once, when its answer (or none) was sent`,
      labelNames: ['outcome'],
      registers,
      collect() {
        this.reset();
        const dns = sources.dns();
        for (const outcome of QUERY_OUTCOMES) this.inc({ outcome }, dns?.[outcome] ?? 0);
      },
    });
    new client.Counter({
      name: 'toastnet_dns_upstream_timeouts_total',
      help: 'Upstream attempts the resolver gave up on (no answer in dnsTimeoutMs, or a failed TCP exchange); a query may have several',
      registers,
      collect() {
        this.reset();
        this.inc(sources.dns()?.upstreamTimeouts ?? 0);
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
  }

  /** Runs `fn` and records how long it took (sync or async), with its outcome. */
  /** An operation timed by its caller (one whose failure is an answer, not a throw: a CNI call). */
  record(op: Operation, seconds: number, outcome: 'ok' | 'error'): void {
    this.opDuration.observe({ op, outcome }, seconds);
  }

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
