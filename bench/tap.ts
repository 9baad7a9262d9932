// `npm run bench:tap`: TAP sandboxes for microVMs, side by side with their peers in one run:
//   - create and delete p50/p95, tap against veth (engine in-process, interleaved blocks);
//   - a create from the warm pool (acquisition), tap against veth: what a platform that keeps
//     a pool (defaultMode tap) meets;
//   - a real guest (QEMU -M microvm under TCG, Debian's cloud kernel, busybox: see
//     test/helpers/microvm.ts): boot to its first answered packet, and TCP upload throughput
//     to the testbed's internet, through a toastnet TAP against a hand-made TAP with plain
//     NAT (`ip tuntap` + an address + one masquerade rule: the recipe's way, no policy).
// Boots alternate between the two so a busy shared host penalises both alike.
//
// The outer process builds the testbed and re-runs this file inside its host namespace
// (--inner), so every packet and kernel object stays in the testbed.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { resolve as resolveConfig } from '../src/config/load.js';
import { ConfigSchema } from '../src/config/schema.js';
import { Engine } from '../src/service/engine.js';
import { turn } from './lib.js';
import { Testbed, WAN } from '../test/testbed/testbed.js';
import { GuestImage, bootGuest, microvmUnavailable, prepareGuest } from '../test/helpers/microvm.js';

const SELF = fileURLToPath(import.meta.url);
const N = Number(process.env.BENCH_N ?? 200);
const WARMUP = Number(process.env.BENCH_WARMUP ?? 50);
const BOOTS = Number(process.env.BENCH_TAP_BOOTS ?? 2);
const UPLOAD_KB = Number(process.env.BENCH_TAP_UPLOAD_KB ?? 8192);
const HAND = { tap: 'hmtap0', gw: '10.199.0.1', ip: '10.199.0.2', mac: '02:00:00:00:00:01' };

interface Dist {
  /** The 10th percentile: on a busy host, the closest to the work itself. */
  p10: number;
  p50: number;
  p95: number;
}
interface Boot {
  firstPacketMs: number;
  uploadMbps: number[];
}
interface Result {
  create: { veth: Dist; tap: Dist };
  /** A create that acquires a warm-pool member (made ahead, not timed). */
  acquire: { veth: Dist; tap: Dist };
  remove: { veth: Dist; tap: Dist };
  /**
   * This process's CPU time (user + system: the kernel's work in our netlink and ioctl calls
   * included) per create and per delete, mean: on a busy shared host, wall-clock p50 mostly
   * measures the scheduler; CPU time is the work each mode costs.
   */
  cpu: { create: { veth: number; tap: number }; remove: { veth: number; tap: number } };
  boots: { toastnet: Boot[]; hand: Boot[] };
}

const pct = (xs: number[], q: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * q))];
const dist = (xs: number[]): Dist => ({ p10: pct(xs, 0.1), p50: pct(xs, 0.5), p95: pct(xs, 0.95) });
const med = (xs: number[]) => pct(xs, 0.5);

/** Create then delete p50/p95 for veth and tap, in alternating blocks of 20 so drift hits both. */
async function createDelete(e: Engine): Promise<Pick<Result, 'create' | 'remove' | 'cpu'>> {
  const times = { veth: { c: [] as number[], d: [] as number[] }, tap: { c: [] as number[], d: [] as number[] } };
  const cpu = { veth: { c: 0, d: 0 }, tap: { c: 0, d: 0 } };
  const cpuMs = (u: NodeJS.CpuUsage) => (u.user + u.system) / 1000;
  for (let i = 0; i < WARMUP; i++) {
    for (const mode of ['veth', 'tap'] as const) {
      e.create({ name: `w-${mode}-${i}`, mode });
      e.remove(`w-${mode}-${i}`);
      await turn();
    }
  }
  await e.settled();
  const BLOCK = 20;
  for (let b = 0; b < N / BLOCK; b++) {
    for (const mode of ['veth', 'tap'] as const) {
      const names = Array.from({ length: BLOCK }, (_, i) => `${mode}-${b}-${i}`);
      let u = process.cpuUsage();
      for (const n of names) {
        const t = performance.now();
        e.create({ name: n, mode });
        times[mode].c.push(performance.now() - t);
      }
      cpu[mode].c += cpuMs(process.cpuUsage(u));
      for (const n of names) {
        u = process.cpuUsage();
        const t = performance.now();
        e.remove(n);
        times[mode].d.push(performance.now() - t);
        cpu[mode].d += cpuMs(process.cpuUsage(u));
        await turn();
      }
      await e.settled();
    }
  }
  const per = (ms: number, list: number[]) => ms / list.length;
  return {
    create: { veth: dist(times.veth.c), tap: dist(times.tap.c) },
    remove: { veth: dist(times.veth.d), tap: dist(times.tap.d) },
    cpu: {
      create: { veth: per(cpu.veth.c, times.veth.c), tap: per(cpu.tap.c, times.tap.c) },
      remove: { veth: per(cpu.veth.d, times.veth.d), tap: per(cpu.tap.d, times.tap.d) },
    },
  };
}

