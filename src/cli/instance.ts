// How the CLI reaches an instance: one backend interface (api/types.ts, InstanceBackend),
// served by the daemon's API when one runs, otherwise by the engine opened in-process under
// the instance lock. `create`/`run` start a daemon in
// the background first, since sandboxes need its DNS forwarder.
import fs from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { ToastnetClient } from '../api/client.js';
import { Config } from '../config/schema.js';
import { ToastnetError } from '../errors.js';
import { Engine } from '../service/engine.js';
import { localBackend } from '../service/local-backend.js';
import type { InstanceBackend } from '../api/types.js';
import { socketPath } from '../daemon/run.js';
import { DAEMON_NODE_FLAGS } from '../daemon/node-flags.js';

const LOCK_WAIT_MS = 30_000;
const DAEMON_START_MS = 15_000;

export function client(c: Config): ToastnetClient {
  return new ToastnetClient(socketPath(c));
}

/** The daemon's API as the CLI's backend. */
export function daemonBackend(cl: ToastnetClient): InstanceBackend {
  return {
    status: () => cl.status(),
    list: () => cl.list(),
    get: (name) => cl.get(name),
    inspect: (name) => cl.inspect(name),
    remove: (name) => cl.remove(name),
    policyGet: (name) => cl.policyGet(name),
    policySet: (name, policy) => cl.policySet(name, policy),
    stats: (name) => (name === undefined ? cl.statsAll() : cl.stats(name).then((s) => [s])),
    gc: () => cl.gc(),
    events: (q) => cl.events(q),
    dnsQueries: (q) => cl.dnsQueries(q),
    flows: (q) => cl.flows(q),
    up: async (o = {}) => {
      if (o.persist) throw new ToastnetError('busy', 'a daemon runs this instance; stop it before `up --persist`, or run `up --persist` under systemd');
      return cl.up();
    },
    down: () => cl.down(),
  };
}

/**
 * Runs `command` against the instance: through the daemon's API if one answers, else
 * in-process with the engine open under the instance lock. Either way the same interface.
 */
export async function withBackend<T>(c: Config, command: (b: InstanceBackend) => Promise<T>): Promise<T> {
  const cl = client(c);
  if (fs.existsSync(cl.socketPath) && (await cl.ping())) return command(daemonBackend(cl));
  let engine: Engine;
  try {
    engine = await Engine.open(c, LOCK_WAIT_MS);
  } catch (err) {
    // A daemon may have taken the lock meanwhile: ask it.
    if (err instanceof ToastnetError && err.code === 'busy' && (await cl.ping())) return command(daemonBackend(cl));
    throw err;
  }
  try {
    return await command(localBackend(engine));
  } finally {
    // Removals end the processes left inside and free addresses shortly after they return.
    await engine.settled();
    engine.close();
  }
}

/**
 * What a daemon's log says last: the message of the last record process `pid` wrote (other
 * daemons racing to start write to the same file), else the last line that is not a record
 * (what Node prints when it dies before the logger runs).
 */
export function lastMessage(logFile: string, pid?: number): string {
  const lines = fs.readFileSync(logFile, 'utf8').trim().split('\n').reverse();
  let plain: string | undefined;
  for (const line of lines) {
    let r: { msg?: unknown; pid?: unknown } | undefined;
    try {
      r = JSON.parse(line) as { msg?: unknown; pid?: unknown };
    } catch {
      plain ??= line;
      continue;
    }
    if (typeof r.msg === 'string' && (pid === undefined || r.pid === pid)) return r.msg;
  }
  return plain ?? '';
}

/** Returns a client to a running daemon, starting one in the background if needed. */
export async function ensureDaemon(c: Config, globalArgs: string[]): Promise<ToastnetClient> {
  const cl = client(c);
  if (await cl.ping()) return cl;
  fs.mkdirSync(c.runDir, { recursive: true, mode: 0o700 });
  const logFile = path.join(c.runDir, 'daemon.log');
  // The daemon writes its log itself, bounded (daemon/log.ts); stderr goes to the same file
  // only for what Node prints if the process dies before or outside the logger.
  const err = fs.openSync(logFile, 'a', 0o600);
  const main = path.resolve(path.dirname(fileURLToPath(import.meta.url)), 'main.js');
  const child = spawn(process.execPath, [...DAEMON_NODE_FLAGS, main, ...globalArgs, 'daemon', '--log-file', logFile], { detached: true, stdio: ['ignore', 'ignore', err] });
  fs.closeSync(err);
  let exited: number | null = null;
  child.on('exit', (code) => {
    exited = code ?? 1;
  });
  child.unref();
  const deadline = Date.now() + DAEMON_START_MS;
  while (Date.now() < deadline) {
    if (await cl.ping()) return cl;
    if (exited !== null && exited !== 0) {
      // It may have lost a race to another starting daemon: that one will answer soon.
      const tail = lastMessage(logFile, child.pid);
      if (!/in use by another toastnet process/.test(tail)) {
        throw new ToastnetError('not_ready', `could not start the daemon: ${tail} (log: ${logFile})`);
      }
    }
    await sleep(20);
  }
  throw new ToastnetError('not_ready', `the daemon did not answer on ${cl.socketPath} within ${DAEMON_START_MS} ms (log: ${logFile})`);
}
