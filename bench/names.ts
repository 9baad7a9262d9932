// `npm run bench:names`: what name checks (core/name-check.ts) cost a sandbox, in one
// throwaway topology, side by side in one run with the same sandbox policy without them
// (egress.verifyNames false), the targets beside each figure:
//   - connect to first byte of the answer, plain HTTP (Host) and TLS (SNI), p50 and p90:
//     target p50 added <= 0.3 ms;
//   - a TLS download through an allowed name (curl, 256 MiB, four per sandbox and round,
//     alternating): target >= 95 %;
//   - new connections per second (request, answer, close; 4 processes in one sandbox), and
//     the gate's capacity (connections judged per second of its reader's time, from status):
//     target >= 5,000/s;
//   - a name-checked sandbox's connect latency while another sandbox floods new connections
//     through the same gate (and, to compare, unchecked): target p50 within 20 %. First with
//     the instance's defaults, whose ceiling of new connections per sandbox
//     (newConnsPerSecond, 1,000/s) holds the flood; then, for the record, with that ceiling
//     raised out of the way (the daemon restarted with it), what an unbounded flood costs.
//     Everything after runs with the ceiling raised: one sandbox's connection rate is measured.
// The testbed's TLS edge (203.0.113.20) serves cdn.test; every sandbox resolves it through
// its gateway first (that is what admits the address). Blocks alternate between the two
// sandboxes so drift in the machine's load falls on both. Run it alone: on a shared machine
// the figures measure the machine.
import fs from 'node:fs';
import path from 'node:path';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { ToastnetClient } from '../src/api/client.js';
import { Testbed, VHOST_PORT, WAN } from '../test/testbed/testbed.js';
import { waitFor } from '../test/helpers/wait.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const CLIENT = path.join(here, 'names-client.js');
const EDGE = WAN.internet2;
const NAME = 'cdn.test';
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 4);

const pct = (xs: number[], q: number) => [...xs].sort((x, y) => x - y)[Math.min(xs.length - 1, Math.floor(xs.length * q))];
const median = (xs: number[]) => pct(xs, 0.5);
const f2 = (x: number) => x.toFixed(2);

interface Sb { name: string; ns: string; gateway: string }

