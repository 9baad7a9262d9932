// The instance's backend in-process, for CLI commands when no daemon runs: the same
// interface the daemon serves (api/types.ts, InstanceBackend), over an engine this process
// holds under the instance lock. Without a daemon there is no resolver, pool or latency
// figures to add to the status, and no new events arrive while waiting for them.
import type { EventQuery, InstanceBackend } from '../api/types.js';
import type { Engine } from './engine.js';
import { DnsLog, EventLog } from './events.js';
import { FlowLog } from './flows.js';

export function localBackend(e: Engine): InstanceBackend {
  return {
    status: async () => e.status(),
    list: async () => e.list(),
    get: async (name) => e.get(name),
    inspect: async (name) => e.inspect(name),
    remove: async (name) => e.remove(name),
    policyGet: async (name) => e.policyGet(name),
    policySet: async (name, policy) => e.policySet(name, policy),
    stats: async (name) => e.stats(name),
    gc: async () => e.gc(),
    events: async (q: EventQuery) => new EventLog(e.store.db).list(q),
    dnsQueries: async (q: EventQuery) => new DnsLog(e.store.db).list(q),
    // What a daemon recorded; without one nothing reads the kernel's events (no counts).
    flows: async (q: EventQuery) => ({ flows: new FlowLog(e.store.db).list(q) }),
    up: async (o = {}) => {
      e.up(o);
      return e.status();
    },
    down: async (o = {}) => e.down(o),
  };
}
