// `npm run bench:forwarding`: what per-sandbox state costs the forwarding path. One probe
// sandbox sends through NAT and the full policy to the testbed's wan (iperf3: TCP bulk,
// and UDP with 64-byte payloads), first alone, then with N other sandboxes that all have
// limits, quotas and connection caps (so every map and tier is populated), in one run.
// The probe itself carries limits too, set high enough never to bind, so its packets take
// every lookup.
//
// The outer process builds the testbed and re-runs this file inside its host namespace
// (--inner), so every packet and kernel object stays in the testbed.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { resolve as resolveConfig } from '../src/config/load.js';
import { ConfigSchema } from '../src/config/schema.js';
import { Engine } from '../src/service/engine.js';
import { netnsPath } from '../src/kernel/netns.js';
import { iperf } from './lib.js';
import { Testbed, WAN } from '../test/testbed/testbed.js';

const SELF = fileURLToPath(import.meta.url);
const N = Number(process.env.BENCH_FWD_N ?? 1000);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 3);

interface Reading {
  sandboxes: number;
  tcpGbps: number;
  udpKpps: number;
  createMs: number;
}

const PROBE_LIMITS = { egressRate: '40gbit', ingressRate: '40gbit', packetsPerSecond: 50_000_000, newConnsPerSecond: 1_000, maxConnections: 100_000, egressBytes: '1TB' };

function measure(netns: string, sandboxes: number, createMs: number): Reading {
  const tcp = iperf(netns, SECONDS, ['-p', '5201']) as { end: { sum_received: { bits_per_second: number } } };
  const udp = iperf(netns, SECONDS, ['-p', '5201', '-u', '-l', '64', '-b', '0']) as { end: { sum: { packets: number; lost_packets: number; seconds: number } } };
  const got = udp.end.sum.packets - udp.end.sum.lost_packets;
  return { sandboxes, tcpGbps: tcp.end.sum_received.bits_per_second / 1e9, udpKpps: got / udp.end.sum.seconds / 1000, createMs };
}

async function inner(dir: string): Promise<void> {
  const config = resolveConfig(ConfigSchema.parse({
    instance: 'benchf', subnet: '10.184.0.0/16', dnsUpstreams: ['203.0.113.53'], stateDir: path.join(dir, 'state'), runDir: path.join(dir, 'run'),
  }), []);
  const e = await Engine.open(config);
  const out: Reading[] = [];
  try {
    e.up();
    const probe = e.create({ name: 'probe', policy: { limits: PROBE_LIMITS } });
    const ns = netnsPath(probe.netns.replace(/^.*\//, ''));
    out.push(measure(ns, 1, 0));
    const t0 = performance.now();
    for (let i = 0; i < N; i++) {
      // Ten distinct rates and five connection caps: realistic tiers, all populated.
      e.create({ name: `s${i}`, policy: { limits: { egressRate: `${10 + (i % 10)}mbit`, ingressRate: `${20 + (i % 10)}mbit`, packetsPerSecond: 10_000, newConnsPerSecond: 50, maxConnections: 100 + (i % 5), egressBytes: '10GB' } } });
    }
    out.push(measure(ns, N + 1, (performance.now() - t0) / N));
  } finally {
    await e.down();
    e.close();
  }
  process.stdout.write(`${JSON.stringify(out)}\n`);
}

async function outer(): Promise<void> {
  const tb = await Testbed.create({ hostService: false });
  // The testbed removes their namespaces and /etc/netns entries if the run fails midway.
  tb.instances.add('benchf');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'toastnet-fwd-'));
  try {
    tb.background(tb.wanNs, ['iperf3', '-s', '-B', WAN.internet, '-p', '5201']);
    await new Promise((r) => setTimeout(r, 300));
    process.stdout.write(`toastnet forwarding bench: probe sandbox -> NAT + full policy -> wan, alone and beside ${N} limited sandboxes; ${SECONDS} s per reading, ${os.cpus().length} CPUs\n`);
    const r = spawnSync('nsenter', [`--net=/run/netns/${tb.hostNs}`, process.execPath, SELF, '--inner', dir], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], timeout: 1_200_000 });
    if (r.status !== 0) throw new Error(`inner bench failed (${r.status})`);
    const rows = JSON.parse(r.stdout.trim().split('\n').pop()!) as Reading[];
    const [one, many] = rows;
    process.stdout.write(`${'sandboxes'.padStart(9)} ${'TCP Gbit/s'.padStart(11)} ${'UDP 64B kpps'.padStart(13)} ${'create ms (avg, limited)'.padStart(25)}\n`);
    for (const x of rows) process.stdout.write(`${String(x.sandboxes).padStart(9)} ${x.tcpGbps.toFixed(2).padStart(11)} ${x.udpKpps.toFixed(0).padStart(13)} ${(x.createMs ? x.createMs.toFixed(2) : '-').padStart(25)}\n`);
    process.stdout.write(`with ${N} more limited sandboxes: TCP ${(100 * many.tcpGbps / one.tcpGbps).toFixed(0)} %, UDP ${(100 * many.udpKpps / one.udpKpps).toFixed(0)} % of the one-sandbox figures\n`);
    if (process.env.BENCH_JSON) fs.writeFileSync(process.env.BENCH_JSON, JSON.stringify({ n: N, rows }, null, 2));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
    await tb.destroy();
  }
}

if (process.argv[2] === '--inner') await inner(process.argv[3]);
else await outer();
