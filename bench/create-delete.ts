// `npm run bench`: sandbox network create/delete cost, toastnet side by side with peers,
// in one run and one throwaway topology (test/testbed):
//   - toastnet engine in-process (what the daemon does per request),
//   - toastnet's warm pool: a create that acquires a network made ahead,
//   - toastnet through the daemon's API on its Unix socket (what an orchestrator gets): one
//     caller, then eight at once, without and with a warm pool,
//   - the reference note's way: one `ip`/`nft` process per step (same resulting state),
//   - the CNI reference plugins (bridge + host-local + firewall), driven as a runtime does.
// Prints p50/p95 per create and delete, and create+delete cycles per second. toastnet's
// rows are measured after BENCH_WARMUP (100) unmeasured cycles, as a long-running daemon is.
//
// The outer process builds the testbed and re-runs this file inside its host namespace
// with nsenter (--inner), so every packet and kernel object stays in the testbed.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { resolve as resolveConfig } from '../src/config/load.js';
import { ConfigSchema } from '../src/config/schema.js';
import { Engine } from '../src/service/engine.js';
import { ToastnetClient } from '../src/api/client.js';
import { DAEMON_NODE_FLAGS } from '../src/daemon/node-flags.js';
import { apiCycles, pooledApiCycles, stopDaemon, turn } from './lib.js';
import { Testbed } from '../test/testbed/testbed.js';
import { CniChain, cniAvailable } from './cni.js';

const SELF = fileURLToPath(import.meta.url);
const CLI = path.resolve(path.dirname(SELF), '../src/cli/main.js');
const N = Number(process.env.BENCH_N ?? 200);
const PEER_N = Number(process.env.BENCH_PEER_N ?? 40);
const CYCLE_SECONDS = 2;
/** Concurrent API callers, how long they run, and the warm pool of the second daemon. */
const API_CALLERS = 8;
const API_SECONDS = 4;
const API_POOL = 32;
const WARMUP = Number(process.env.BENCH_WARMUP ?? 100);

interface Row {
  name: string;
  n: number;
  create?: { p50: number; p95: number };
  delete?: { p50: number; p95: number };
  cyclesPerSecond?: number;
  note?: string;
}

function pct(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(s.length * q))];
}
const stats = (xs: number[]) => ({ p50: pct(xs, 0.5), p95: pct(xs, 0.95) });
const now = () => performance.now();

function config(instance: string, dir: string, subnet: string) {
  return resolveConfig(ConfigSchema.parse({ instance, subnet, dnsUpstreams: ['203.0.113.53'], stateDir: path.join(dir, instance, 'state'), runDir: path.join(dir, instance, 'run') }), []);
}

/**
 * N creates, then N deletes (the live count grows to N and back), then cycles for
 * CYCLE_SECONDS. `settle` waits for work a delete leaves for later (the engine's reaper):
 * the cycle rate counts it.
 */
async function measure(name: string, create: (n: string) => unknown, remove: (n: string) => unknown, settle: () => Promise<void> = async () => {}): Promise<Row> {
  // Warm-up, not measured (JIT, first-touch allocations): toastnet runs as a long-lived daemon.
  for (let i = 0; i < WARMUP; i++) {
    await create(`w${i}`);
    await remove(`w${i}`);
    await turn();
  }
  await settle();
  const c: number[] = [];
  const d: number[] = [];
  for (let i = 0; i < N; i++) {
    const t = now();
    await create(`s${i}`);
    c.push(now() - t);
  }
  for (let i = 0; i < N; i++) {
    const t = now();
    await remove(`s${i}`);
    d.push(now() - t);
    await turn();
  }
  await settle();
  let cycles = 0;
  const start = now();
  const end = start + CYCLE_SECONDS * 1000;
  while (now() < end) {
    await create(`c${cycles}`);
    await remove(`c${cycles}`);
    await turn();
    cycles++;
  }
  await settle();
  return { name, n: N, create: stats(c), delete: stats(d), cyclesPerSecond: cycles / ((now() - start) / 1000) };
}

async function benchEngine(dir: string): Promise<Row> {
  const e = await Engine.open(config('benche', dir, '10.180.0.0/16'));
  try {
    e.up();
    return await measure('toastnet engine (in-process)', (name) => e.create({ name }), (name) => e.remove(name), () => e.settled());
  } finally {
    await e.down();
    e.close();
  }
}

/** Warm pool: members made ahead (not timed), a create is the acquisition. */
async function benchPool(dir: string): Promise<Row> {
  const e = await Engine.open(config('benchp', dir, '10.185.0.0/16'));
  try {
    e.up();
    const acquire = (name: string) => {
      const s = e.acquire({ name });
      if (!s) throw new Error('the pool was empty');
      return s;
    };
    const c: number[] = [];
    for (let i = 0; i < N; i++) {
      e.createPoolMember();
      const t = now();
      acquire(`s${i}`);
      c.push(now() - t);
    }
    for (let i = 0; i < N; i++) e.remove(`s${i}`);
    return { name: 'toastnet warm pool: acquire', n: N, create: stats(c), note: 'members made ahead, not timed' };
  } finally {
    await e.down();
    e.close();
  }
}

