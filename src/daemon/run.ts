// `toastnet daemon`: foreground and systemd-friendly. Takes the instance, runs `up`,
// reconciles kernel and state (gc), serves DNS on the gateway (resolver.ts) and the API on
// <runDir>/toastnet.sock (backend.ts). SIGTERM/SIGINT stop it cleanly without touching
// sandboxes.
import { poolModeOf } from '../core/link-modes.js';
import path from 'node:path';
import type http from 'node:http';
import { Config } from '../config/schema.js';
import { serveApi } from '../api/server.js';
import { ToastnetClient } from '../api/client.js';
import { Engine } from '../service/engine.js';
import { NameChecks } from '../service/name-checks.js';
import { UnjudgedTally } from '../service/unjudged.js';
import { nameCheckQueue } from '../core/name-check.js';
import { EventLog } from '../service/events.js';
import { FlowLog } from '../service/flows.js';
import { maskOf, parseCidr } from '../core/ipv4.js';
import { Metrics, startMetricsServer } from '../service/metrics.js';
import { WarmPool } from '../service/pool.js';
import { PoolBuilder } from '../service/pool-builder.js';
import { sdNotify } from '../kernel/sd-notify.js';
import { SandboxResolver } from './resolver.js';
import { daemonBackend, statsWithDns } from './backend.js';
import { Logger, createLogger, defaultTarget } from './log.js';
import type { ApiAnswer } from '../api/server.js';

export function socketPath(c: Config): string {
  return path.join(c.runDir, 'toastnet.sock');
}

/** Opens the instance, sets it up and reconciles it; logs what gc removed. */
async function openReconciled(config: Config, log: Logger): Promise<Engine> {
  // Wait for a CLI working in-process to finish, but not for another daemon: it will not end.
  const other = new ToastnetClient(socketPath(config));
  const engine = await Engine.open(config, 10_000, () => other.ping());
  try {
    const t0 = performance.now();
    engine.up();
    const gc = engine.gc();
    const cleaned = gc.sandboxes.length + gc.namespaces.length + gc.links.length + gc.files.length;
    log.info({ instance: config.instance, subnet: config.subnet, gateway: config.gateway, sandboxes: engine.store.count(), ms: Number((performance.now() - t0).toFixed(1)), ...(cleaned ? { gc } : {}) }, 'up and reconciled');
    return engine;
  } catch (err) {
    engine.close();
    throw err;
  }
}

/**
 * A sandbox's name, where an API request concerns one: in the path, or for a create in the
 * answer. For the log's `sandbox` field.
 */
function sandboxOf(a: ApiAnswer): string | undefined {
  const m = /^\/v1\/sandboxes\/([^/?]+)/.exec(a.path);
  if (m) {
    try {
      return decodeURIComponent(m[1]);
    } catch {
      return undefined;
    }
  }
  return a.status === 201 ? (a.body as { name?: string } | undefined)?.name : undefined;
}

/**
 * Each API request: changes made at info; reads and refused requests (4xx: the client's
 * mistake, which a fuzzing or looping client can make thousands of times) at debug;
 * failures of the daemon itself (5xx) at error.
 */
export function logAnswer(log: Logger, a: ApiAnswer): void {
  const sandbox = sandboxOf(a);
  const fields = { ...(sandbox !== undefined ? { sandbox } : {}), method: a.method, path: a.path, status: a.status, ms: Number(a.ms.toFixed(3)) };
  const error = (a.body as { error?: { code?: string; message?: string } } | undefined)?.error;
  const msg = `${a.method} ${a.path.replace(/\?.*$/, '')} ${a.status}${error ? `: ${error.message}` : ''}`;
  if (a.status >= 500) log.error({ ...fields, code: error?.code }, msg);
  else if (a.method !== 'GET' && a.status < 400) log.info(fields, msg);
  else log.debug(fields, msg);
}

