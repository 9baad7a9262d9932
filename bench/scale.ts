// `npm run bench:scale`: how toastnet holds up with thousands of sandboxes, side by side
// with the CNI reference chain (bridge + host-local + firewall + bandwidth), in one run and
// one topology of its own namespaces:
//   - create and delete p50/p95 with 0, 200 and 4,000 sandboxes alive (BENCH_LEVELS),
//     measured as create+delete cycles at a constant population; warm-pool acquire too;
//   - forwarding throughput (TCP, UDP with 64-byte payloads) from one sandbox through NAT
//     and the full policy, with 1 and with 4,000 sandboxes alive;
//   - the daemon: start (reconcile) time and memory with 4,000 sandboxes, and create+delete
//     cycles per second through its API with 1, 2 and 8 concurrent callers, without and
//     with a warm pool;
//   - the CNI chain on the same create/delete work at its own levels (BENCH_CNI_LEVELS,
//     lower by default: each of its operations takes ~100 ms).
// Prints a table with the ratio toastnet/CNI where both ran; BENCH_JSON=FILE writes it.
// BENCH_TMPFS=1 runs the inner part in a private mount namespace with tmpfs on /run/netns
// and /etc/netns, as on a host whose /run is tmpfs (on these VMs it is ext4, whose
// directories make an entry more slowly the more entries they ever held).
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
import { apiCycles, iperf, pooledApiCycles, stopDaemon, turn } from './lib.js';
import { Testbed, WAN } from '../test/testbed/testbed.js';
import { CniChain, cniAvailable } from './cni.js';

const SELF = fileURLToPath(import.meta.url);
const CLI = path.resolve(path.dirname(SELF), '../src/cli/main.js');
const LEVELS = (process.env.BENCH_LEVELS ?? '0,200,4000').split(',').map(Number);
const CNI_LEVELS = (process.env.BENCH_CNI_LEVELS ?? '0,200').split(',').filter(Boolean).map(Number);
const SAMPLES = Number(process.env.BENCH_SAMPLES ?? 100);
const CNI_SAMPLES = Number(process.env.BENCH_CNI_SAMPLES ?? 20);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 3);
const FWD_RUNS = Number(process.env.BENCH_FWD_RUNS ?? 5);
const INSTANCE = 'benchs';
const TMPFS = process.env.BENCH_TMPFS === '1';
const SUBNET = '10.186.0.0/16';
/**
 * Warm pool of the second daemon run, and how long each API figure runs: long enough that a
 * full pool at the start (POOL_SIZE networks made before) is a small part.
 */
const POOL_SIZE = 32;
const API_SECONDS = Number(process.env.BENCH_API_SECONDS ?? 4);

interface Lat { p50: number; p95: number }
/** `fsEntry`: making and removing one entry in /run/netns and one in /etc/netns, as each create and delete does (ms). */
interface Level { level: number; create: Lat; delete: Lat; acquire?: Lat; fsEntry?: number }
interface Fwd { sandboxes: number; tcpGbps: number; udpKpps: number }
interface Result {
  toastnet: Level[];
  cni: Level[];
  cniNote?: string;
  forwarding: Fwd[];
  daemon?: {
    sandboxes: number;
    startMs: number;
    rssMb: number;
    concurrency: { callers: number; cyclesPerSecond: number }[];
    /** The same with a warm pool of POOL_SIZE, refilled by its builder thread: how many creates it served. */
    pooled?: { callers: number; cyclesPerSecond: number; acquired: number; missed: number }[];
  };
}

const now = () => performance.now();
function lat(xs: number[]): Lat {
  const s = [...xs].sort((a, b) => a - b);
  return { p50: s[Math.floor(s.length * 0.5)], p95: s[Math.min(s.length - 1, Math.floor(s.length * 0.95))] };
}

function flags(dir: string): string[] {
  return ['--instance', INSTANCE, '--subnet', SUBNET, '--dns', WAN.dns, '--state-dir', path.join(dir, 'state'), '--run-dir', path.join(dir, 'run')];
}

/**
 * What the filesystem charges a create and a delete for the two directory entries they
 * make (/run/netns/<name>, /etc/netns/<name>): on tmpfs a few µs; on an ext4 /run, as on
 * these VMs, it grows with the entries the directories ever held.
 */
