// Metric sources with nothing in them, for building a daemon's Metrics in unit tests; a
// test overrides what it looks at.
import type { MetricSources } from '../../src/service/metrics.js';

export function stubSources(over: Partial<MetricSources> = {}): MetricSources {
  return {
    stats: () => [],
    sandboxes: () => [],
    capacity: () => ({ addresses: { capacity: 0, used: 0, free: 0, releasing: 0 }, pool: { idle: 0 } }),
    dns: () => undefined,
    denials: () => ({}),
    ...over,
  };
}