export async function runDaemon(config: Config, root: Logger = createLogger(config.logLevel, defaultTarget())): Promise<void> {
  const log = root.child({ component: 'daemon' });
  const engine = await openReconciled(config, log);
  let api: http.Server | undefined;
  let metricsServer: http.Server | undefined;
  let pool: WarmPool | undefined;
  let resolver: SandboxResolver | undefined;
  const events = new EventLog(engine.store.db);
  const names = new NameChecks(engine.live, events);
  const flows = config.flowRetention > 0 ? new FlowLog(engine.store.db, config.flowRetention) : undefined;
  let stopping = false;

  const stopResolver = async () => {
    const r = resolver;
    resolver = undefined;
    await r?.stop();
  };
  const stop = async (why: string): Promise<void> => {
    if (stopping) return;
    stopping = true;
    log.info({ why }, 'stopping; sandboxes are left running');
    await new Promise<void>((res) => (api ? api.close(() => res()) : res()));
    await new Promise<void>((res) => (metricsServer ? metricsServer.close(() => res()) : res()));
    await pool?.stop();
    await stopResolver();
    await names.stop();
    await flows?.stop();
    await events.stop();
    await engine.settled(); // processes left in removed sandboxes: ended before we go
    engine.close();
    log.info('stopped');
  };

  try {
    // Name checks: without this reader the gate drops what waits for a name (fail closed).
    // Before the resolver serves: the answers it posts to the reader (names checked without
    // an allow-list) would find none.
    const nameLog = root.child({ component: 'names' });
    try {
      await names.start(nameCheckQueue(config.logGroup), (m) => nameLog.warn(m));
      nameLog.info({ queue: nameCheckQueue(config.logGroup) }, 'judging first flights');
    } catch (err) {
      nameLog.error({ err }, `name checks unavailable, so connections of sandboxes with verifyNames wait: ${(err as Error).message}`);
    }
    const dnsLog = root.child({ component: 'dns' });
    if (config.dnsUpstreams.length === 0) dnsLog.warn('no DNS upstreams (set dnsUpstreams): sandboxes get SERVFAIL');
    resolver = new SandboxResolver(config, engine, (m) => dnsLog.warn(m), {
      refused: (e) => events.recordQuery(e),
      answered: flows && ((s, e) => flows.noteAnswer(s.id, e.name, e.answer)),
      answeredName: (s, name, addresses, ttl) => names.answered(s, name, addresses, ttl),
    });
    // What the reader lost with the last daemon (names checked without an allow-list).
    const takenBack = names.takeBackAnswers({ log: resolver.queries, createdAt: (n) => engine.store.getByName(n)?.createdAt, maxTtl: config.dnsMaxTtl });
    if (takenBack > 0) nameLog.info({ answers: takenBack }, 'took back answers from the query log');
    await resolver.forwarder.start();
    dnsLog.info({ listen: `${config.gateway}:53`, upstreams: config.dnsUpstreams }, 'serving DNS');

    const eventLog = root.child({ component: 'events' });
    try {
      await events.start(config.logGroup, (p, reason) => engine.attribute(p, reason), (m) => eventLog.warn(m.replace(/^events: /, '')));
      eventLog.info({ group: config.logGroup }, 'reading denials from NFLOG');
    } catch (err) {
      eventLog.warn({ err }, `denial events unavailable: ${(err as Error).message}`);
    }

    // What the gate dropped unjudged (while no daemon read the queue, or it was full): reported
    // whether or not the reader started.
    names.reportUnjudged(new UnjudgedTally(engine.store, engine.unjudgedCounters, (ip) => engine.live.at(ip)?.name), (m) => nameLog.warn(m));

    // The flow log: conntrack's new and destroyed flows of the subnet's sources.
    const flowLog = root.child({ component: 'flows' });
    if (flows) {
      try {
        const subnet = parseCidr(config.subnet);
        const { receiveBuffer } = await flows.start({ network: subnet.network, mask: maskOf(subnet.prefix), gateway: config.gateway }, {
          sandboxAt: (ip) => engine.sandboxByIp(ip),
          checkedName: (src, sport, dst, dport) => names.nameOf(src, sport, dst, dport),
        }, (m) => flowLog.warn(m));
        flowLog.info({ retention: config.flowRetention, receiveBuffer }, 'recording flows from conntrack events');
      } catch (err) {
        flowLog.error({ err }, `flow log unavailable: ${(err as Error).message}`);
      }
    }

    const metrics = new Metrics({
      stats: () => statsWithDns(engine, resolver, undefined, names),
      sandboxes: () => engine.list(),
      capacity: () => engine.status(),
      dns: () => resolver?.stats,
      denials: () => events.byReason,
      flows: () => flows?.counts,
      denialCounts: () => engine.denialCounts(),
    }, config.metricsMaxSandboxes, config.metricsLabels);
    if (config.metrics) {
      metricsServer = await startMetricsServer(metrics, config.metrics.host, config.metrics.port);
      root.child({ component: 'metrics' }).info({ url: `http://${config.metrics.host}:${config.metrics.port}/metrics` }, 'serving metrics');
    }

    const poolLog = root.child({ component: 'pool' });
    const warm = new WarmPool(engine, { ...config.pool, defaultMode: config.defaultMode, holds: poolModeOf(config.defaultMode) }, (m) => poolLog.warn(m.replace(/^pool: /, '')), () => new PoolBuilder(config.instance));
    pool = warm;
    const trimmed = warm.trim();
    if (trimmed > 0) poolLog.info({ removed: trimmed, poolSize: config.pool.size }, 'removed idle sandbox networks beyond poolSize');
    warm.refill();
    if (config.pool.size > 0) poolLog.info({ size: config.pool.size, refillBelow: config.pool.refillBelow }, 'keeping sandbox networks ready');
    const apiLog = root.child({ component: 'api' });

    api = await serveApi(daemonBackend({
      engine, pool: warm, metrics, events, names, flows,
      resolver: () => resolver,
      beforeDown: async () => {
        await warm.stop();
        await stopResolver();
        await names.stop();
      },
      afterDown: () => setImmediate(() => void stop('down').then(() => process.exit(0))),
    }), socketPath(config), { onAnswer: (a) => logAnswer(apiLog, a) });
    log.info({ socket: socketPath(config) }, 'ready');
    // Under systemd (Type=notify): started means serving.
    if (sdNotify(`READY=1\nMAINPID=${process.pid}\nSTATUS=serving ${config.instance}`)) log.debug('told systemd: ready');
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
