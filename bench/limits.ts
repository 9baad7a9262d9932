// `npm run bench:limits`: does a bandwidth cap hold, and at what cost to TCP? For a cap R,
// one 4-second iperf3 transfer each way from its first byte (no -O omit: the start is what a
// policer gets wrong), receiver figure, for:
//   - toastnet's shaper (HTB classes), a veth sandbox and a macvlan sandbox;
//   - the policer toastnet used before, rebuilt here as it was: an nftables byte-mode
//     `limit` per direction keyed by the sandbox's address, burst 100 ms of the rate,
//     on an unlimited veth sandbox (a table of the bench's own, before toastnet's filter).
// Printed side by side: the cap, the 4-s average, the first second, and TCP retransmissions.
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
import { Nft } from '../src/kernel/nft.js';
import { defaultBurst } from '../src/core/policy.js';
import { parseRate } from '../src/core/units.js';
import { Testbed, WAN } from '../test/testbed/testbed.js';

const SELF = fileURLToPath(import.meta.url);
const CAP = process.env.BENCH_LIMIT ?? '20mbit';
const SECONDS = Number(process.env.BENCH_SECONDS ?? 4);

export interface LimitReading {
  how: string;
  direction: 'up' | 'down';
  capMbit: number;
  /** Receiver's figure over the whole transfer, from its first byte. */
  avgMbit: number;
  /** The receiver's first interval, and how long it was (iperf3 reports every second). */
  firstSecondMbit: number;
  firstSeconds: number;
  retransmits: number;
}

type Intervals = { sum: { bits_per_second: number; seconds: number } }[];
interface IperfJson {
  end: { sum_received: { bits_per_second: number }; sum_sent: { retransmits?: number } };
  intervals: Intervals;
  server_output_json?: { intervals: Intervals; end: { sum_sent?: { retransmits?: number } } };
}

/** One transfer from (up) or to (down) the sandbox, from its first byte. */
export function transfer(netns: string, port: number, down: boolean, seconds = SECONDS): { avg: number; first: number; firstSeconds: number; retransmits: number } {
  const args = ['iperf3', '-J', '-c', WAN.internet, '-p', String(port), '-t', String(seconds), '--get-server-output', ...(down ? ['-R'] : [])];
  const r = spawnSync('nsenter', [`--net=${netns}`, ...args], { encoding: 'utf8', timeout: (seconds + 30) * 1000 });
  if (r.status !== 0) throw new Error(`iperf3 ${args.join(' ')}: ${r.stdout.slice(-300)}${r.stderr}`);
  const j = JSON.parse(r.stdout) as IperfJson;
  // The receiver's intervals: the client's when downloading, the server's when uploading.
  const rx = down ? j.intervals : (j.server_output_json?.intervals ?? j.intervals);
  const retransmits = down ? (j.server_output_json?.end.sum_sent?.retransmits ?? j.end.sum_sent.retransmits ?? 0) : (j.end.sum_sent.retransmits ?? 0);
  return { avg: j.end.sum_received.bits_per_second, first: rx[0]?.sum.bits_per_second ?? 0, firstSeconds: rx[0]?.sum.seconds ?? 0, retransmits };
}

/** The old policer as toastnet built it: byte-mode limit objects "over" the rate, per second, burst 100 ms of it. */
function oldPolicer(ip: string, rate: number): unknown[] {
  const t = { family: 'inet', table: 'bench_policer' };
  const burst = defaultBurst(rate);
  const limit = (name: string) => ({ add: { limit: { ...t, name, rate, per: 'second', burst, inv: true, rate_unit: 'bytes', burst_unit: 'bytes' } } });
  // toastnet reached the same objects through a map keyed by the address; the bench names them.
  const rule = (field: 'saddr' | 'daddr', name: string) => ({
    add: { rule: { ...t, chain: 'forward', expr: [{ match: { op: '==', left: { payload: { protocol: 'ip', field } }, right: ip } }, { limit: name }, { drop: null }] } },
  });
  return [
    { add: { table: { family: 'inet', name: t.table } } }, { delete: { table: { family: 'inet', name: t.table } } }, { add: { table: { family: 'inet', name: t.table } } },
    limit('out'), limit('in'),
    { add: { chain: { ...t, name: 'forward', type: 'filter', hook: 'forward', prio: -10, policy: 'accept' } } },
    rule('saddr', 'out'), rule('daddr', 'in'),
  ];
}

