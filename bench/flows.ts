// `npm run bench:flows`: how many flows per second the flow log records without loss
// (issue 18: 10,000 a second on these VMs), in one throwaway topology (test/testbed).
//
// Several sandboxes each send one UDP datagram to each port of the testbed's internet host
// in turn (flow-gen.ts): every datagram is a new conntrack entry in the host namespace,
// where the daemon reads the kernel's events. UDP timeouts are shortened to 1 s in the
// testbed's host namespace (a test namespace), so each flow's destroy event follows within
// a few seconds and a level's flows give two events each, as short connections do. At each
// rate, for a few seconds:
//   created   new flows leaving the host namespace (a counter on `ct state new` in a table
//             of the bench's own there, at postrouting before NAT: each flow's first packet),
//   recorded  records the daemon wrote (an open and a closed one per flow: 2 x created
//             when nothing is lost),
//   kernel    events the kernel dropped, its event socket's buffer full (the socket's drop
//             count), and unwritten: events whose database write failed.
// Loss starts at the first rate where recorded < 2 x created or either drop count moves;
// the two drop counts add up to what is missing (the log never loses silently).
// Each level lasts BENCH_SECONDS (default 30): long enough that the socket's 128 MiB buffer
// (~100,000 events) cannot hide a reader slower than the rate.
// The instance's ceiling of new connections per sandbox (newConnsPerSecond, 1,000/s by
// default) is raised out of the way, and the bench says so: it measures the flow log, and a
// few sandboxes at 10,000 flows/s would otherwise measure the ceiling.
// Figures on a machine shared with other work measure the machine; run it alone.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ToastnetClient } from '../src/api/client.js';
import type { FlowCounts } from '../src/api/types.js';
import { Testbed, WAN } from '../test/testbed/testbed.js';
import { waitFor, sleep } from '../test/helpers/wait.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const GEN = path.join(here, 'flow-gen.js');
const SANDBOXES = Number(process.env.BENCH_SANDBOXES ?? 4);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 30);
const RATES = (process.env.BENCH_RATES ?? '5000,10000,20000,30000,40000').split(',').map(Number);

const COUNT_TABLE = 'flowbench';
/** The instance's newConnsPerSecond for this bench (default 1,000 per sandbox). */
const CONN_CEILING = 1_000_000;

/** The host namespace's conntrack: entries now, drops (sums over CPUs), and new flows counted by the bench's table. */
function ctStats(tb: Testbed): { entries: number; insert: number; drop: number } {
  const lines = tb.sh(tb.hostNs, ['cat', '/proc/net/stat/nf_conntrack']).trim().split('\n');
  const head = lines[0].trim().split(/\s+/);
  const rows = lines.slice(1).map((l) => l.trim().split(/\s+/).map((h) => parseInt(h, 16)));
  const col = (name: string) => rows.reduce((n, r) => n + r[head.indexOf(name)], 0);
  const nft = JSON.parse(tb.sh(tb.hostNs, ['nft', '-j', 'list', 'table', 'ip', COUNT_TABLE])) as { nftables: { rule?: { expr: { counter?: { packets: number } }[] } }[] };
  const insert = nft.nftables.flatMap((o) => o.rule?.expr ?? []).find((e) => e.counter)?.counter?.packets ?? 0;
  return { entries: rows[0][head.indexOf('entries')], insert, drop: col('drop') + col('early_drop') + col('insert_failed') };
}

