// `npm run bench:dns`: queries per second and latency through toastnet's resolver (policy
// on: the sandbox has a domain allow-list, so each answer is parsed, checked and its
// addresses admitted in the kernel) against the same load sent straight to the upstream,
// in one run, in the testbed's namespaces. Same server, same name, same concurrency.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Testbed, WAN } from '../test/testbed/testbed.js';

const LOAD = path.join(path.dirname(fileURLToPath(import.meta.url)), 'dns-load.js');
const SECONDS = Number(process.env.BENCH_SECONDS ?? 4);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 32);

interface Result { qps: number; p50: number; p99: number; timeouts: number }

async function main(): Promise<void> {
  const tb = await Testbed.create({ hostService: false });
  const I = `bd${tb.run.slice(2, 8)}`;
  try {
    // The load sandbox's query limits are lifted: this measures the resolver, not the limiter.
    const policy = path.join(tb.dir, 'load.json');
    fs.writeFileSync(policy, JSON.stringify({ egress: { domains: ['example.test'] }, dns: { qps: 100000, burst: 100000 } }));
    const c = tb.toastnet(I, ['create', 'load', '--policy', policy]);
    if (c.code !== 0) throw new Error(c.stderr);
    const direct = JSON.parse(tb.sh(tb.hostNs, [process.execPath, LOAD, WAN.dns, String(SECONDS), String(CONCURRENCY), 'example.test'])) as Result;
    const r = tb.inSandbox(I, 'load', [process.execPath, LOAD, '10.166.0.1', String(SECONDS), String(CONCURRENCY), 'example.test'], 60_000);
    if (r.code !== 0) throw new Error(r.stderr);
    const via = JSON.parse(r.stdout) as Result;
    const f = (x: number) => x.toFixed(3);
    process.stdout.write(`toastnet DNS bench: ${SECONDS} s, ${CONCURRENCY} queries in flight, name with a domain allow-list\n`);
    process.stdout.write(`${'path'.padEnd(44)} ${'qps'.padStart(8)} ${'p50 ms'.padStart(8)} ${'p99 ms'.padStart(8)} timeouts\n`);
    process.stdout.write(`${'sandbox -> toastnet resolver -> upstream'.padEnd(44)} ${String(via.qps).padStart(8)} ${f(via.p50).padStart(8)} ${f(via.p99).padStart(8)} ${via.timeouts}\n`);
    process.stdout.write(`${'host -> upstream directly'.padEnd(44)} ${String(direct.qps).padStart(8)} ${f(direct.p50).padStart(8)} ${f(direct.p99).padStart(8)} ${direct.timeouts}\n`);
    process.stdout.write(`added latency: p50 ${f(via.p50 - direct.p50)} ms, p99 ${f(via.p99 - direct.p99)} ms; throughput ratio ${(via.qps / direct.qps).toFixed(2)}\n`);
  } finally {
    tb.toastnet(I, ['down']);
    await tb.destroy();
  }
}

main().catch((err) => {
  process.stderr.write(`bench:dns: ${(err as Error).message}\n`);
  process.exit(1);
});