/**
 * Warm-pool acquisitions, tap against veth: `engines` hold pools of each mode (defaultMode);
 * members are made ahead of each block (not timed), blocks alternate between the modes.
 */
async function acquisitions(engines: Record<'veth' | 'tap', Engine>): Promise<Result['acquire']> {
  const times = { veth: [] as number[], tap: [] as number[] };
  const BLOCK = 20;
  for (let b = -1; b < N / BLOCK; b++) {
    for (const mode of ['veth', 'tap'] as const) {
      const e = engines[mode];
      for (let i = 0; i < BLOCK; i++) e.createPoolMember();
      const names = Array.from({ length: BLOCK }, (_, i) => `p${mode}-${b}-${i}`);
      for (const n of names) {
        const t = performance.now();
        const got = e.acquire({ name: n, mode });
        const ms = performance.now() - t;
        if (!got) throw new Error(`the ${mode} pool was empty`);
        if (b >= 0) times[mode].push(ms); // block -1 warms up
      }
      for (const n of names) e.remove(n);
      await e.settled();
    }
  }
  return { veth: dist(times.veth), tap: dist(times.tap) };
}

const PROBES = [`get:http://${WAN.internet}/first`, ...Array.from({ length: 3 }, () => `send:${WAN.internet}:9100:${UPLOAD_KB}`)];

async function boot(img: GuestImage, o: { netns: string; tap: string; mac: string; kernelIp: string }): Promise<Boot> {
  const g = bootGuest(img, { ...o, probes: PROBES, timeoutMs: 300_000 });
  try {
    const first = await g.mark(['get', `http://${WAN.internet}/first`], 120_000);
    if (first.words[2] !== 'ok') throw new Error(`the guest's first GET failed:\n${g.log.slice(-2000)}`);
    await g.mark(['done'], 240_000);
    const sends = g.marks.filter((m) => m.words[0] === 'send');
    return {
      firstPacketMs: first.atMs,
      uploadMbps: sends.map((m) => (Number(m.words[2]) * 1024 * 8) / (Number(m.words[4]) - Number(m.words[3])) / 1e6),
    };
  } finally {
    g.kill();
    await g.exited;
  }
}

/** The hand-made peer: a TAP in this namespace with the gateway address and one masquerade rule. */
function handMade(up: boolean): void {
  const run = (...a: string[]) => execFileSync(a[0], a.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] });
  if (!up) {
    spawnSync('ip', ['link', 'del', HAND.tap]);
    spawnSync('nft', ['delete', 'table', 'ip', 'benchtap_nat']);
    return;
  }
  run('ip', 'tuntap', 'add', 'dev', HAND.tap, 'mode', 'tap', 'vnet_hdr');
  run('ip', 'addr', 'add', `${HAND.gw}/24`, 'dev', HAND.tap);
  run('ip', 'link', 'set', HAND.tap, 'up');
  run('sysctl', '-qw', 'net.ipv4.ip_forward=1');
  run('nft', `add table ip benchtap_nat; add chain ip benchtap_nat post { type nat hook postrouting priority 100; }; add rule ip benchtap_nat post ip saddr 10.199.0.0/24 oifname "up0" masquerade`);
}

async function inner(dir: string, hostNs: string): Promise<void> {
  const img = prepareGuest();
  const e = await Engine.open(resolveConfig(ConfigSchema.parse({
    instance: 'benchtap', subnet: '10.186.0.0/16', dnsUpstreams: [WAN.dns], stateDir: path.join(dir, 'state'), runDir: path.join(dir, 'run'),
  }), []));
  const pooled = await Engine.open(resolveConfig(ConfigSchema.parse({
    instance: 'benchtapp', subnet: '10.187.0.0/16', defaultMode: 'tap', dnsUpstreams: [WAN.dns], stateDir: path.join(dir, 'statep'), runDir: path.join(dir, 'runp'),
  }), []));
  const res: Result = { create: undefined!, acquire: undefined!, remove: undefined!, cpu: undefined!, boots: { toastnet: [], hand: [] } };
  try {
    e.up();
    Object.assign(res, await createDelete(e));
    try {
      pooled.up();
      res.acquire = await acquisitions({ veth: e, tap: pooled });
    } finally {
      await pooled.down();
      pooled.close();
    }
    handMade(true);
    const bootHand = async () => res.boots.hand.push(await boot(img, { netns: hostNs, tap: HAND.tap, mac: HAND.mac, kernelIp: `ip=${HAND.ip}::${HAND.gw}:255.255.255.0::eth0:off:${WAN.dns}` }));
    const bootToastnet = async (i: number) => {
      const t = e.create({ name: `vm${i}`, mode: 'tap' }).tap!;
      res.boots.toastnet.push(await boot(img, { netns: t.netns, tap: t.device, mac: t.guestMac, kernelIp: t.kernelIp }));
      e.remove(`vm${i}`);
      await e.settled();
    };
    // Alternating which goes first, so a host getting busier or quieter favours neither.
    for (let i = 0; i < BOOTS; i++) {
      if (i % 2 === 0) {
        await bootHand();
        await bootToastnet(i);
      } else {
        await bootToastnet(i);
        await bootHand();
      }
    }
  } finally {
    handMade(false);
    await e.down();
    e.close();
  }
  process.stdout.write(`${JSON.stringify(res)}\n`);
}