/**
 * The daemon's API: one caller (latencies, cycles), then API_CALLERS at once for
 * API_SECONDS, and the same again from a daemon with a warm pool of API_POOL.
 */
async function benchApi(dir: string): Promise<Row[]> {
  const inst = 'bencha';
  const flags = ['--instance', inst, '--subnet', '10.181.0.0/16', '--dns', '203.0.113.53', '--state-dir', path.join(dir, inst, 'state'), '--run-dir', path.join(dir, inst, 'run')];
  const sock = path.join(dir, inst, 'run', 'toastnet.sock');
  const start = (extra: string[]) => spawn(process.execPath, [...DAEMON_NODE_FLAGS, CLI, ...flags, ...extra, 'daemon'], { stdio: 'ignore' });
  let daemon = start([]);
  const cl = new ToastnetClient(sock);
  const ready = async () => {
    for (let i = 0; i < 500 && !(await cl.ping()); i++) await sleep(20);
  };
  const rows: Row[] = [];
  try {
    await ready();
    rows.push(await measure('toastnet daemon API (Unix socket)', (name) => cl.create({ name }), (name) => cl.remove(name)));
    rows.push({ name: `toastnet daemon API, ${API_CALLERS} callers`, n: 0, cyclesPerSecond: await apiCycles(sock, API_CALLERS, API_SECONDS, 'm') });

    await stopDaemon(daemon);
    const pool = path.join(dir, inst, 'pool.json');
    fs.writeFileSync(pool, JSON.stringify({ poolSize: API_POOL }));
    daemon = start(['--config', pool]);
    await ready();
    for (let i = 0; i < WARMUP; i++) {
      await cl.create({ name: `w${i}` });
      await cl.remove(`w${i}`);
    }
    const { cyclesPerSecond, acquired, missed } = await pooledApiCycles(cl, sock, API_POOL, API_CALLERS, API_SECONDS, 'pm');
    rows.push({ name: `  with a warm pool of ${API_POOL}`, n: 0, cyclesPerSecond, note: `${acquired + missed > 0 ? ((100 * acquired) / (acquired + missed)).toFixed(0) : '-'} % of creates from the pool` });
    return rows;
  } finally {
    await cl.down().catch(() => undefined);
    daemon.kill('SIGKILL');
  }
}

