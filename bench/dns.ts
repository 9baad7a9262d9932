// `npm run bench:dns`: queries per second and latency through toastnet's resolver with
// policy on (the sandbox has a domain allow-list, so every answer is checked and its
// addresses admitted in the kernel) against the same load sent straight to the upstream,
// in one run, in the testbed's namespaces.
//
// Two loads per path: saturating (BENCH_CONCURRENCY queries in flight: throughput) and one
// query at a time (latency a query adds, without queueing behind others). Two kinds of
// query through the resolver: one name again and again (served from the shared cache) and
// a new name every time (each one goes upstream: the forwarding path).
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Testbed, WAN } from '../test/testbed/testbed.js';

const LOAD = path.join(path.dirname(fileURLToPath(import.meta.url)), 'dns-load.js');
const SECONDS = Number(process.env.BENCH_SECONDS ?? 3);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 32);

interface Result { qps: number; p50: number; p99: number; timeouts: number }
interface Row { path: string; concurrency: number; r: Result }

async function main(): Promise<void> {
  const tb = await Testbed.create({ hostService: false });
  const I = `bd${tb.run.slice(2, 8)}`;
  const rows: Row[] = [];
  try {
    // The load sandbox's query limits are lifted: this measures the resolver, not the limiter.
    const policy = path.join(tb.dir, 'load.json');
    fs.writeFileSync(policy, JSON.stringify({ egress: { domains: ['example.test', '*.load.test'] }, dns: { qps: 100000, burst: 100000 } }));
    const c = tb.toastnet(I, ['create', 'load', '--policy', policy]);
    if (c.code !== 0) throw new Error(c.stderr);
    const direct = (name: string, conc: number): Result =>
      JSON.parse(tb.sh(tb.hostNs, [process.execPath, LOAD, WAN.dns, String(SECONDS), String(conc), name])) as Result;
    const via = (name: string, conc: number): Result => {
      const r = tb.inSandbox(I, 'load', [process.execPath, LOAD, '10.166.0.1', String(SECONDS), String(conc), name], 60_000);
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
    out.write(`toastnet DNS bench: ${SECONDS} s per row; the sandbox has a domain allow-list\n`);
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
    if (process.env.BENCH_JSON) fs.writeFileSync(process.env.BENCH_JSON, JSON.stringify({ seconds: SECONDS, rows }, null, 2));
  } finally {
    tb.toastnet(I, ['down']);
    await tb.destroy();
  }
}

main().catch((err) => {
  process.stderr.write(`bench:dns: ${(err as Error).message}\n`);
  process.exit(1);
});
