// Per-sandbox traffic for Prometheus, with a bounded number of series: the busiest
// `maxSandboxSeries` sandboxes get counters labelled with their name; what the others hold
// is summed into one gauge per quantity (a gauge: the sum goes down when a sandbox leaves or
// moves into the labelled set, which a counter must never do). Thousands of sandboxes do
// not flood the scraper, and labelled series plus the gauge add up to every sandbox.
// One metric per quantity, so that a sum over a metric's series adds like units.
// Sandbox labels named in the config's `metricsLabels` are labels of these series too
// (label_<key>): a fixed list of keys, each with one value per sandbox, so they add no
// series beyond the bounded per-sandbox ones; all other labels stay out of Prometheus.
import client from 'prom-client';
import type { SandboxStats } from './accounting.js';
import { metricLabelName } from '../core/labels.js';

interface Quantity {
  /** The metric names: `toastnet_sandbox_<key>_total` per sandbox, `toastnet_sandboxes_unlabelled_<key>` for the rest. */
  key: string;
  help: string;
  pick(s: SandboxStats): number;
}

export const TRAFFIC_QUANTITIES: readonly Quantity[] = [
  { key: 'sent_bytes', help: 'Bytes a sandbox sent (IP, before limits and policy judged them)', pick: (s) => s.sent.bytes },
  { key: 'sent_packets', help: 'Packets a sandbox sent (before limits and policy judged them)', pick: (s) => s.sent.packets },
  { key: 'received_bytes', help: 'Bytes delivered to a sandbox (IP)', pick: (s) => s.received.bytes },
  { key: 'received_packets', help: 'Packets delivered to a sandbox', pick: (s) => s.received.packets },
  { key: 'blocked_packets', help: 'Packets of a sandbox dropped or rejected by policy or limits', pick: (s) => s.blocked.packets },
  { key: 'published_connections', help: 'Connections let in through a sandbox\'s published ports (since the table was last rebuilt)', pick: (s) => s.published?.connections ?? 0 },
  {
    key: 'shaped_dropped_packets',
    help: 'Packets of a sandbox its bandwidth shaper dropped for want of queue room, both ways (0 without a rate limit; since its shaper was made)',
    pick: (s) => (s.shaped?.egress?.dropped ?? 0) + (s.shaped?.ingress?.dropped ?? 0),
  },
  {
    key: 'name_unjudged_packets',
    help: 'Packets of a name-checked sandbox dropped with no verdict: the daemon down or its name queue full (fail closed; reported since the daemon started)',
    pick: (s) => s.nameChecks?.unjudged ?? 0,
  },
];

interface Split {
  labelled: SandboxStats[];
  rest: SandboxStats[];
}

/** The busiest first (bytes both ways; ties by name, so the choice is stable). */
export function splitBusiest(all: SandboxStats[], maxSandboxSeries: number): Split {
  const busy = [...all].sort((a, b) => b.sent.bytes + b.received.bytes - (a.sent.bytes + a.received.bytes) || a.name.localeCompare(b.name));
  return { labelled: busy.slice(0, maxSandboxSeries), rest: busy.slice(maxSandboxSeries) };
}

/**
 * Registers the per-sandbox counters and the unlabelled sums; `split` is read at scrape time.
 * `promoted`: the sandbox label keys that become metric labels; `labelsOf` gives a sandbox's
 * labels (one without the key gets "", which Prometheus treats as no label).
 */
export function registerSandboxTraffic(split: () => Split, registers: client.Registry[], promoted: readonly string[] = [], labelsOf: (sandbox: string) => Record<string, string> | undefined = () => undefined): void {
  const metricLabels = promoted.map((key) => ({ key, name: metricLabelName(key) }));
  const seriesLabels = (name: string): Record<string, string> => {
    const own = labelsOf(name) ?? {};
    return { sandbox: name, ...Object.fromEntries(metricLabels.map((l) => [l.name, own[l.key] ?? ''])) };
  };
  for (const q of TRAFFIC_QUANTITIES) {
    new client.Counter({
      name: `toastnet_sandbox_${q.key}_total`,
      help: `${q.help}; the busiest sandboxes only (metricsMaxSandboxes), the others in toastnet_sandboxes_unlabelled_${q.key}`,
      labelNames: ['sandbox', ...metricLabels.map((l) => l.name)],
      registers,
      collect() {
        this.reset();
        for (const s of split().labelled) this.inc(seriesLabels(s.name), q.pick(s));
      },
    });
    new client.Gauge({
      name: `toastnet_sandboxes_unlabelled_${q.key}`,
      help: `${q.help}, summed over the sandboxes without their own toastnet_sandbox_${q.key}_total series`,
      registers,
      collect() {
        this.set(split().rest.reduce((n, s) => n + q.pick(s), 0));
      },
    });
  }
}
