// `npm run bench:hostile`: what one hostile sandbox costs the others, in one throwaway
// topology (test/testbed), with the targets of the reliability issue beside each figure:
//   - a neighbour's DNS round trips (p50, p99) while another sandbox fuzzes the resolver
//     with random, truncated, corrupted and oversized messages and lying TCP streams
//     (test/integration/helpers/dns-fuzz.ts), against the same neighbour on a quiet resolver:
//     target p99 added < 2 ms;
//   - create+rm of sandboxes through the daemon's API (what an orchestrator sees) while a
//     sandbox floods the resolver, a closed host port and a TCP port (bench/flood.ts),
//     against the same quietly: target p50 within 20 %.
// Figures on a machine shared with other work measure the machine; run it alone.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ToastnetClient } from '../src/api/client.js';
import { Testbed } from '../test/testbed/testbed.js';
import { waitFor } from '../test/helpers/wait.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const DNS_FUZZ = path.resolve(here, '../test/integration/helpers/dns-fuzz.js');
const DNS_LATENCY = path.resolve(here, '../test/integration/helpers/dns-latency.js');
const FLOOD = path.join(here, 'flood.js');
const QUERIES = Number(process.env.BENCH_QUERIES ?? 2000);
const CREATES = Number(process.env.BENCH_CREATES ?? 100);

const pct = (xs: number[], q: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * q))];
const ms = (x: number) => `${x.toFixed(2)} ms`;

async function main(): Promise<void> {
  const tb = await Testbed.create();
  const I = `bh${Date.now().toString(36)}`;
  try {
    if (tb.toastnet(I, ['up']).code !== 0) throw new Error('up failed');
    tb.startDaemon(I);
    const cl = new ToastnetClient(tb.socketPath(I));
    await waitFor(() => cl.ping(), 'the daemon');
    for (const n of ['hostile', 'neighbour']) await cl.create({ name: n, policy: n === 'neighbour' ? { dns: { qps: 100000, burst: 100000 } } : {} });
    const gateway = (await cl.get('neighbour')).gateway;

    const probe = async () => {
      // 500 a second: under the kernel's per-sandbox DNS ceiling (dnsPacketsPerSecond, 1,000),
      // which a query loop without pause exceeds and then meets as lost queries.
      const r = await tb.toastnetAsync(I, ['exec', 'neighbour', '--', process.execPath, DNS_LATENCY, gateway, 'example.test', String(QUERIES), '500'], 600_000);
      const rtts = JSON.parse(r.stdout).rtts as (number | null)[];
      const ok = rtts.filter((x): x is number => x !== null);
      return { lost: rtts.length - ok.length, p50: pct(ok, 0.5), p99: pct(ok, 0.99) };
    };
    const quietDns = await probe();
    const [fuzz, fuzzedDns] = await Promise.all([
      tb.toastnetAsync(I, ['exec', 'hostile', '--', process.execPath, DNS_FUZZ, gateway, '2026', '40000', '80'], 600_000),
      probe(),
    ]);

    const cycles = async () => {
      const t: number[] = [];
      for (let i = 0; i < CREATES; i++) {
        const t0 = performance.now();
        await cl.create({ name: `c${i}` });
        t.push(performance.now() - t0);
        await cl.remove(`c${i}`);
      }
      return { p50: pct(t, 0.5), p95: pct(t, 0.95) };
    };
    await cycles(); // warm-up: the daemon's first creates pay for JIT and caches
    const quietCreate = await cycles();
    const flood = tb.toastnetAsync(I, ['exec', 'hostile', '--', process.execPath, FLOOD, gateway, '600'], 700_000);
    await new Promise((r) => setTimeout(r, 1000));
    const floodedCreate = await cycles();
    tb.toastnet(I, ['exec', 'hostile', '--', 'pkill', '-f', FLOOD]);
    await flood;

    const fuzzed = JSON.parse(fuzz.stdout) as { udpSent: number; tcpConnections: number };
    console.log(`\nA hostile sandbox and its neighbours (${QUERIES} neighbour queries, ${CREATES} creates each way)\n`);
    console.log('| | quiet | hostile sandbox at work | added | target |');
    console.log('|---|---|---|---|---|');
    console.log(`| neighbour DNS p50 | ${ms(quietDns.p50)} | ${ms(fuzzedDns.p50)} | ${ms(fuzzedDns.p50 - quietDns.p50)} | |`);
    console.log(`| neighbour DNS p99 | ${ms(quietDns.p99)} | ${ms(fuzzedDns.p99)} | ${ms(fuzzedDns.p99 - quietDns.p99)} | < 2 ms added |`);
    console.log(`| neighbour queries lost | ${quietDns.lost} | ${fuzzedDns.lost} | | 0 |`);
    console.log(`| create p50 (API) | ${ms(quietCreate.p50)} | ${ms(floodedCreate.p50)} | ${((floodedCreate.p50 / quietCreate.p50 - 1) * 100).toFixed(0)} % | within 20 % |`);
    console.log(`| create p95 (API) | ${ms(quietCreate.p95)} | ${ms(floodedCreate.p95)} | ${((floodedCreate.p95 / quietCreate.p95 - 1) * 100).toFixed(0)} % | |`);
    console.log(`\nfuzz: ${fuzzed.udpSent} UDP messages and ${fuzzed.tcpConnections} TCP streams; flood: UDP to the resolver and a closed port, TCP SYNs, for the whole of the flooded creates`);
  } finally {
    tb.toastnet(I, ['down']);
    await tb.destroy();
  }
}

await main();
