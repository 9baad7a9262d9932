// `toastnet daemon`: foreground and systemd-friendly. Takes the instance, runs `up`,
// reconciles kernel and state (gc), serves DNS on the gateway and the API on
// <runDir>/toastnet.sock. SIGTERM/SIGINT stop it cleanly without touching sandboxes.
import path from 'node:path';
import type http from 'node:http';
import { Config, parseUpstream } from '../config/schema.js';
import { parseCidr } from '../core/ipv4.js';
import { DnsForwarder } from '../dns/forwarder.js';
import { ApiBackend } from '../api/routes.js';
import { serveApi } from '../api/server.js';
import { ToastnetClient } from '../api/client.js';
import { Engine } from './engine.js';
import { DnsLog, EventLog, LogLimiter } from './events.js';
import { DnsGate } from '../dns/gate.js';
import { RESOLVER_SOCKET_MARK } from '../core/ruleset.js';
import { DnsCache } from '../dns/cache.js';
import { Metrics, startMetricsServer } from './metrics.js';
import { WarmPool } from './pool.js';
import { PoolBuilder } from './pool-builder.js';

export type Log = (msg: string) => void;

export const stdoutLog: Log = (msg) => process.stdout.write(`${new Date().toISOString()} ${msg}\n`);

export function socketPath(c: Config): string {
  return path.join(c.runDir, 'toastnet.sock');
}