async function main(): Promise<void> {
  const tb = await Testbed.create({ hostService: false });
  const I = `bf${Date.now().toString(36)}`;
  try {
    const config = path.join(tb.dir, 'config.json');
    fs.writeFileSync(config, JSON.stringify({ newConnsPerSecond: CONN_CEILING }));
    const flags = ['--config', config];
    if (tb.toastnet(I, ['up', ...flags]).code !== 0) throw new Error('up failed');
    for (const k of ['nf_conntrack_udp_timeout', 'nf_conntrack_udp_timeout_stream']) tb.sh(tb.hostNs, ['sysctl', '-qw', `net.netfilter.${k}=1`]);
    const subnet = (JSON.parse(tb.toastnet(I, ['status', '--json']).stdout) as { subnet: string }).subnet;
    tb.sh(tb.hostNs, ['nft', 'add', 'table', 'ip', COUNT_TABLE]);
    tb.sh(tb.hostNs, ['nft', 'add', 'chain', 'ip', COUNT_TABLE, 'new', '{ type filter hook postrouting priority 0; }']);
    tb.sh(tb.hostNs, ['nft', 'add', 'rule', 'ip', COUNT_TABLE, 'new', 'ip', 'saddr', subnet, 'ct', 'state', 'new', 'counter']);
    tb.startDaemon(I, flags);
    const cl = new ToastnetClient(tb.socketPath(I));
    await waitFor(() => cl.ping(), 'the daemon');
    const names = Array.from({ length: SANDBOXES }, (_, i) => `gen${i}`);
    for (const n of names) await cl.create({ name: n });
    const counts = async (): Promise<FlowCounts> => (await cl.flows({ limit: 1 })).counts!;

    console.log(`flow log: ${SANDBOXES} sandboxes, ${SECONDS} s per rate, UDP flows to ${WAN.internet} (one datagram each); the instance's newConnsPerSecond raised to ${CONN_CEILING.toLocaleString('en')} for this bench (default 1,000 per sandbox)`);
    console.log('target/s  sent/s  created/s  recorded/s  records/2xcreated  kernel drops  unwritten  conntrack drops');
    let lossAt: number | undefined;
    let lastClean: number | undefined;
    for (const rate of RATES) {
      const c0 = await counts();
      const k0 = ctStats(tb);
      const t0 = performance.now();
      const gens = await Promise.all(names.map((n) => tb.toastnetAsync(I, ['exec', n, '--', process.execPath, GEN, WAN.internet, String(rate / SANDBOXES), String(SECONDS)], 120_000)));
      const sent = gens.reduce((s, g) => {
        if (g.code !== 0) throw new Error(`generator: ${g.stderr}`);
        return s + (JSON.parse(g.stdout) as { sent: number }).sent;
      }, 0);
      // Until the level's flows are gone from conntrack and their records written.
      let last = -1;
      await waitFor(async () => {
        const r = (await counts()).recorded;
        const settled = ctStats(tb).entries <= k0.entries + 5 && r === last;
        last = r;
        return settled;
      }, 'the level\'s flows to close and be recorded', 120_000, 1000);
      const elapsed = (performance.now() - t0) / 1000;
      const c1 = await counts();
      const k1 = ctStats(tb);
      const created = k1.insert - k0.insert;
      const recorded = c1.recorded - c0.recorded;
      const overflows = c1.dropped.kernel - c0.dropped.kernel; // events
      const shed = c1.dropped.daemon - c0.dropped.daemon;
      const lost = recorded < 2 * created || overflows > 0 || shed > 0;
      if (lost && lossAt === undefined) lossAt = rate;
      if (!lost && lossAt === undefined) lastClean = rate;
      console.log([
        String(rate).padStart(8), String(Math.round(sent / SECONDS)).padStart(7), String(Math.round(created / SECONDS)).padStart(10),
        String(Math.round(recorded / SECONDS)).padStart(11), (recorded / (2 * created)).toFixed(4).padStart(18),
        String(overflows).padStart(13), String(shed).padStart(10), String(k1.drop - k0.drop).padStart(16),
        `  (level took ${elapsed.toFixed(1)} s to settle)`,
      ].join(' '));
      await sleep(500); // between levels: a quiet gap, so one level's stragglers are not the next's
    }
    console.log(lossAt === undefined
      ? `no loss up to ${RATES.at(-1)} flows/s (target 10,000)`
      : `loss starts at ${lossAt} flows/s; none at ${lastClean ?? 'any measured rate'} (target 10,000)`);
    tb.toastnet(I, ['down']);
  } finally {
    await tb.destroy();
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
