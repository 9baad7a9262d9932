// `npm run bench:dns`: queries per second and latency through toastnet's resolver with
// policy on (the sandbox has a domain allow-list, so every answer is checked and its
// addresses admitted in the kernel) against peers doing the same job, in one run, in the
// testbed's namespaces.
//
// Two load generators:
// - dns-load.ts (Node): saturating (BENCH_CONCURRENCY queries in flight: throughput) and
//   one query at a time (latency a query adds, without queueing behind others), through the
//   resolver against straight to the upstream.
// - dnsperf (the field's standard tool, C), BENCH_DNSPERF_INFLIGHT queries outstanding:
//   cache hits through the resolver against the same queries to a caching dnsmasq (the
//   usual peer resolver), and cache misses (a new name every query) through the resolver
//   against the same sent straight to the upstream. Rows alternate over
//   BENCH_DNSPERF_ROUNDS rounds; the medians are compared.
// Two kinds of query through the resolver: a few names again and again (served from the
// shared cache) and a new name every time (each one goes upstream: the forwarding path).
//
// The load sandbox's limits are lifted: its policy's dns.qps/dns.burst, and the instance's
// dnsPacketsPerSecond (the kernel's per-sandbox meter of DNS packets, 1,000/s by default),
// so that this measures the resolver, not the limiters. BENCH_DNS_PROFILE=DIR starts the
// daemon under `node --cpu-prof` and leaves its profile in DIR.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ChildProcess } from 'node:child_process';
import { ToastnetClient } from '../src/api/client.js';
import { Testbed, WAN } from '../test/testbed/testbed.js';
import { waitFor } from '../test/helpers/wait.js';
import { DnsperfResult, dnsperf, queryFile, startDnsmasq, uniqueNames } from './dnsperf.js';

const LOAD = path.join(path.dirname(fileURLToPath(import.meta.url)), 'dns-load.js');
const SECONDS = Number(process.env.BENCH_SECONDS ?? 3);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 32);
const DNSPERF_SECONDS = Number(process.env.BENCH_DNSPERF_SECONDS ?? 4);
const DNSPERF_INFLIGHT = Number(process.env.BENCH_DNSPERF_INFLIGHT ?? 64);
const DNSPERF_ROUNDS = Number(process.env.BENCH_DNSPERF_ROUNDS ?? 2);
/** Which generators run: "node", "dnsperf" or both (comma-separated). */
const LOADS = (process.env.BENCH_DNS_LOADS ?? 'node,dnsperf').split(',');
/** The kernel's per-sandbox DNS meter for the bench (the configuration's maximum). */
const DNS_PACKETS_PER_SECOND = 1_000_000;
/** dnsmasq's address in the wan namespace (beside the upstream's). */
const DNSMASQ = '203.0.113.55';
/** Names the cache-hit rows ask, over and over. */
const HIT_NAMES = Array.from({ length: 16 }, (_, i) => `h${i}.load.test`);
/** Unique names per miss row: more than dnsperf sends in its seconds at any rate seen here. */
const MISS_NAMES = DNSPERF_SECONDS * 100_000;

interface Result { qps: number; p50: number; p99: number; timeouts: number }
interface Row { path: string; concurrency: number; r: Result }

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

