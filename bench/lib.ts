// Helpers the benches share.
import { ChildProcess, spawnSync } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { ToastnetClient } from '../src/api/client.js';
import { WAN } from '../test/testbed/testbed.js';

/** One iperf3 client run from a namespace to the testbed's internet host, as parsed JSON. */
export function iperf(netns: string, seconds: number, args: string[]): Record<string, unknown> {
  const r = spawnSync('nsenter', [`--net=${netns}`, 'iperf3', '-J', '-c', WAN.internet, '-t', String(seconds), '-O', '1', ...args], { encoding: 'utf8', timeout: (seconds + 20) * 1000 });
  if (r.status !== 0) throw new Error(`iperf3 ${args.join(' ')}: ${r.stdout.slice(-300)}${r.stderr}`);
  return JSON.parse(r.stdout) as Record<string, unknown>;
}

/** Lets timers run: the engine's reaper reads /proc for batches of removals on a timer. */
export const turn = (): Promise<void> => new Promise<void>((r) => setImmediate(r));

/**
 * Create+delete cycles per second through a daemon's API over `seconds`, `callers` at once,
 * each on its own kept connection. Names start with `prefix`. The rate is over the time
 * until the last caller's last cycle ended; a caller's failure is thrown once all stopped.
 */
export async function apiCycles(sock: string, callers: number, seconds: number, prefix: string): Promise<number> {
  let cycles = 0;
  const start = performance.now();
  const end = start + seconds * 1000;
  const results = await Promise.allSettled(Array.from({ length: callers }, async (_, w) => {
    const mine = new ToastnetClient(sock);
    try {
      for (let k = 0; performance.now() < end; k++) {
        await mine.create({ name: `${prefix}-${w}-${k}` });
        await mine.remove(`${prefix}-${w}-${k}`);
        cycles++;
      }
    } finally {
      mine.close();
    }
  }));
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
  return cycles / ((performance.now() - start) / 1000);
}

/**
 * apiCycles starting from a full warm pool of `poolSize` (the refill of the previous run is
 * waited for), with how many of the creates the pool served and how many it missed.
 */
export async function pooledApiCycles(cl: ToastnetClient, sock: string, poolSize: number, callers: number, seconds: number, prefix: string): Promise<{ cyclesPerSecond: number; acquired: number; missed: number }> {
  for (let i = 0; i < 500 && (await cl.status()).pool.idle < poolSize; i++) await sleep(10);
  const before = (await cl.status()).pool;
  const cyclesPerSecond = await apiCycles(sock, callers, seconds, prefix);
  const after = (await cl.status()).pool;
  return { cyclesPerSecond, acquired: after.acquired! - before.acquired!, missed: after.missed! - before.missed! };
}

/** Stops a bench's daemon (SIGTERM) and waits until it has exited. */
export async function stopDaemon(daemon: ChildProcess): Promise<void> {
  if (daemon.exitCode !== null || daemon.signalCode !== null) return;
  const exited = new Promise((r) => daemon.once('exit', r));
  daemon.kill('SIGTERM');
  await exited;
}
