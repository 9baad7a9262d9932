// `npm run soak`: crash consistency at length. 1,000 SIGKILLs of the daemon at random
// moments of a stream of mixed operations (test/integration/helpers/crash-soak.ts), each
// followed by a restart, a gc and an audit of the instance against its store. Prints what
// was done and every problem found; exits non-zero on any.
import { Testbed } from '../test/testbed/testbed.js';
import { crashSoak } from '../test/integration/helpers/crash-soak.js';

const ROUNDS = Number(process.env.SOAK_ROUNDS ?? 1000);
const tb = await Testbed.create({ hostService: false });
const I = `soak${Date.now().toString(36)}`;
let failed = false;
try {
  if (tb.toastnet(I, ['up']).code !== 0) throw new Error('up failed');
  const t0 = performance.now();
  const r = await crashSoak(tb, I, {
    rounds: ROUNDS,
    seed: Number(process.env.SOAK_SEED ?? Date.now() % 100000),
    log: (line) => (line.match(/^round (\d+)/)?.[1] ?? '0').endsWith('00') && console.log(line),
  });
  const sorted = [...r.restartMs].sort((a, b) => a - b);
  console.log(`\n${r.rounds} kills in ${((performance.now() - t0) / 60000).toFixed(1)} min`);
  console.log(`operations: ${r.operations.sent} sent, ${r.operations.reported} answered, ${r.operations.lostInCrash} cut by a kill`);
  console.log(`sandboxes reported created and absent after the restart: ${r.createdThenAbsent}`);
  console.log(`daemon start to first answer: p50 ${sorted[Math.floor(sorted.length / 2)].toFixed(0)} ms, p95 ${sorted[Math.floor(sorted.length * 0.95)].toFixed(0)} ms`);
  console.log(`problems: ${r.problems.length}`);
  for (const p of r.problems) console.log(`  ${p}`);
  failed = r.problems.length > 0;
} finally {
  tb.toastnet(I, ['down']);
  await tb.destroy();
}
process.exit(failed ? 1 : 0);
