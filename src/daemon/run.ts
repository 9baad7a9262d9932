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
import { EventLog } from '../service/events.js';
import { Metrics, startMetricsServer } from '../service/metrics.js';
import { WarmPool } from '../service/pool.js';
import { PoolBuilder } from '../service/pool-builder.js';
import { sdNotify } from '../kernel/sd-notify.js';
import { Log, SandboxResolver } from './resolver.js';
import { daemonBackend, statsWithDns } from './backend.js';

export type { Log };

export const stdoutLog: Log = (msg) => process.stdout.write(`${new Date().toISOString()} ${msg}\n`);

export function socketPath(c: Config): string {
  return path.join(c.runDir, 'toastnet.sock');
}

/** Opens the instance, sets it up and reconciles it; logs what gc removed. */
async function openReconciled(config: Config, log: Log): Promise<Engine> {
  // Wait for a CLI working in-process to finish, but not for another daemon: it will not end.
  const other = new ToastnetClient(socketPath(config));
  const engine = await Engine.open(config, 10_000, () => other.ping());
  try {
    const t0 = performance.now();
    engine.up();
    const gc = engine.gc();
    const cleaned = gc.sandboxes.length + gc.namespaces.length + gc.links.length + gc.files.length;
    log(`up: instance ${config.instance}, subnet ${config.subnet}, gateway ${config.gateway}, ${engine.store.count()} sandboxes, reconciled in ${(performance.now() - t0).toFixed(1)} ms${cleaned ? `, gc removed ${JSON.stringify(gc)}` : ''}`);
    return engine;
  } catch (err) {
    engine.close();
    throw err;
  }
}

export async function runDaemon(config: Config, log: Log = stdoutLog): Promise<void> {
  const engine = await openReconciled(config, log);
  let api: http.Server | undefined;
  let metricsServer: http.Server | undefined;
  let pool: WarmPool | undefined;
  let resolver: SandboxResolver | undefined;
  const events = new EventLog(engine.store.db);
  let stopping = false;

  const stopResolver = async () => {
    const r = resolver;
    resolver = undefined;
    await r?.stop();
  };
  const stop = async (why: string): Promise<void> => {
    if (stopping) return;
    stopping = true;
    log(`stopping (${why}); sandboxes are left running`);
    await new Promise<void>((res) => (api ? api.close(() => res()) : res()));
    await new Promise<void>((res) => (metricsServer ? metricsServer.close(() => res()) : res()));
    await pool?.stop();
    await stopResolver();
    await events.stop();
    await engine.settled(); // processes left in removed sandboxes: ended before we go
    engine.close();
    log('stopped');
  };

  try {
    if (config.dnsUpstreams.length === 0) log('warning: no DNS upstreams (set dnsUpstreams): sandboxes get SERVFAIL');
    resolver = new SandboxResolver(config, engine, log, (e) => events.recordQuery(e));
    await resolver.forwarder.start();
    log(`dns: ${config.gateway}:53 -> ${config.dnsUpstreams.join(', ') || '(none)'}`);

    try {
      await events.start(config.logGroup, (p, reason) => engine.attribute(p, reason), log);
      log(`events: NFLOG group ${config.logGroup}`);
    } catch (err) {
      log(`warning: denial events unavailable: ${(err as Error).message}`);
    }

    const metrics = new Metrics({
      stats: () => statsWithDns(engine, resolver),
      sandboxes: () => engine.list(),
      capacity: () => engine.status(),
      dns: () => resolver?.stats,
      denials: () => events.byReason,
    }, config.metricsMaxSandboxes, config.metricsLabels);
    if (config.metrics) {
      metricsServer = await startMetricsServer(metrics, config.metrics.host, config.metrics.port);
      log(`metrics: http://${config.metrics.host}:${config.metrics.port}/metrics`);
    }

    const warm = new WarmPool(engine, { ...config.pool, defaultMode: config.defaultMode, holds: poolModeOf(config.defaultMode) }, log, () => new PoolBuilder(config.instance));
    pool = warm;
    const trimmed = warm.trim();
    if (trimmed > 0) log(`pool: removed ${trimmed} idle sandbox networks beyond poolSize ${config.pool.size}`);
    warm.refill();
    if (config.pool.size > 0) log(`pool: keeping ${config.pool.size} sandbox networks ready (refill below ${config.pool.refillBelow})`);

    api = await serveApi(daemonBackend({
      engine, pool: warm, metrics, events,
      resolver: () => resolver,
      beforeDown: async () => {
        await warm.stop();
        await stopResolver();
      },
      afterDown: () => setImmediate(() => void stop('down').then(() => process.exit(0))),
    }), socketPath(config));
    log(`api: ${socketPath(config)}; ready (pid ${process.pid})`);
    // Under systemd (Type=notify): started means serving.
    if (sdNotify(`READY=1\nMAINPID=${process.pid}\nSTATUS=serving ${config.instance}`)) log('told systemd: ready');
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
