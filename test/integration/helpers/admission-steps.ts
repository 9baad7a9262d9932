// Run inside a testbed's host namespace (nsenter --net) by dns-isolation.test.ts: on an
// in-process engine, the admission of an answer for a sandbox that was removed while its
// query was upstream, after a new sandbox got its name and address; then (the control)
// the same admission for the new sandbox itself. Prints the dns_allowed set after each as
// JSON. Arguments: instance, state dir, run dir, DNS.
import { execFileSync } from 'node:child_process';
import { resolve as resolveConfig } from '../../../src/config/load.js';
import { ConfigSchema } from '../../../src/config/schema.js';
import { Engine } from '../../../src/service/engine.js';

const [instance, stateDir, runDir, dns] = process.argv.slice(2);
// A /29 of five addresses, four held by fillers: the fifth passes from sandbox to sandbox.
const config = resolveConfig(ConfigSchema.parse({ instance, stateDir, runDir, dnsUpstreams: [dns], subnet: '10.168.0.0/29' }), []);
const engine = await Engine.open(config);
const dnsAllowed = () => execFileSync('nft', ['list', 'set', 'inet', instance, 'dns_allowed'], { encoding: 'utf8' });
const policy = { egress: { domains: ['*.slow.test'] } };

const out: Record<string, unknown> = {};
try {
  engine.up();
  for (let i = 1; i <= 4; i++) engine.create({ name: `fill${i}` });
  const asker = engine.sandboxByIp(engine.create({ name: 'asker', policy }).ip)!;
  engine.remove('asker');
  await engine.settled(); // its address is free again
  const heir = engine.sandboxByIp(engine.create({ name: 'asker', policy }).ip)!;
  out.reused = { name: heir.name === asker.name, ip: heir.ip === asker.ip, id: heir.id === asker.id };
  engine.admitResolved(asker, ['203.0.113.20'], 60);
  out.forRemoved = dnsAllowed();
  engine.admitResolved(heir, ['203.0.113.20'], 60);
  out.forItself = dnsAllowed();
  out.ip = heir.ip;
} finally {
  await engine.down().catch((err) => { out.downError = String(err); });
  engine.close();
}
process.stdout.write(`${JSON.stringify(out)}\n`);