function inSandbox(sb: Sb, args: string[]): Record<string, unknown> {
  // The admission lasts what is left of the answer's TTL, and a cached answer's is counting
  // down: asked again before each run, so none runs past it.
  resolve(sb);
  const r = spawnSync('nsenter', [`--net=${sb.ns}`, process.execPath, CLIENT, ...args], { encoding: 'utf8', timeout: 600_000 });
  if (r.status !== 0) throw new Error(`${sb.name}: ${args.join(' ')}: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

const RATE_PROCS = 4;
const FLOOD_PORT0 = 8090;
const RATE_LOOPS = 16;
/** TLS connections per sandbox and round: TLS_BLOCKS alternating blocks of TLS_PER_BLOCK. */
const TLS_BLOCKS = 6;
const TLS_PER_BLOCK = 40;
/** Rounds of the neighbour-under-flood measurement, and how long each flood runs (the neighbour's 400 connections take 1-2 s of it). */
const FLOOD_ROUNDS = Number(process.env.BENCH_FLOOD_ROUNDS ?? 3);
const FLOOD_SECONDS = 4;
/** The instance's newConnsPerSecond once raised out of the way (its default: 1,000 per sandbox). */
const CONN_CEILING_RAISED = 1_000_000;
/** Downloads per sandbox and round, alternating between the two. */
const DOWNLOADS = 4;

/** New connections per second from RATE_PROCS client processes in one sandbox, for `seconds`. */
async function rateFrom(sb: Sb, seconds: number, port: number): Promise<{ perSecond: number; errors: number }> {
  resolve(sb);
  const runs = Array.from({ length: RATE_PROCS }, () => new Promise<{ connections: number; errors: number; seconds: number }>((res, rej) => {
    const p = spawn('nsenter', [`--net=${sb.ns}`, process.execPath, CLIENT, 'rate', EDGE, String(port), NAME, String(seconds), String(RATE_LOOPS)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (err += d));
    p.on('exit', (code) => (code === 0 ? res(JSON.parse(out)) : rej(new Error(`${sb.name} rate: ${err}`))));
  }));
  const all = await Promise.all(runs);
  return { perSecond: all.reduce((n, r) => n + r.connections / r.seconds, 0), errors: all.reduce((n, r) => n + r.errors, 0) };
}

/**
 * One HTTPS download of 256 MiB through the allowed name, by curl (what users run; Node's
 * TLS client, single-threaded, spread 74-104 % between runs on the same build): Mbit/s.
 */
function download(sb: Sb, ca: string): number {
  resolve(sb);
  const r = spawnSync('nsenter', [`--net=${sb.ns}`, 'curl', '-sS', '-o', '/dev/null', '-w', '%{speed_download}', '--cacert', ca,
    '--resolve', `${NAME}:443:${EDGE}`, `https://${NAME}/bytes/${256 * 1024 * 1024}`], { encoding: 'utf8', timeout: 120_000 });
  if (r.status !== 0) throw new Error(`${sb.name}: download: ${r.stderr}`);
  return (Number(r.stdout) * 8) / 1e6;
}

/** Asks the gateway for cdn.test: its answer (re)admits the edge's address for the sandbox. */
function resolve(sb: Sb): void {
  const r = spawnSync('nsenter', [`--net=${sb.ns}`, 'dig', '+short', `@${sb.gateway}`, NAME], { encoding: 'utf8' });
  if (!r.stdout.includes(EDGE)) throw new Error(`${sb.name}: ${NAME} did not resolve to ${EDGE}: ${r.stdout}${r.stderr}`);
}

async function main(): Promise<void> {
  const tb = await Testbed.create();
  const I = `bn${Date.now().toString(36)}`;
  try {
    const ca = await tb.serveTlsNames([NAME, 'edge.cdn-provider.test']);
    // A port of its own for each burst of new connections: all of them leave by the host's
    // one uplink address, and the NAT's ports towards one destination (held in TIME_WAIT for
    // two minutes) run out after some tens of thousands, slowing every later connect there.
    const floodPorts = Array.from({ length: 4 * FLOOD_ROUNDS + 2 * ROUNDS }, (_, i) => FLOOD_PORT0 + i);
    await tb.serveWan(floodPorts.map((p) => `vhost:${EDGE}:${p}`));
    let nextFloodPort = 0;
    const floodPort = () => floodPorts[nextFloodPort++];
    if (tb.toastnet(I, ['up']).code !== 0) throw new Error('up failed');
    let daemon: ChildProcess = tb.startDaemon(I);
    const cl = new ToastnetClient(tb.socketPath(I));
    await waitFor(() => cl.ping(), 'the daemon');
    const sb = async (name: string, verifyNames: boolean): Promise<Sb> => {
      const v = await cl.create({ name, policy: { egress: { domains: [NAME], verifyNames } } });
      return { name, ns: v.netns, gateway: v.gateway };
    };
    const checked = await sb('checked', true);
    const unchecked = await sb('unchecked', false);
    const flooder = await sb('flooder', true);
    const all = [checked, unchecked, flooder];
    for (const s of all) resolve(s);
    // Warm-up, not measured: the daemon's gate worker, the sandboxes' first connections.
    for (const s of [checked, unchecked]) inSandbox(s, ['latency', EDGE, String(VHOST_PORT), NAME, '200']);

    // A name-checked neighbour while another sandbox floods new connections: through the
    // gate (a name-checked flooder), and, for what the flood alone costs the machine, not.
    for (const s of all) resolve(s);
    const neighbour = () => (inSandbox(checked, ['latency', EDGE, String(VHOST_PORT), NAME, '400']) as { times: number[] }).times;
    type Flood = { times: number[]; perSecond: number[] };
    /** Rounds of: quiet, then a flood from each of the two (the order alternating), so the machine's drift falls on all three; medians over every round's times. */
    const floodRounds = async () => {
      const out = { quiet: [] as number[], checked: { times: [], perSecond: [] } as Flood, unchecked: { times: [], perSecond: [] } as Flood };
      for (let round = 0; round < FLOOD_ROUNDS; round++) {
        for (const s of all) resolve(s);
        out.quiet.push(...neighbour());
        for (const from of round % 2 === 0 ? [unchecked, flooder] : [flooder, unchecked]) {
          const into = from === flooder ? out.checked : out.unchecked;
          const flood = rateFrom(from, FLOOD_SECONDS, floodPort());
          await new Promise((r) => setTimeout(r, 1000)); // the flood at full rate first
          into.times.push(...neighbour());
          into.perSecond.push((await flood).perSecond);
          resolve(checked);
        }
      }
      return out;
    };
    const underCeiling = await floodRounds();
    // The ceiling raised out of the way: a restart with the config changed rebuilds the table.
    const config = path.join(tb.dir, 'names-bench.json');
    fs.writeFileSync(config, JSON.stringify({ newConnsPerSecond: CONN_CEILING_RAISED }));
    if (daemon.exitCode === null) {
      const exited = new Promise((r) => daemon.once('exit', r));
      daemon.kill('SIGTERM');
      await exited;
    }
    daemon = tb.startDaemon(I, ['--config', config]);
    await waitFor(() => cl.ping(), 'the daemon, restarted with the ceiling raised');
    // The new daemon's gate reader warmed as the first one was, before anything is timed.
    for (const s of all) resolve(s);
    for (const s of [checked, unchecked]) inSandbox(s, ['latency', EDGE, String(VHOST_PORT), NAME, '200']);
    const unbounded = await floodRounds();

    const lat = { http: { checked: [] as number[], unchecked: [] as number[] }, tls: { checked: [] as number[], unchecked: [] as number[] } };
    const dl = { checked: [] as number[], unchecked: [] as number[] };
    const rate = { checked: [] as number[], unchecked: [] as number[] };
    /** Connections the gate's reader judged per second of its own time (its capacity, whatever the load generator manages). */
    const capacity: number[] = [];
    let errors = 0;
    for (let round = 0; round < ROUNDS; round++) {
      const order = round % 2 === 0 ? [checked, unchecked] : [unchecked, checked];
      for (const s of all) resolve(s);
      // TLS in short alternating blocks: a handshake's time drifts with the machine by more
      // than the gate adds (one block of 150 each gave medians 0.4 ms apart between runs).
      for (let block = 0; block < TLS_BLOCKS; block++) {
        for (const s of block % 2 === 0 ? order : [...order].reverse()) {
          const t = inSandbox(s, ['latency', EDGE, '443', NAME, String(TLS_PER_BLOCK), ca]) as { times: number[]; errors: number };
          lat.tls[s === checked ? 'checked' : 'unchecked'].push(...t.times);
          errors += t.errors;
        }
      }
      // Downloads alternating, so drift falls on both (one curl's rate moves by 10-20 % between runs).
      for (let i = 0; i < DOWNLOADS; i++) {
        for (const s of i % 2 === 0 ? order : [...order].reverse()) dl[s === checked ? 'checked' : 'unchecked'].push(download(s, ca));
      }
      for (const s of order) {
        const key = s === checked ? 'checked' : 'unchecked';
        const h = inSandbox(s, ['latency', EDGE, String(VHOST_PORT), NAME, '300']) as { times: number[]; errors: number };
        lat.http[key].push(...h.times);
        errors += h.errors;
        const before = (await cl.status()).nameChecks;
        const r = await rateFrom(s, 3, floodPort());
        const after = (await cl.status()).nameChecks;
        rate[key].push(r.perSecond);
        errors += r.errors;
        if (s === checked && before && after) capacity.push((after.judged - before.judged) / ((after.busyMs - before.busyMs) / 1000));
      }
    }

    const judged = (await cl.stats('checked')) as unknown as { nameChecks?: { allowed: number; mismatched: number } };
    console.log(`\nName checks: the same sandbox policy with and without them (${ROUNDS} alternating rounds, after 200 unmeasured HTTP connections per sandbox that warm the gate's reader and the sandboxes' first connections; ${errors} failed connections). The latency, download and rate rows ran with the instance's newConnsPerSecond raised to ${CONN_CEILING_RAISED.toLocaleString('en')} (they measure one sandbox's connection rate); the flood rows say which.\n`);
    console.log('| | name-checked | unchecked | difference | target |');
    console.log('|---|---|---|---|---|');
    // BENCH_ROUNDS=0: the flood rounds alone.
    for (const [k, label] of ROUNDS > 0 ? [['http', 'HTTP (Host)'], ['tls', 'TLS (SNI)']] as const : []) {
      const c = lat[k].checked;
      const u = lat[k].unchecked;
      console.log(`| ${label} connect to first byte, p50 | ${f2(median(c))} ms | ${f2(median(u))} ms | +${f2(median(c) - median(u))} ms | <= +0.3 ms |`);
      console.log(`| ${label} connect to first byte, p90 | ${f2(pct(c, 0.9))} ms | ${f2(pct(u, 0.9))} ms | +${f2(pct(c, 0.9) - pct(u, 0.9))} ms | |`);
    }
    if (ROUNDS > 0) console.log(`| TLS download (curl), 256 MiB, median of ${DOWNLOADS * ROUNDS} | ${median(dl.checked).toFixed(0)} Mbit/s | ${median(dl.unchecked).toFixed(0)} Mbit/s | ${((median(dl.checked) / median(dl.unchecked)) * 100).toFixed(0)} % | >= 95 % |`);
    if (ROUNDS > 0) console.log(`| new connections/s (${RATE_PROCS} processes x ${RATE_LOOPS} loops, 3 s), median of ${ROUNDS} | ${median(rate.checked).toFixed(0)} | ${median(rate.unchecked).toFixed(0)} | ${((median(rate.checked) / median(rate.unchecked)) * 100).toFixed(0)} % | |`);
    if (ROUNDS > 0) console.log(`| the gate's capacity: connections judged per second of its reader's time, median | ${median(capacity).toFixed(0)} | | | >= 5,000/s judged |`);
    const nb = (x: Flood) => `${f2(median(x.times))} ms, p90 ${f2(pct(x.times, 0.9))} ms (flood ${median(x.perSecond).toFixed(0)}/s)`;
    const against = (x: Flood, base: number[]) => `${((median(x.times) / median(base) - 1) * 100).toFixed(0)} %`;
    for (const [label, r, target] of [['the instance\'s defaults (newConnsPerSecond 1,000/s per sandbox)', underCeiling, 'within 20 %'], [`newConnsPerSecond raised to ${CONN_CEILING_RAISED.toLocaleString('en')} (an unbounded flood, for the record)`, unbounded, '']] as const) {
      console.log(`| a name-checked neighbour's connect to first byte p50, ${FLOOD_ROUNDS} rounds, ${label}: quiet ${f2(median(r.quiet))} ms | flood through the gate: ${nb(r.checked)}; against quiet ${against(r.checked, r.quiet)} | flood not checked: ${nb(r.unchecked)}; against quiet ${against(r.unchecked, r.quiet)} | gate's share: ${against(r.checked, r.unchecked.times)} | ${target} |`);
    }
    if (judged?.nameChecks) console.log(`\nthe name-checked sandbox's connections judged: ${judged.nameChecks.allowed} allowed, ${judged.nameChecks.mismatched} mismatched`);
  } finally {
    tb.toastnet(I, ['down']);
    await tb.destroy();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
