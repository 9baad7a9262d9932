// Run inside a testbed's host namespace (nsenter --net) by faults.test.ts: a table rebuild
// (`up`) interrupted after the counts were written ahead and after the kernel was rebuilt,
// each followed by what a restart does (the engine closed without finishing, opened again).
// Prints, as JSON, what stats showed a sandbox had sent before each crash and after the restart.
// Arguments: instance, state dir, run dir, DNS.
import { spawnSync } from 'node:child_process';
import { resolve as resolveConfig } from '../../../src/config/load.js';
import { ConfigSchema } from '../../../src/config/schema.js';
import { Engine } from '../../../src/service/engine.js';
import { InjectedFault, injectFault } from '../../../src/undo.js';

const [instance, stateDir, runDir, dns] = process.argv.slice(2);
const config = resolveConfig(ConfigSchema.parse({ instance, stateDir, runDir, dnsUpstreams: [dns] }), []);
let engine = await Engine.open(config);
const sent = () => engine.stats('talker')[0].sent.packets;
const talk = (netns: string, gateway: string) => spawnSync('ip', ['netns', 'exec', netns, 'dig', '+tries=1', '+time=1', `@${gateway}`, 'example.test']);

const out: Record<string, unknown> = {};
try {
  engine.up();
  const s = engine.create({ name: 'talker' });
  const netns = s.netns.split('/').pop()!;
  talk(netns, s.gateway);
  for (const point of ['rebuild:written-ahead', 'rebuild:applied']) {
    talk(netns, s.gateway);
    const before = sent();
    injectFault(point);
    let injected = false;
    try {
      engine.up();
    } catch (err) {
      injected = err instanceof InjectedFault;
    } finally {
      injectFault(undefined);
    }
    engine.close(); // the process ends here, as a crash would leave it
    engine = await Engine.open(config);
    out[point] = { injected, before, after: sent() };
  }
  engine.remove('talker');
  await engine.settled();
} catch (err) {
  out.crash = (err as Error).stack;
} finally {
  engine.close();
}
process.stdout.write(JSON.stringify(out));
