// `npm run bench:cni`: ADD and DEL as a container runtime sees them: the plugin executed
// once per call, the network config on stdin, CNI_* in the environment (the way containerd
// and podman drive plugins), toastnet-cni beside the CNI reference chain bridge + host-local
// + firewall (containernetworking-plugins), in one run and one testbed. The runtime's
// namespace is made before each ADD and removed after each DEL, untimed, for both (named
// after the testbed's run, which removes any left behind).
// Then 8 ADDs at once, then 8 DELs at once, as separate processes: errors counted.
//
// The outer process builds the testbed and re-runs this file inside its host namespace
// (--inner), where the daemon and the plugins run, as on a node.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { ToastnetClient } from '../src/api/client.js';
import { DAEMON_NODE_FLAGS } from '../src/daemon/node-flags.js';
import { Testbed } from '../test/testbed/testbed.js';
import { TOASTNET_CNI } from '../test/helpers/cni-runtime.js';
import { CniChain, cniAvailable } from './cni.js';
import { stopDaemon } from './lib.js';

const SELF = fileURLToPath(import.meta.url);
const CLI = path.resolve(path.dirname(SELF), '../src/cli/main.js');
const N = Number(process.env.BENCH_CNI_N ?? 100);
const PEER_N = Number(process.env.BENCH_PEER_N ?? 40);
const WARMUP = 10;
const CONCURRENT = 8;
const TARGET = { addP50: 10, delP50: 5, times: 8 };

interface Row {
  name: string;
  n: number;
  add?: { p50: number; p90: number };
  del?: { p50: number; p90: number };
  note?: string;
}

function pct(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(s.length * q))];
}
const stats = (xs: number[]) => ({ p50: pct(xs, 0.5), p90: pct(xs, 0.9) });
const now = () => performance.now();

function execToastnet(command: 'ADD' | 'DEL', conf: unknown, id: string, netns: string): { code: number; stdout: string } {
  const r = spawnSync(TOASTNET_CNI, {
    input: JSON.stringify(conf),
    env: { PATH: process.env.PATH, CNI_COMMAND: command, CNI_CONTAINERID: id, CNI_NETNS: netns, CNI_IFNAME: 'eth0', CNI_PATH: '/usr/lib/cni' },
    encoding: 'utf8',
  });
  return { code: r.status ?? 128, stdout: r.stdout };
}

function execToastnetAsync(command: 'ADD' | 'DEL', conf: unknown, id: string, netns: string): Promise<number> {
  return new Promise((resolve) => {
    const p = spawn(TOASTNET_CNI, { env: { PATH: process.env.PATH, CNI_COMMAND: command, CNI_CONTAINERID: id, CNI_NETNS: netns, CNI_IFNAME: 'eth0' }, stdio: ['pipe', 'ignore', 'ignore'] });
    p.on('close', (code) => resolve(code ?? 128));
    p.stdin.end(JSON.stringify(conf));
  });
}

/** toastnet-cni against a daemon started here; the namespaces are the runtime's (ip netns add). */
async function benchToastnet(run: string, flags: string[]): Promise<Row[]> {
  const runDir = flags[flags.indexOf('--run-dir') + 1];
  const daemon = spawn(process.execPath, [...DAEMON_NODE_FLAGS, CLI, ...flags, 'daemon'], { stdio: ['ignore', 'ignore', 'pipe'] });
  const cl = new ToastnetClient(path.join(runDir, 'toastnet.sock'));
  const conf = { cniVersion: '1.0.0', name: 'benchnet', type: 'toastnet-cni', runDir };
  const ns = (i: number) => `${run}-tn${i}`; // /run/netns is global: names of this run only
  const a: number[] = [];
  const d: number[] = [];
  try {
    for (let k = 0; k < 300 && !(await cl.ping()); k++) await new Promise((r) => setTimeout(r, 50));
    for (let i = 0; i < N + WARMUP; i++) {
      execFileSync('ip', ['netns', 'add', ns(i)]); // the runtime makes it; not timed
      const t = now();
      const r = execToastnet('ADD', conf, `c${i}`, `/run/netns/${ns(i)}`);
      if (i >= WARMUP) a.push(now() - t);
      if (r.code !== 0) throw new Error(`ADD: ${r.stdout}`);
    }
    for (let i = N + WARMUP - 1; i >= 0; i--) {
      const t = now();
      const r = execToastnet('DEL', conf, `c${i}`, `/run/netns/${ns(i)}`);
      if (i >= WARMUP) d.push(now() - t);
      if (r.code !== 0) throw new Error(`DEL: ${r.stdout}`);
      spawnSync('ip', ['netns', 'del', ns(i)]);
    }
    // 8 runtime calls at once: ADDs, then DELs.
    const errors = { add: 0, del: 0 };
    const rounds = 5;
    const wall: number[] = [];
    for (let round = 0; round < rounds; round++) {
      const ids = Array.from({ length: CONCURRENT }, (_, i) => i + round * CONCURRENT);
      for (const i of ids) execFileSync('ip', ['netns', 'add', ns(i)]);
      const t = now();
      errors.add += (await Promise.all(ids.map((i) => execToastnetAsync('ADD', conf, `p${i}`, `/run/netns/${ns(i)}`)))).filter((c) => c !== 0).length;
      wall.push(now() - t);
      errors.del += (await Promise.all(ids.map((i) => execToastnetAsync('DEL', conf, `p${i}`, `/run/netns/${ns(i)}`)))).filter((c) => c !== 0).length;
      for (const i of ids) spawnSync('ip', ['netns', 'del', ns(i)]);
    }
    return [
      { name: 'toastnet-cni (shim -> daemon)', n: N, add: stats(a), del: stats(d) },
      { name: `toastnet-cni, ${CONCURRENT} ADDs at once`, n: rounds * CONCURRENT, note: `${rounds} rounds: all ${CONCURRENT} answered in p50 ${pct(wall, 0.5).toFixed(1)} ms; errors: ${errors.add} ADD, ${errors.del} DEL` },
    ];
  } finally {
    for (let i = 0; i < N + WARMUP + 5 * CONCURRENT; i++) if (fs.existsSync(`/run/netns/${ns(i)}`)) spawnSync('ip', ['netns', 'del', ns(i)]);
    await stopDaemon(daemon);
  }
}