async function inner(dir: string): Promise<void> {
  const config = resolveConfig(ConfigSchema.parse({
    instance: 'benchl', subnet: '10.185.0.0/16', dnsUpstreams: ['203.0.113.53'], stateDir: path.join(dir, 'state'), runDir: path.join(dir, 'run'),
  }), []);
  const e = await Engine.open(config);
  const nft = new Nft();
  const out: LimitReading[] = [];
  const rate = parseRate(CAP);
  const capMbit = (rate * 8) / 1e6;
  try {
    e.up();
    const limits = { egressRate: CAP, ingressRate: CAP };
    const cases = [
      { how: 'policer before (nft limit), veth', sb: e.create({ name: 'policed' }), police: true },
      { how: 'shaper (HTB), veth', sb: e.create({ name: 'shaped', policy: { limits } }), police: false },
      { how: 'shaper (HTB), macvlan', sb: e.create({ name: 'mshaped', mode: 'macvlan', policy: { limits } }), police: false },
    ];
    nft.apply(oldPolicer(cases[0].sb.ip, rate) as never, 'bench policer');
    for (const c of cases) {
      for (const down of [false, true]) {
        const r = transfer(c.sb.netns, 5201, down);
        out.push({ how: c.how, direction: down ? 'down' : 'up', capMbit, avgMbit: r.avg / 1e6, firstSecondMbit: r.first / 1e6, firstSeconds: r.firstSeconds, retransmits: r.retransmits });
      }
    }
  } finally {
    try {
      nft.apply([{ delete: { table: { family: 'inet', name: 'bench_policer' } } }] as never);
    } catch {
      // not made
    }
    nft.free();
    await e.down();
    e.close();
  }
  process.stdout.write(`${JSON.stringify(out)}\n`);
}

async function outer(): Promise<void> {
  const tb = await Testbed.create({ hostService: false });
  tb.instances.add('benchl');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'toastnet-limits-'));
  try {
    tb.background(tb.wanNs, ['iperf3', '-s', '-B', WAN.internet, '-p', '5201']);
    await new Promise((r) => setTimeout(r, 300));
    process.stdout.write(`toastnet limits bench: a cap of ${CAP} each way, one ${SECONDS}-s iperf3 TCP transfer per row from its first byte (receiver's figure), ${os.cpus().length} CPUs\n`);
    const r = spawnSync('nsenter', [`--net=/run/netns/${tb.hostNs}`, process.execPath, SELF, '--inner', dir], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], timeout: 600_000 });
    if (r.status !== 0) throw new Error(`inner bench failed (${r.status})`);
    const rows = JSON.parse(r.stdout.trim().split('\n').pop()!) as LimitReading[];
    const head = ['limit', 'way', 'cap Mbit/s', `${SECONDS}-s avg`, 'of cap', '1st interval', 'TCP retransmits'];
    const widths = [34, 4, 10, 9, 7, 18, 15];
    const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join(' ');
    process.stdout.write(`${line(head)}\n`);
    for (const x of rows) {
      process.stdout.write(`${line([x.how, x.direction, x.capMbit.toFixed(1), x.avgMbit.toFixed(1), `${((100 * x.avgMbit) / x.capMbit).toFixed(0)} %`, `${x.firstSecondMbit.toFixed(1)} (${x.firstSeconds.toFixed(2)} s)`, String(x.retransmits)])}\n`);
    }
    if (process.env.BENCH_JSON) fs.writeFileSync(process.env.BENCH_JSON, JSON.stringify({ cap: CAP, seconds: SECONDS, rows }, null, 2));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
    await tb.destroy();
  }
}

if (process.argv[2] === '--inner') await inner(process.argv[3]);
else if (process.argv[1] === SELF) await outer();