/** The Node generator's rows (dns-load.ts), as before dnsperf was added. */
function nodeRows(tb: Testbed, I: string, gateway: string): void {
  const rows: Row[] = [];
  const direct = (name: string, conc: number): Result =>
    JSON.parse(tb.sh(tb.hostNs, [process.execPath, LOAD, WAN.dns, String(SECONDS), String(conc), name])) as Result;
  const via = (name: string, conc: number): Result => {
    const r = tb.inSandbox(I, 'load', [process.execPath, LOAD, gateway, String(SECONDS), String(conc), name], 60_000);
    if (r.code !== 0) throw new Error(r.stderr);
    return JSON.parse(r.stdout) as Result;
  };
  for (const conc of [CONCURRENCY, 1]) {
    rows.push({ path: 'host -> upstream directly', concurrency: conc, r: direct('q{n}.load.test', conc) });
    rows.push({ path: 'sandbox -> resolver (cache hit)', concurrency: conc, r: via('example.test', conc) });
    rows.push({ path: 'sandbox -> resolver -> upstream (miss)', concurrency: conc, r: via('q{n}.load.test', conc) });
  }
  const f = (x: number) => x.toFixed(3);
  const out = process.stdout;
  out.write(`Node load generator (dns-load.ts): ${SECONDS} s per row\n`);
  out.write(`${'path'.padEnd(40)} ${'in flight'.padStart(9)} ${'qps'.padStart(8)} ${'p50 ms'.padStart(8)} ${'p99 ms'.padStart(8)} timeouts\n`);
  for (const { path: p, concurrency, r } of rows) {
    out.write(`${p.padEnd(40)} ${String(concurrency).padStart(9)} ${String(r.qps).padStart(8)} ${f(r.p50).padStart(8)} ${f(r.p99).padStart(8)} ${r.timeouts}\n`);
  }
  const at = (p: string, conc: number) => rows.find((x) => x.path.startsWith(p) && x.concurrency === conc)!.r;
  const d1 = at('host', 1);
  for (const kind of ['cache hit', 'miss']) {
    const v1 = at(`sandbox -> resolver${kind === 'miss' ? ' -> upstream' : ' (cache hit)'}`, 1);
    const vN = at(`sandbox -> resolver${kind === 'miss' ? ' -> upstream' : ' (cache hit)'}`, CONCURRENCY);
    out.write(`${kind}: added latency one at a time p50 ${f(v1.p50 - d1.p50)} ms, p99 ${f(v1.p99 - d1.p99)} ms; `
      + `throughput ${vN.qps}/s = ${(vN.qps / at('host', CONCURRENCY).qps).toFixed(2)} x direct\n`);
  }
  jsonOut.node = { seconds: SECONDS, rows };
}

/** dnsperf rows: hits through toastnet against dnsmasq, misses through toastnet against the upstream directly. */
async function dnsperfRows(tb: Testbed, sandboxNs: string, gateway: string): Promise<void> {
  await startDnsmasq(tb, tb.wanNs, DNSMASQ, WAN.dns);
  const host = `/run/netns/${tb.hostNs}`;
  const hits = queryFile(tb.dir, 'hits.txt', HIT_NAMES);
  // Warm both caches: each of the names once.
  dnsperf(sandboxNs, gateway, hits, 5, 1, true);
  dnsperf(host, DNSMASQ, hits, 5, 1, true);
  const paths = {
    hitToastnet: 'sandbox -> toastnet (cache hit)',
    hitDnsmasq: 'host -> dnsmasq (cache hit)',
    missToastnet: 'sandbox -> toastnet -> upstream (miss)',
    missDirect: 'host -> upstream directly (miss)',
    missDnsmasq: 'host -> dnsmasq -> upstream (miss)',
  };
  const runs: Record<string, DnsperfResult[]> = Object.fromEntries(Object.values(paths).map((p) => [p, []]));
  let row = 0;
  const miss = (ns: string, server: string): DnsperfResult => {
    const file = queryFile(tb.dir, 'misses.txt', uniqueNames(`${tb.run.slice(2, 8)}r${row++}`, MISS_NAMES));
    try {
      return dnsperf(ns, server, file, DNSPERF_SECONDS, DNSPERF_INFLIGHT, true);
    } finally {
      fs.rmSync(file, { force: true });
    }
  };
  for (let round = 0; round < DNSPERF_ROUNDS; round++) {
    runs[paths.hitToastnet].push(dnsperf(sandboxNs, gateway, hits, DNSPERF_SECONDS, DNSPERF_INFLIGHT));
    runs[paths.hitDnsmasq].push(dnsperf(host, DNSMASQ, hits, DNSPERF_SECONDS, DNSPERF_INFLIGHT));
    runs[paths.missToastnet].push(miss(sandboxNs, gateway));
    runs[paths.missDirect].push(miss(host, WAN.dns));
    runs[paths.missDnsmasq].push(miss(host, DNSMASQ));
  }
  const out = process.stdout;
  out.write(`\ndnsperf: ${DNSPERF_INFLIGHT} queries outstanding (-q), one client socket, ${DNSPERF_SECONDS} s per row, ${DNSPERF_ROUNDS} round(s) of the rows in turn; `
    + `hits ask ${HIT_NAMES.length} names over and over (caches warmed first), misses a new name every query\n`);
  out.write(`the load sandbox: dns.qps/dns.burst 100,000 in its policy; the instance's dnsPacketsPerSecond raised to ${DNS_PACKETS_PER_SECOND.toLocaleString('en')} for this bench (default 1,000)\n`);
  out.write(`${'path'.padEnd(40)} ${'qps (median)'.padStart(12)}  per round (qps, lost, avg latency ms, response codes)\n`);
  const med: Record<string, number> = {};
  for (const p of Object.values(paths)) {
    med[p] = median(runs[p].map((r) => r.qps));
    const each = runs[p].map((r) => `${Math.round(r.qps)}, ${r.lost}, ${r.avgMs.toFixed(3)}, ${r.rcodes}`).join(' | ');
    out.write(`${p.padEnd(40)} ${String(Math.round(med[p])).padStart(12)}  ${each}\n`);
  }
  const ratio = (a: string, b: string) => (med[a] / med[b]).toFixed(2);
  out.write(`cache hit: toastnet ${Math.round(med[paths.hitToastnet])}/s = ${ratio(paths.hitToastnet, paths.hitDnsmasq)} x dnsmasq (target >= 0.5)\n`);
  out.write(`miss: toastnet ${Math.round(med[paths.missToastnet])}/s = ${ratio(paths.missToastnet, paths.missDirect)} x direct (target >= 0.5); `
    + `dnsmasq ${Math.round(med[paths.missDnsmasq])}/s = ${ratio(paths.missDnsmasq, paths.missDirect)} x direct\n`);
  jsonOut.dnsperf = { seconds: DNSPERF_SECONDS, inFlight: DNSPERF_INFLIGHT, rounds: DNSPERF_ROUNDS, medians: med, runs };
}