function fsEntryCost(): number {
  const xs: number[] = [];
  for (let i = 0; i < 30; i++) {
    const probe = `.toastnet-bench-probe-${process.pid}`;
    const t = now();
    try {
      fs.closeSync(fs.openSync(`/run/netns/${probe}`, 'wx'));
      fs.symlinkSync('/nonexistent', `/etc/netns/${probe}`);
    } finally {
      fs.rmSync(`/run/netns/${probe}`, { force: true });
      fs.rmSync(`/etc/netns/${probe}`, { force: true });
    }
    xs.push(now() - t);
  }
  return lat(xs).p50;
}

/** Waits (up to 60 s) until the CPUs are at least 90 % idle over half a second; returns the time waited. */
async function systemQuiet(): Promise<number> {
  const t0 = now();
  const sample = () => {
    const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
    return { idle: f[3] + f[4], total: f.reduce((x, y) => x + y, 0) };
  };
  let last = sample();
  while (now() - t0 < 60_000) {
    await sleep(500);
    const cur = sample();
    const busy = 1 - (cur.idle - last.idle) / Math.max(1, cur.total - last.total);
    last = cur;
    if (busy < 0.1) break;
  }
  return now() - t0;
}

/** Waits until the number of links in this namespace stops changing (the kernel's reaping is over). */
async function linksSettled(): Promise<void> {
  // A dump the kernel interrupted (links changing) counts as a change.
  const count = () => {
    const r = spawnSync('ip', ['-o', 'link', 'show'], { encoding: 'utf8', maxBuffer: 64 << 20 });
    return r.status === 0 && !r.stderr.includes('interrupted') ? r.stdout.split('\n').length : -1;
  };
  let last = count();
  for (let i = 0; i < 100; i++) {
    await sleep(300);
    const n = count();
    if (n === last && n >= 0) return;
    last = n;
  }
}

/**
 * TCP and small-packet UDP throughput from a sandbox, each the median of FWD_RUNS runs:
 * iperf3's UDP is CPU-bound on two CPUs, and single runs were seen 40 % apart.
 */
function forwarding(netns: string, sandboxes: number): Fwd {
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const tcp: number[] = [];
  const udp: number[] = [];
  for (let i = 0; i < FWD_RUNS; i++) {
    const t = iperf(netns, SECONDS, []) as { end: { sum_received: { bits_per_second: number } } };
    tcp.push(t.end.sum_received.bits_per_second / 1e9);
    const u = iperf(netns, SECONDS, ['-u', '-l', '64', '-b', '0']) as { end: { sum: { packets: number; lost_packets: number; seconds: number } } };
    udp.push((u.end.sum.packets - u.end.sum.lost_packets) / u.end.sum.seconds / 1000);
  }
  return { sandboxes, tcpGbps: median(tcp), udpKpps: median(udp) };
}