/** The reference chain, each plugin a process per call with prevResult, DEL in reverse (bench/cni.ts). */
function benchChain(run: string, dir: string): Row {
  const name = 'CNI bridge + host-local + firewall';
  if (!cniAvailable(['bridge', 'host-local', 'firewall'])) return { name, n: 0, note: 'unavailable: apt-get install containernetworking-plugins iptables' };
  const chain = new CniChain('cnibench', [
    { type: 'bridge', bridge: 'cnibench0', isGateway: true, ipMasq: true, ipam: { type: 'host-local', subnet: '10.183.0.0/16', dataDir: path.join(dir, 'cni') } },
    { type: 'firewall', backend: 'iptables' },
  ]);
  const ns = (i: number) => `${run}-ref${i}`;
  const a: number[] = [];
  const d: number[] = [];
  try {
    for (let i = 0; i < PEER_N; i++) {
      execFileSync('ip', ['netns', 'add', ns(i)]);
      const t = now();
      chain.add(`c${i}`, `/run/netns/${ns(i)}`);
      a.push(now() - t);
    }
    for (let i = PEER_N - 1; i >= 0; i--) {
      const t = now();
      chain.del(`c${i}`, `/run/netns/${ns(i)}`);
      d.push(now() - t);
      spawnSync('ip', ['netns', 'del', ns(i)]);
    }
  } catch (err) {
    return { name, n: a.length, note: `failed: ${(err as Error).message.slice(0, 160)}` };
  } finally {
    for (let i = 0; i < PEER_N; i++) if (fs.existsSync(`/run/netns/${ns(i)}`)) spawnSync('ip', ['netns', 'del', ns(i)]);
    spawnSync('ip', ['link', 'del', 'cnibench0']);
  }
  return { name, n: PEER_N, add: stats(a), del: stats(d) };
}

function table(rows: Row[]): string {
  const f = (x?: number) => (x === undefined ? '-' : x < 10 ? x.toFixed(2) : x.toFixed(0));
  const head = ['', 'n', 'ADD p50 ms', 'p90', 'DEL p50 ms', 'p90', ''];
  const body = rows.map((r) => [r.name, String(r.n), f(r.add?.p50), f(r.add?.p90), f(r.del?.p50), f(r.del?.p90), r.note ?? '']);
  const all = [head, ...body];
  const w = head.map((_, i) => Math.max(...all.map((r) => r[i].length)));
  return all.map((r) => r.map((c, i) => (i === 0 || i === 6 ? c.padEnd(w[i]) : c.padStart(w[i]))).join('  ').trimEnd()).join('\n');
}

function verdict(tn: Row, chain: Row): string {
  if (!tn.add || !tn.del) return 'no toastnet figures';
  const lines = [
    `ADD p50 ${tn.add.p50.toFixed(2)} ms (target <= ${TARGET.addP50}): ${tn.add.p50 <= TARGET.addP50 ? 'met' : 'MISSED'}`,
    `DEL p50 ${tn.del.p50.toFixed(2)} ms (target <= ${TARGET.delP50}): ${tn.del.p50 <= TARGET.delP50 ? 'met' : 'MISSED'}`,
  ];
  if (chain.add && chain.del) {
    const ra = chain.add.p50 / tn.add.p50;
    const rd = chain.del.p50 / tn.del.p50;
    lines.push(`vs the chain: ADD ${ra.toFixed(1)}x, DEL ${rd.toFixed(1)}x faster (target >= ${TARGET.times}x): ${ra >= TARGET.times && rd >= TARGET.times ? 'met' : 'MISSED'}`);
  }
  return lines.join('\n');
}

async function inner(run: string, dir: string, flags: string[]): Promise<void> {
  const rows = [...(await benchToastnet(run, flags)), benchChain(run, dir)];
  process.stdout.write(`${JSON.stringify(rows)}\n`);
}

async function outer(): Promise<void> {
  const tb = await Testbed.create({ hostService: false });
  const flags = tb.flags('benchcni');
  try {
    process.stdout.write(`toastnet CNI bench: ${N} ADD/DEL (chain ${PEER_N}), a process per call, ${os.cpus().length} CPUs, Linux ${os.release()}, Node ${process.version}\n`);
    const r = spawnSync('nsenter', [`--net=/run/netns/${tb.hostNs}`, process.execPath, SELF, '--inner', tb.run, tb.dir, JSON.stringify(flags)], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], timeout: 600_000 });
    if (r.status !== 0) throw new Error(`inner bench failed (${r.status})`);
    const rows = JSON.parse(r.stdout.trim().split('\n').pop()!) as Row[];
    process.stdout.write(`${table(rows)}\n${verdict(rows[0], rows[rows.length - 1])}\n`);
    const out = process.env.BENCH_JSON;
    if (out) fs.writeFileSync(out, JSON.stringify({ n: N, peerN: PEER_N, rows }, null, 2));
  } finally {
    await tb.destroy();
  }
}

if (process.argv[2] === '--inner') await inner(process.argv[3], process.argv[4], JSON.parse(process.argv[5]) as string[]);
else await outer();