const jsonOut: Record<string, unknown> = {};

async function main(): Promise<void> {
  const tb = await Testbed.create({ hostService: false });
  const I = `bd${tb.run.slice(2, 8)}`;
  const config = path.join(tb.dir, 'config.json');
  fs.writeFileSync(config, JSON.stringify({ dnsPacketsPerSecond: DNS_PACKETS_PER_SECOND }));
  const flags = ['--config', config];
  const profile = process.env.BENCH_DNS_PROFILE ? ['--cpu-prof', `--cpu-prof-dir=${path.resolve(process.env.BENCH_DNS_PROFILE)}`] : [];
  let daemon: ChildProcess | undefined;
  const cl = new ToastnetClient(tb.socketPath(I));
  try {
    daemon = tb.startDaemon(I, flags, profile);
    await waitFor(() => cl.ping(), 'the daemon');
    const sb = await cl.create({ name: 'load', policy: { egress: { domains: ['example.test', '*.load.test'] }, dns: { qps: 100000, burst: 100000 } } });
    const sandboxNs = sb.netns.startsWith('/') ? sb.netns : `/run/netns/${sb.netns}`;
    process.stdout.write(`toastnet DNS bench: the sandbox has a domain allow-list; load as below\n`);
    if (LOADS.includes('node')) nodeRows(tb, I, sb.gateway);
    if (LOADS.includes('dnsperf')) await dnsperfRows(tb, sandboxNs, sb.gateway);
    if (process.env.BENCH_JSON) fs.writeFileSync(process.env.BENCH_JSON, JSON.stringify(jsonOut, null, 2));
  } finally {
    cl.close();
    // `down` ends the daemon cleanly (its CPU profile is written then).
    const exited = daemon && daemon.exitCode === null ? new Promise((r) => daemon!.once('exit', r)) : undefined;
    tb.toastnet(I, ['down'], { extraFlags: flags });
    if (exited) await Promise.race([exited, new Promise((r) => setTimeout(r, 10_000))]);
    await tb.destroy();
  }
}

main().catch((err) => {
  process.stderr.write(`bench:dns: ${(err as Error).message}\n`);
  process.exit(1);
});