async function outer(): Promise<void> {
  const why = microvmUnavailable();
  if (why) {
    process.stdout.write(`tap bench skipped: ${why}\n`);
    return;
  }
  prepareGuest(); // download and build outside the timed runs
  const tb = await Testbed.create({ hostService: false });
  tb.instances.add('benchtap');
  tb.instances.add('benchtapp');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'toastnet-tap-'));
  try {
    await tb.serveWan([`sink:${WAN.internet}:9100`]);
    process.stdout.write(`toastnet tap bench: create/delete p50 tap vs veth (${N} each, engine in-process); a microVM guest (QEMU microvm, TCG) on a toastnet TAP vs a hand-made TAP with plain NAT, ${BOOTS} boots each, 3 uploads of ${UPLOAD_KB / 1024} MiB per boot; ${os.cpus().length} CPUs\n`);
    const r = spawnSync('nsenter', [`--net=/run/netns/${tb.hostNs}`, process.execPath, SELF, '--inner', dir, `/run/netns/${tb.hostNs}`], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], timeout: 1_800_000 });
    if (r.status !== 0) throw new Error(`inner bench failed (${r.status})`);
    const x = JSON.parse(r.stdout.trim().split('\n').pop()!) as Result;
    const f = (n: number) => n.toFixed(3);
    process.stdout.write(`${'ms'.padEnd(26)}${'veth p50'.padStart(10)}${'tap p50'.padStart(10)}${'tap-veth'.padStart(10)}${'veth p95'.padStart(10)}${'tap p95'.padStart(10)}${'veth CPU'.padStart(10)}${'tap CPU'.padStart(10)}${'veth p10'.padStart(10)}${'tap p10'.padStart(10)}\n`);
    for (const [k, v, c] of [['create', x.create, x.cpu.create], ['create from the warm pool', x.acquire, undefined], ['delete', x.remove, x.cpu.remove]] as const) {
      const cpu = (n?: number) => (n === undefined ? '-' : f(n)).padStart(10);
      process.stdout.write(`${k.padEnd(26)}${f(v.veth.p50).padStart(10)}${f(v.tap.p50).padStart(10)}${f(v.tap.p50 - v.veth.p50).padStart(10)}${f(v.veth.p95).padStart(10)}${f(v.tap.p95).padStart(10)}${cpu(c?.veth)}${cpu(c?.tap)}${f(v.veth.p10).padStart(10)}${f(v.tap.p10).padStart(10)}\n`);
    }
    process.stdout.write('(CPU: this process\'s user + system time per operation, mean; the kernel\'s work in its calls included)\n');
    if (BOOTS > 0) printBoots(x);
    if (process.env.BENCH_JSON) fs.writeFileSync(process.env.BENCH_JSON, JSON.stringify(x, null, 2));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
    await tb.destroy();
  }
}

function printBoots(x: Result): void {
    const firstT = med(x.boots.toastnet.map((b) => b.firstPacketMs));
    const firstH = med(x.boots.hand.map((b) => b.firstPacketMs));
    const upT = med(x.boots.toastnet.flatMap((b) => b.uploadMbps));
    const upH = med(x.boots.hand.flatMap((b) => b.uploadMbps));
    process.stdout.write(`${'guest (median)'.padEnd(26)}${'toastnet'.padStart(10)}${'hand-made'.padStart(10)}${'ratio'.padStart(10)}\n`);
    process.stdout.write(`${'boot to first packet, s'.padEnd(26)}${(firstT / 1000).toFixed(2).padStart(10)}${(firstH / 1000).toFixed(2).padStart(10)}${(firstT / firstH).toFixed(2).padStart(10)}\n`);
    process.stdout.write(`${'TCP upload, Mbit/s'.padEnd(26)}${upT.toFixed(0).padStart(10)}${upH.toFixed(0).padStart(10)}${`${((100 * upT) / upH).toFixed(0)} %`.padStart(10)}\n`);
    process.stdout.write(`all boots: ${JSON.stringify(x.boots)}\n`);
}

if (process.argv[2] === '--inner') await inner(process.argv[3], process.argv[4]);
else await outer();
