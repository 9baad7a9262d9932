// What the daemon serves on its API: the engine's operations, with the warm pool in front
// of creates, the resolver's figures and per-sandbox counts added, each operation timed for
// metrics, and a removed sandbox's resolver state dropped with it.
import type { NameChecks } from '../service/name-checks.js';
import type { ApiBackend } from '../api/routes.js';
import type { Engine } from '../service/engine.js';
import type { EventLog } from '../service/events.js';
import type { FlowLog } from '../service/flows.js';
import type { Metrics } from '../service/metrics.js';
import type { WarmPool } from '../service/pool.js';
import type { SandboxResolver } from './resolver.js';
import { cniOperation, handleCni } from '../service/cni.js';

export interface DaemonParts {
  engine: Engine;
  pool: WarmPool;
  metrics: Metrics;
  events: EventLog;
  names?: NameChecks;
  /** undefined when flowRetention is 0 (off). */
  flows?: FlowLog;
  /** undefined once `down` stopped it. */
  resolver: () => SandboxResolver | undefined;
  /** Stops the pool and the resolver before `down` removes everything; the daemon exits after answering. */
  beforeDown: () => Promise<void>;
  afterDown: () => void;
}

/** Accounting with each sandbox's resolver counts. */
export function statsWithDns(engine: Engine, resolver: SandboxResolver | undefined, name?: string, names?: NameChecks) {
  const idOf = new Map(engine.list().map((s) => [s.name, s.id]));
  return engine.stats(name).map((s) => {
    const id = idOf.get(s.name);
    const d = id === undefined ? undefined : resolver?.countsOf(id);
    const n = id === undefined ? undefined : names?.countsOf(id);
    return { ...s, ...(d ? { dns: { ...d } } : {}), ...(n ? { nameChecks: { ...n } } : {}) };
  });
}

export function daemonBackend(p: DaemonParts): ApiBackend {
  const { engine, pool, metrics, events } = p;
  return {
    dnsQueries: async (q) => p.resolver()?.queries.list(q) ?? [],
    events: async (q) => {
      let list = events.list(q);
      if (list.length === 0 && q.waitMs) {
        await events.wait(q.waitMs);
        list = events.list(q);
      }
      return list;
    },
    flows: async (q) => {
      const log = p.flows;
      if (!log) return { flows: [] };
      let list = log.list(q);
      if (list.length === 0 && q.waitMs) {
        await log.wait(q.waitMs);
        list = log.list(q);
      }
      return { flows: list, counts: structuredClone(log.counts) };
    },
    status: async () => {
      const st = engine.status(process.pid);
      const resolver = p.resolver();
      const gate = p.names?.counters;
      return { ...st, pool: { ...st.pool, ...pool.counts }, ...(resolver ? { dns: resolver.stats } : {}), ...(gate ? { nameChecks: gate } : {}), latency: await metrics.latencies() };
    },
    list: () => engine.list(),
    get: (name) => engine.get(name),
    inspect: (name) => engine.inspect(name),
    create: (body) => metrics.time('create', () => pool.create(body)),
    cni: async (body) => {
      const t0 = performance.now();
      const answer = handleCni(engine, body, { removed: (id) => p.resolver()?.forget(id) });
      const op = cniOperation(body);
      if (op) metrics.record(op, (performance.now() - t0) / 1000, answer.status < 300 ? 'ok' : 'error');
      return answer;
    },
    remove: async (name) => {
      const id = metrics.time('remove', () => {
        const { id: removed } = engine.get(name);
        engine.remove(name);
        return removed;
      });
      p.resolver()?.forget(id);
      p.flows?.forget(id);
    },
    stats: (name) => metrics.time('stats', () => statsWithDns(engine, p.resolver(), name, p.names)),
    policyGet: (name) => engine.policyGet(name),
    policySet: (name, policy) => metrics.time('policy_set', () => engine.policySet(name, policy)),
    gc: () => {
      const report = metrics.time('gc', () => engine.gc());
      p.resolver()?.forgetGone(); // the sandboxes gc removed
      return report;
    },
    up: () => {
      metrics.time('up', () => engine.up());
      return engine.status(process.pid);
    },
    down: async () => {
      await p.beforeDown();
      const r = await engine.down();
      p.afterDown();
      return r;
    },
  };
}