export async function runDaemon(config: Config, log: Log = stdoutLog): Promise<void> {
  // Wait for a CLI working in-process to finish, but not for another daemon: it will not end.
  const other = new ToastnetClient(socketPath(config));
  const engine = await Engine.open(config, 10_000, () => other.ping());
  let api: http.Server | undefined;
  let metricsServer: http.Server | undefined;
  let stopPool = async (): Promise<void> => {};
  let dns: DnsForwarder | undefined;
  let events: EventLog | undefined;
  let dnsLog: DnsLog | undefined;
  let dnsCountsOf: (id: number) => { queries: number; refused: number; limited: number; stripped: number } | undefined = () => undefined;
  let stopping = false;

  const stop = async (why: string): Promise<void> => {
    if (stopping) return;
    stopping = true;
    log(`stopping (${why}); sandboxes are left running`);
    await new Promise<void>((res) => (api ? api.close(() => res()) : res()));
    await new Promise<void>((res) => (metricsServer ? metricsServer.close(() => res()) : res()));
    await stopPool();
    await dns?.stop();
    await events?.stop();
    dnsLog?.flush();
    dnsLog = undefined;
    await engine.settled(); // processes left in removed sandboxes: ended before we go
    engine.close();
    log('stopped');
  };

  try {
    const t0 = performance.now();
    engine.up();
    const gc = engine.gc();
    const cleaned = gc.sandboxes.length + gc.namespaces.length + gc.links.length + gc.files.length;
    log(`up: instance ${config.instance}, subnet ${config.subnet}, gateway ${config.gateway}, ${engine.store.count()} sandboxes, reconciled in ${(performance.now() - t0).toFixed(1)} ms${cleaned ? `, gc removed ${JSON.stringify(gc)}` : ''}`);

    if (config.dnsUpstreams.length === 0) log('warning: no DNS upstreams (set dnsUpstreams): sandboxes get SERVFAIL');
    const queries = new DnsLog(engine.store.db);
    // Per-sandbox state is keyed by sandbox id: names and addresses are reused, ids never.
    const refusalLog = new LogLimiter<number>();
    // Per-sandbox resolver counts for stats (every query, not only the logged ones).
    const dnsCounts = new Map<number, { queries: number; refused: number; limited: number; stripped: number }>();
    dnsCountsOf = (id) => dnsCounts.get(id);
    dnsLog = queries;
    const gate = new DnsGate({
      sandbox: (ip) => engine.sandboxByIp(ip),
      sandboxById: (id) => engine.sandboxById(id),
      admit: (s, addresses, ttl) => engine.admitResolved(s, addresses, ttl),
      log: (e, s) => {
        let c = dnsCounts.get(s.id);
        if (!c) dnsCounts.set(s.id, (c = { queries: 0, refused: 0, limited: 0, stripped: 0 }));
        c.queries++;
        if (e.verdict !== 'answered') c[e.verdict]++;
        // Answered queries are logged (in batches); refusals only at a limited rate per
        // sandbox, like the kernel's denial log, so a flood cannot fill the disk.
        if (e.verdict === 'answered' || e.verdict === 'stripped') queries.record(e);
        else if (refusalLog.allow(s.id)) {
          queries.record(e);
          events?.recordQuery(e);
        }
      },
    }, { minTtl: config.dnsMinTtl, maxTtl: config.dnsMaxTtl, refuseWith: config.dnsRefuseWith, subnet: config.subnet });
    // A removed sandbox's resolver state goes with it (ids are never reused: only memory is at stake).
    const forgetDnsOf = (id: number) => {
      gate.forget(id);
      dnsCounts.delete(id);
      refusalLog.forget(id);
    };
    const forgetDnsOfGone = () => {
      gate.forgetGone();
      for (const id of [...dnsCounts.keys()]) if (!engine.sandboxById(id)) forgetDnsOf(id);
    };
    dns = new DnsForwarder({
      listenHost: config.gateway,
      upstreams: config.dnsUpstreams.map(parseUpstream),
      timeoutMs: config.dnsTimeoutMs,
      clients: parseCidr(config.subnet),
      socketMark: RESOLVER_SOCKET_MARK,
      gate,
      cache: config.dnsCacheSize > 0 ? new DnsCache({ maxEntries: config.dnsCacheSize, maxTtl: config.dnsMaxTtl }) : undefined,
      log,
    });
    await dns.start();
    log(`dns: ${config.gateway}:53 -> ${config.dnsUpstreams.join(', ') || '(none)'}`);

    events = new EventLog(engine.store.db);
    try {
      await events.start(config.logGroup, (p, reason) => engine.attribute(p, reason), log);
      log(`events: NFLOG group ${config.logGroup}`);
    } catch (err) {
      log(`warning: denial events unavailable: ${(err as Error).message}`);
    }
    const ev = events;

    const statsWithDns = (name?: string) => {
      const idOf = new Map(engine.list().map((s) => [s.name, s.id]));
      return engine.stats(name).map((s) => {
        const id = idOf.get(s.name);
        const d = id === undefined ? undefined : dnsCountsOf(id);
        return d ? { ...s, dns: { ...d } } : s;
      });
    };
    const metrics = new Metrics({
      stats: () => statsWithDns(),
      dns: () => (dns ? { ...dns.stats, cacheEntries: dns.cacheEntries } : undefined),
      denials: () => ev.byReason,
    }, config.metricsMaxSandboxes);
    if (config.metrics) {
      metricsServer = await startMetricsServer(metrics, config.metrics.host, config.metrics.port);
      log(`metrics: http://${config.metrics.host}:${config.metrics.port}/metrics`);
    }

    const pool = new WarmPool(engine, config.pool, log, () => new PoolBuilder(config.instance));
    stopPool = () => pool.stop();
    const trimmed = pool.trim();
    if (trimmed > 0) log(`pool: removed ${trimmed} idle sandbox networks beyond poolSize ${config.pool.size}`);
    pool.refill();
    if (config.pool.size > 0) log(`pool: keeping ${config.pool.size} sandbox networks ready (refill below ${config.pool.refillBelow})`);

    const backend: ApiBackend = {
      dnsQueries: async (q) => queries.list(q),
      events: async (q) => {
        let list = ev.list(q);
        if (list.length === 0 && q.waitMs) {
          await ev.wait(q.waitMs);
          list = ev.list(q);
        }
        return list;
      },
      status: async () => {
        const st = engine.status(process.pid);
        return {
          ...st,
          pool: { ...st.pool, ...pool.counts },
          ...(dns ? { dns: { ...dns.stats, cacheEntries: dns.cacheEntries } } : {}),
          latency: await metrics.latencies(),
        };
      },
      list: () => engine.list(),
      get: (name) => engine.get(name),
      inspect: (name) => engine.inspect(name),
      create: (body) => metrics.time('create', () => pool.create(body)),
      remove: async (name) => {
        const id = metrics.time('remove', () => {
          const { id: removed } = engine.get(name);
          engine.remove(name);
          return removed;
        });
        forgetDnsOf(id);
      },
      stats: (name) => metrics.time('stats', () => statsWithDns(name)),
      policyGet: (name) => engine.policyGet(name),
      policySet: (name, policy) => metrics.time('policy_set', () => engine.policySet(name, policy)),
      gc: () => {
        const report = metrics.time('gc', () => engine.gc());
        forgetDnsOfGone(); // the sandboxes gc removed
        return report;
      },
      up: () => {
        metrics.time('up', () => engine.up());
        return engine.status(process.pid);
      },
      down: async () => {
        await stopPool();
        await dns?.stop();
        dns = undefined;
        dnsLog?.flush();
        dnsLog = undefined;
        const r = await engine.down();
        setImmediate(() => void stop('down').then(() => process.exit(0)));
        return r;
      },
    };
    api = await serveApi(backend, socketPath(config));
    log(`api: ${socketPath(config)}; ready (pid ${process.pid})`);
  } catch (err) {
    await stop('startup failed');
    throw err;
  }

  await new Promise<void>((resolve) => {
    const onSignal = (sig: string) => void stop(sig).then(resolve);
    process.once('SIGTERM', () => onSignal('SIGTERM'));
    process.once('SIGINT', () => onSignal('SIGINT'));
  });
}