async function toastnet(dir: string, out: Result): Promise<void> {
  const config = resolveConfig(ConfigSchema.parse({ instance: INSTANCE, subnet: SUBNET, dnsUpstreams: [WAN.dns], stateDir: path.join(dir, 'state'), runDir: path.join(dir, 'run') }), []);
  const e = await Engine.open(config);
  let alive = 0;
  try {
    e.up();
    const probe = e.create({ name: 'probe' });
    alive = 1;
    out.forwarding.push(forwarding(probe.netns, 1));
    // Warm-up (JIT, caches, first-touch allocations), not measured: the level-0 figures
    // otherwise carry the process's start.
    for (let k = 0; k < 50; k++) {
      e.create({ name: `w${k}` });
      e.remove(`w${k}`);
      await turn();
    }
    for (const level of LEVELS) {
      for (; alive < level; alive++) e.create({ name: `p${alive}` });
      // Steady state, as on a host whose sandboxes were made over time: after a burst of
      // thousands of creates the kernel works for seconds in the background (IPv6 address
      // configuration and MLD for each new link), on the same two CPUs.
      const quiet = await systemQuiet();
      process.stderr.write(`toastnet at ${alive}: the system was quiet after ${(quiet / 1000).toFixed(1)} s\n`);
      const c: number[] = [];
      const d: number[] = [];
      const a: number[] = [];
      for (let k = 0; k < SAMPLES; k++) {
        let t = now();
        e.create({ name: `x${k}` });
        c.push(now() - t);
        t = now();
        e.remove(`x${k}`);
        d.push(now() - t);
        await turn(); // the reaper's batches run between samples, as in the daemon
        e.createPoolMember();
        t = now();
        e.acquire({ name: `y${k}` });
        a.push(now() - t);
        e.remove(`y${k}`);
        await turn();
      }
      out.toastnet.push({ level, create: lat(c), delete: lat(d), acquire: lat(a), fsEntry: fsEntryCost() });
      process.stderr.write(`toastnet at ${alive}: create p50 ${lat(c).p50.toFixed(2)} ms, delete ${lat(d).p50.toFixed(2)} ms\n`);
    }
    // Steady state: the kernel destroys removed namespaces (and their veths) in the
    // background for a while after the last delete; forwarding is measured once it is done.
    await e.settled();
    await linksSettled();
    // Destroying a namespace goes on in kernel workers after its links are gone (at 4,000
    // namespaces each one costs a walk of every other's namespace ids): wait for quiet, or
    // the UDP figure (CPU-bound) measures that work instead of the forwarding path.
    await systemQuiet();
    out.forwarding.push(forwarding(probe.netns, alive));
  } finally {
    await e.settled();
    e.close(); // sandboxes stay: the daemon below starts with them
  }

  // The daemon: reconcile with `alive` sandboxes, memory, concurrent API callers; then
  // restarted with a warm pool, the same callers again.
  const sock = path.join(dir, 'run', 'toastnet.sock');
  const t0 = now();
  let daemon = spawn(process.execPath, [...DAEMON_NODE_FLAGS, CLI, ...flags(dir), 'daemon'], { stdio: 'ignore' });
  const cl = new ToastnetClient(sock);
  try {
    for (let i = 0; i < 3000 && !(await cl.ping()); i++) await sleep(10);
    const startMs = now() - t0;
    const rss = Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${daemon.pid}/status`, 'utf8'))?.[1] ?? 0) / 1024;
    // Warm-up (JIT of the daemon's request path), not measured: a daemon serves for days.
    for (let k = 0; k < 300; k++) {
      await cl.create({ name: `warm${k}` });
      await cl.remove(`warm${k}`);
    }
    const concurrency = [];
    for (const callers of [1, 2, 8]) concurrency.push({ callers, cyclesPerSecond: await apiCycles(sock, callers, API_SECONDS, `c${callers}`) });
    out.daemon = { sandboxes: alive, startMs, rssMb: rss, concurrency };

    await stopDaemon(daemon);
    const config = path.join(dir, 'pool.json');
    fs.writeFileSync(config, JSON.stringify({ poolSize: POOL_SIZE }));
    daemon = spawn(process.execPath, [...DAEMON_NODE_FLAGS, CLI, ...flags(dir), '--config', config, 'daemon'], { stdio: 'ignore' });
    for (let i = 0; i < 3000 && !(await cl.ping()); i++) await sleep(10);
    for (let k = 0; k < 300; k++) {
      await cl.create({ name: `pwarm${k}` });
      await cl.remove(`pwarm${k}`);
    }
    out.daemon.pooled = [];
    for (const callers of [1, 2, 8]) out.daemon.pooled.push({ callers, ...(await pooledApiCycles(cl, sock, POOL_SIZE, callers, API_SECONDS, `pc${callers}`)) });
  } finally {
    await cl.down().catch(() => undefined);
    daemon.kill('SIGKILL');
  }
}

function cni(dir: string, out: Result): void {
  if (CNI_LEVELS.length === 0) return;
  const plugins = ['bridge', 'host-local', 'firewall', 'bandwidth'];
  if (!cniAvailable(plugins)) {
    out.cniNote = 'unavailable: apt-get install containernetworking-plugins iptables';
    return;
  }
  const chain = new CniChain('cniscale', [
    { type: 'bridge', bridge: 'cniscale0', isGateway: true, ipMasq: true, ipam: { type: 'host-local', subnet: '10.187.0.0/16', dataDir: path.join(dir, 'cni') } },
    { type: 'firewall', backend: 'iptables' },
    // What toastnet's limits do: a rate each way (bits per second and burst bits for CNI).
    { type: 'bandwidth', ingressRate: 100_000_000, ingressBurst: 10_000_000, egressRate: 100_000_000, egressBurst: 10_000_000 },
  ]);
  const ns = (id: string) => `cniscale-${id}`;
  const made: string[] = [];
  const add = (id: string) => {
    execFileSync('ip', ['netns', 'add', ns(id)]); // the runtime makes the namespace; not timed below
    made.push(id);
  };
  const drop = (id: string) => {
    spawnSync('ip', ['netns', 'del', ns(id)]);
    made.splice(made.indexOf(id), 1);
  };
  try {
    let alive = 0;
    for (const level of CNI_LEVELS) {
      for (; alive < level; alive++) {
        add(`p${alive}`);
        chain.add(`p${alive}`, `/run/netns/${ns(`p${alive}`)}`);
      }
      const c: number[] = [];
      const d: number[] = [];
      for (let k = 0; k < CNI_SAMPLES; k++) {
        const id = `x${level}-${k}`;
        add(id);
        let t = now();
        chain.add(id, `/run/netns/${ns(id)}`);
        c.push(now() - t);
        t = now();
        chain.del(id, `/run/netns/${ns(id)}`);
        d.push(now() - t);
        drop(id);
      }
      out.cni.push({ level, create: lat(c), delete: lat(d) });
      process.stderr.write(`CNI at ${alive}: ADD p50 ${lat(c).p50.toFixed(1)} ms, DEL ${lat(d).p50.toFixed(1)} ms\n`);
    }
    for (const id of [...made]) {
      try {
        chain.del(id, `/run/netns/${ns(id)}`);
      } catch {
        // best effort
      }
    }
  } catch (err) {
    out.cniNote = `failed: ${(err as Error).message.slice(0, 200)}`;
  } finally {
    for (const id of [...made]) drop(id);
    spawnSync('ip', ['link', 'del', 'cniscale0']);
  }
}

async function inner(dir: string): Promise<void> {
  const out: Result = { toastnet: [], cni: [], forwarding: [] };
  await toastnet(dir, out);
  cni(dir, out);
  process.stdout.write(`${JSON.stringify(out)}\n`);
}

function report(r: Result): string {
  const f = (x?: number, d = 2) => (x === undefined ? '-' : x.toFixed(d));
  const lines: string[] = [];
  const row = (cells: string[]) => lines.push(cells.map((c, i) => (i === 0 ? c.padEnd(34) : c.padStart(14))).join(' '));
  row(['create / delete (p50 ms)', 'toastnet', 'CNI chain', 'toastnet/CNI']);
  const levels = [...new Set([...r.toastnet.map((x) => x.level), ...r.cni.map((x) => x.level)])].sort((a, b) => a - b);
  for (const level of levels) {
    const t = r.toastnet.find((x) => x.level === level);
    const c = r.cni.find((x) => x.level === level);
    const ratio = (a?: number, b?: number) => (a && b ? f(a / b, 3) : '-');
    row([`create at ${level} alive`, f(t?.create.p50), f(c?.create.p50, 1), ratio(t?.create.p50, c?.create.p50)]);
    row([`delete at ${level} alive`, f(t?.delete.p50), f(c?.delete.p50, 1), ratio(t?.delete.p50, c?.delete.p50)]);
    if (t?.acquire) row([`pool acquire at ${level} alive`, f(t.acquire.p50), '-', '-']);
    if (t?.fsEntry !== undefined) row([`  of which the filesystem (${level})`, f(t.fsEntry), '', '']);
  }
  const first = r.toastnet[0];
  const last = r.toastnet[r.toastnet.length - 1];
  if (first && last && last !== first) {
    row([`create p50 at ${last.level} vs ${first.level}`, `${f((100 * last.create.p50) / first.create.p50, 0)} %`, '', '']);
    row([`delete p50 at ${last.level} vs ${first.level}`, `${f((100 * last.delete.p50) / first.delete.p50, 0)} %`, '', '']);
  }
  const cf = r.cni[0];
  const cl = r.cni[r.cni.length - 1];
  if (cf && cl && cl !== cf) row([`CNI ADD p50 at ${cl.level} vs ${cf.level}`, '', `${f((100 * cl.create.p50) / cf.create.p50, 0)} %`, '']);
  if (r.cniNote) lines.push(`CNI: ${r.cniNote}`);
  lines.push('');
  for (const x of r.forwarding) row([`forwarding with ${x.sandboxes} alive`, `${f(x.tcpGbps)} Gbit/s`, `${f(x.udpKpps, 0)} kpps`, '']);
  if (r.forwarding.length === 2) {
    const [a, b] = r.forwarding;
    row([`  ratio ${b.sandboxes} vs ${a.sandboxes}`, `TCP ${f((100 * b.tcpGbps) / a.tcpGbps, 0)} %`, `UDP ${f((100 * b.udpKpps) / a.udpKpps, 0)} %`, '']);
  }
  if (r.daemon) {
    lines.push('');
    row([`daemon start with ${r.daemon.sandboxes}`, `${f(r.daemon.startMs, 0)} ms`, '', '']);
    row([`daemon memory with ${r.daemon.sandboxes}`, `${f(r.daemon.rssMb, 0)} MB RSS`, '', '']);
    for (const c of r.daemon.concurrency) row([`API cycles/s, ${c.callers} caller(s)`, f(c.cyclesPerSecond, 0), '', '']);
    for (const c of r.daemon.pooled ?? []) {
      const share = c.acquired + c.missed > 0 ? (100 * c.acquired) / (c.acquired + c.missed) : 0;
      row([`  with a warm pool (${POOL_SIZE}), ${c.callers}`, f(c.cyclesPerSecond, 0), `${f(share, 0)} % pooled`, '']);
    }
  }
  return lines.join('\n');
}

async function outer(): Promise<void> {
  const tb = await Testbed.create({ hostService: false });
  // The testbed removes their namespaces and /etc/netns entries if the run fails midway.
  for (const i of [INSTANCE]) tb.instances.add(i);
  // In the testbed's directory, as <dir>/<instance>: the testbed then also kills the daemon
  // (its lock.pid is there) if the run fails midway.
  const dir = path.join(tb.dir, INSTANCE);
  fs.mkdirSync(dir, { recursive: true });
  try {
    tb.background(tb.wanNs, ['iperf3', '-s', '-B', WAN.internet, '-p', '5201']);
    await sleep(300);
    process.stdout.write(`toastnet scale bench: levels ${LEVELS.join(', ')} (CNI ${CNI_LEVELS.join(', ')}), ${SAMPLES} cycles per level (CNI ${CNI_SAMPLES}), ${os.cpus().length} CPUs, Linux ${os.release()}${TMPFS ? ', /run/netns and /etc/netns on tmpfs (BENCH_TMPFS)' : ''}\n`);
    const innerCmd = [process.execPath, SELF, '--inner', dir];
    // Private mounts: the tmpfs are seen only by the inner process tree and vanish with it.
    const cmd = TMPFS
      ? ['unshare', '--mount', '--propagation', 'private', '--', 'sh', '-c', 'mkdir -p /etc/netns && mount -t tmpfs toastnet-bench /run/netns && mount -t tmpfs toastnet-bench /etc/netns && exec "$@"', 'sh', ...innerCmd]
      : innerCmd;
    const r = spawnSync('nsenter', [`--net=/run/netns/${tb.hostNs}`, ...cmd], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], timeout: 3_600_000 });
    if (r.status !== 0) throw new Error(`inner bench failed (${r.status})`);
    const result = JSON.parse(r.stdout.trim().split('\n').pop()!) as Result;
    process.stdout.write(`${report(result)}\n`);
    if (process.env.BENCH_JSON) fs.writeFileSync(process.env.BENCH_JSON, JSON.stringify(result, null, 2));
  } finally {
    await tb.destroy(); // its directory with ours
  }
}

if (process.argv[2] === '--inner') await inner(process.argv[3]);
else await outer();