/** The reference note's approach, completed to the same end state: one process per step. */
function benchScript(): Row {
  const run = (cmd: string, ...args: string[]) => execFileSync(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  const nftJson = (o: unknown) => run('nft', '-j', JSON.stringify({ nftables: [o] }));
  run('ip', 'link', 'add', 'scrgw', 'type', 'veth', 'peer', 'name', 'scrgwp');
  run('ip', 'addr', 'add', '10.182.0.1/16', 'dev', 'scrgw');
  run('ip', 'link', 'set', 'scrgw', 'up');
  nftJson({ add: { table: { family: 'inet', name: 'benchscript' } } });
  nftJson({ add: { set: { family: 'inet', table: 'benchscript', name: 'veth_src', type: ['ifname', 'ipv4_addr'] } } });
  const c: number[] = [];
  const d: number[] = [];
  const elem = (i: number) => ({ family: 'inet', table: 'benchscript', name: 'veth_src', elem: [{ concat: [`scr${i}`, `10.182.1.${i + 2}`] }] });
  try {
    for (let i = 0; i < PEER_N; i++) {
      const ns = `benchscr-${i}`;
      const ip = `10.182.1.${i + 2}`;
      const t = now();
      run('ip', 'netns', 'add', ns);
      run('ip', 'link', 'add', `scr${i}`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns);
      run('ip', 'link', 'set', `scr${i}`, 'up');
      run('ip', 'route', 'add', `${ip}/32`, 'dev', `scr${i}`);
      run('ip', '-n', ns, 'addr', 'add', `${ip}/16`, 'dev', 'eth0');
      run('ip', '-n', ns, 'link', 'set', 'eth0', 'up');
      run('ip', '-n', ns, 'link', 'set', 'lo', 'up');
      run('ip', '-n', ns, 'route', 'add', 'default', 'via', '10.182.0.1', 'dev', 'eth0', 'onlink');
      nftJson({ add: { element: elem(i) } });
      c.push(now() - t);
    }
    for (let i = 0; i < PEER_N; i++) {
      const t = now();
      nftJson({ delete: { element: elem(i) } });
      run('ip', 'netns', 'del', `benchscr-${i}`);
      d.push(now() - t);
    }
  } finally {
    spawnSync('nft', ['delete', 'table', 'inet', 'benchscript']);
    spawnSync('ip', ['link', 'del', 'scrgw']);
    for (let i = 0; i < PEER_N; i++) spawnSync('ip', ['netns', 'del', `benchscr-${i}`]);
  }
  const per = (stats(c).p50 + stats(d).p50) / 1000;
  return { name: 'reference note: ip/nft per step', n: PEER_N, create: stats(c), delete: stats(d), cyclesPerSecond: 1 / per, note: 'cycles/s from p50s' };
}

/** CNI reference plugins, chained with prevResult as a runtime (containerd, podman) drives them. */
function benchCni(dir: string): Row {
  if (!cniAvailable(['bridge', 'host-local', 'firewall'])) return { name: 'CNI bridge+host-local+firewall', n: 0, note: 'unavailable: apt-get install containernetworking-plugins iptables' };
  const chain = new CniChain('cnibench', [
    { type: 'bridge', bridge: 'cnibench0', isGateway: true, ipMasq: true, ipam: { type: 'host-local', subnet: '10.183.0.0/16', dataDir: path.join(dir, 'cni') } },
    { type: 'firewall', backend: 'iptables' },
  ]);
  const c: number[] = [];
  const d: number[] = [];
  try {
    for (let i = 0; i < PEER_N; i++) {
      execFileSync('ip', ['netns', 'add', `benchcni-${i}`]); // the runtime makes the namespace; not timed
      const t = now();
      chain.add(`c${i}`, `/run/netns/benchcni-${i}`);
      c.push(now() - t);
    }
    for (let i = PEER_N - 1; i >= 0; i--) {
      const t = now();
      chain.del(`c${i}`, `/run/netns/benchcni-${i}`);
      d.push(now() - t);
      spawnSync('ip', ['netns', 'del', `benchcni-${i}`]);
    }
  } catch (err) {
    return { name: 'CNI bridge+host-local+firewall', n: c.length, note: `failed: ${(err as Error).message.slice(0, 160)}` };
  } finally {
    for (let i = 0; i < PEER_N; i++) spawnSync('ip', ['netns', 'del', `benchcni-${i}`]);
    spawnSync('ip', ['link', 'del', 'cnibench0']);
  }
  const per = (stats(c).p50 + stats(d).p50) / 1000;
  return { name: 'CNI bridge+host-local+firewall', n: PEER_N, create: stats(c), delete: stats(d), cyclesPerSecond: 1 / per, note: 'netns creation not timed; cycles/s from p50s' };
}

async function inner(dir: string): Promise<void> {
  const rows: Row[] = [];
  rows.push(await benchEngine(dir));
  rows.push(await benchPool(dir));
  rows.push(...(await benchApi(dir)));
  rows.push(benchScript());
  rows.push(benchCni(dir));
  process.stdout.write(`${JSON.stringify(rows)}\n`);
}

function table(rows: Row[]): string {
  const base = rows[0];
  const f = (x?: number) => (x === undefined ? '-' : x < 10 ? x.toFixed(2) : x.toFixed(0));
  const ratio = (a?: number, b?: number) => (a && b ? `${(b / a).toFixed(b / a < 10 ? 1 : 0)}x` : '-');
  const head = ['', 'n', 'create p50 ms', 'p95', 'delete p50 ms', 'p95', 'cycles/s', 'time vs the engine (create/delete)'];
  const body = rows.map((r) => [r.name, r.n ? String(r.n) : '-', f(r.create?.p50), f(r.create?.p95), f(r.delete?.p50), f(r.delete?.p95), f(r.cyclesPerSecond),
    r === base ? '' : `${ratio(base.create?.p50, r.create?.p50)} / ${ratio(base.delete?.p50, r.delete?.p50)}${r.note ? `  (${r.note})` : ''}`]);
  const all = [head, ...body];
  const w = head.map((_, i) => Math.max(...all.map((r) => r[i].length)));
  return all.map((r) => r.map((c, i) => (i === 0 ? c.padEnd(w[i]) : c.padStart(w[i]))).join('  ')).join('\n');
}

async function outer(): Promise<void> {
  const tb = await Testbed.create({ hostService: false });
  // The testbed removes their namespaces and /etc/netns entries if the run fails midway, and
  // kills the API row's daemon: its state lives in the testbed's directory (<dir>/<instance>/run/lock.pid).
  for (const i of ['benche', 'benchp', 'bencha']) tb.instances.add(i);
  const dir = tb.dir;
  try {
    process.stdout.write(`toastnet bench: ${N} sandboxes (peers ${PEER_N}), ${os.cpus().length} CPUs, Linux ${os.release()}, Node ${process.version}\n`);
    const r = spawnSync('nsenter', [`--net=/run/netns/${tb.hostNs}`, process.execPath, SELF, '--inner', dir], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], timeout: 600_000 });
    if (r.status !== 0) throw new Error(`inner bench failed (${r.status})`);
    const rows = JSON.parse(r.stdout.trim().split('\n').pop()!) as Row[];
    process.stdout.write(`${table(rows)}\n`);
    const out = process.env.BENCH_JSON;
    if (out) fs.writeFileSync(out, JSON.stringify({ n: N, peerN: PEER_N, rows }, null, 2));
  } finally {
    await tb.destroy();
  }
}

if (process.argv[2] === '--inner') await inner(process.argv[3]);
else await outer();
