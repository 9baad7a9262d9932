// Run inside a testbed's host namespace (nsenter --net) by faults.test.ts: injects a failure
// at every fault point of create, pool acquisition and removal on an in-process engine, and
// prints, as JSON, the error each operation gave and what the instance held before and after.
// Arguments: instance, state dir, run dir, DNS.
import fs from 'node:fs';
import path from 'node:path';
import { resolve as resolveConfig } from '../../../src/config/load.js';
import { ConfigSchema } from '../../../src/config/schema.js';
import { Engine } from '../../../src/service/engine.js';
import { RtnetlinkSocket } from '../../../src/kernel/rtnetlink.js';
import { NETNS_ETC_DIR } from '../../../src/kernel/netns-etc.js';
import { Nft } from '../../../src/kernel/nft.js';
import { listNetns } from '../../../src/kernel/netns.js';
import { parseLink } from '../../../src/kernel/rtnetlink-codec.js';
import * as rq from '../../../src/kernel/rtnl-requests.js';
import { getLinkOrUndefined } from '../../../src/kernel/host-net.js';
import { readClasses } from '../../../src/kernel/shaper.js';
import { InjectedFault, injectFault, undoFailuresOf } from '../../../src/undo.js';

const [instance, stateDir, runDir, dns] = process.argv.slice(2);
const config = resolveConfig(ConfigSchema.parse({ instance, stateDir, runDir, dnsUpstreams: [dns] }), []);
const engine = await Engine.open(config);
const rtnl = new RtnetlinkSocket();
const nft = new Nft();

/** Everything of the instance that a leak would show in: rows, addresses, namespaces, links, /etc/netns, set elements. */
function snapshot() {
  const st = engine.status();
  const table = nft.listTable('inet', instance) ?? [];
  const elements: string[] = [];
  for (const item of table) {
    const set = (item.set ?? item.map) as { name: string; elem?: unknown[] } | undefined;
    if (set?.elem && set.name !== 'dns_allowed') elements.push(`${set.name}:${JSON.stringify(set.elem)}`);
  }
  return {
    rows: engine.store.list().map((r) => `${r.name}@${r.ip}:${r.state}`).sort(),
    used: st.addresses.used,
    namespaces: listNetns().filter((n) => n.startsWith(`${instance}-`)).sort(),
    links: rtnl.dump(rq.dumpLinks()).map(parseLink).map((l) => l.name).filter((n) => n.startsWith(engine.names.sandboxLinkPrefix)).sort(),
    etc: fs.readdirSync(NETNS_ETC_DIR).filter((d) => d.startsWith(`${instance}-`)).sort(),
    elements: elements.sort(),
    // Bandwidth classes on the shared shaping devices (a limited sandbox's are there).
    classes: [engine.names.shaperLink, engine.names.gatewayLink, engine.names.macvlanParent].flatMap((name) => {
      const l = getLinkOrUndefined(rtnl, name);
      return l ? [...readClasses(rtnl, l.index).keys()].map((minor) => `${name}:${minor}`) : [];
    }).sort(),
  };
}

/** Waits for removals to finish: processes reaped, addresses back, and the kernel done reaping the links of destroyed namespaces. */
async function quiet(): Promise<void> {
  await engine.settled();
  const hostLinkRows = () => engine.store.list().filter((r) => r.mode !== 'macvlan').length; // veth and tap have a host link
  for (let i = 0; i < 150 && snapshot().links.length > hostLinkRows(); i++) await new Promise((r) => setTimeout(r, 20));
}

function attempt(point: string, op: () => unknown): { error?: string; injected: boolean; undoFailures: number } {
  injectFault(point);
  try {
    op();
    return { injected: false, undoFailures: 0 };
  } catch (err) {
    return { error: (err as Error).message, injected: err instanceof InjectedFault, undoFailures: undoFailuresOf(err).length };
  } finally {
    injectFault(undefined);
  }
}

const out: Record<string, unknown> = {};
try {
  engine.up();
  engine.create({ name: 'keep' }); // a bystander that must come through every failure untouched
  await quiet();
  for (const mode of ['veth', 'macvlan', 'tap'] as const) {
    for (const point of ['create:leased', 'create:network', 'create:etc', 'create:admitted']) {
      const before = snapshot();
      const r = attempt(point, () => engine.create({ name: 'victim', mode, policy: { limits: { egressRate: '10mbit' }, group: 'g' } }));
      await quiet();
      out[`${mode} ${point}`] = { ...r, before, after: snapshot() };
    }
  }
  // A failed create leaves its address first in line: the next create gets it and works.
  out.afterFailures = engine.create({ name: 'next' }).ip;
  engine.remove('next');
  await quiet();

  for (const point of ['acquire:renamed', 'acquire:aliased', 'acquire:etc', 'acquire:admitted']) {
    engine.createPoolMember();
    await quiet();
    const before = snapshot();
    let got: unknown;
    const r = attempt(point, () => {
      got = engine.acquire({ name: 'victim' });
    });
    await quiet();
    // acquire never throws for its own steps: it drops the member and answers undefined (the
    // caller then makes a network on the spot). Nothing of "victim" may remain.
    out[point] = { ...r, returned: got === undefined ? 'undefined' : 'a sandbox', before, after: snapshot() };
  }

  for (const point of ['remove:opened', 'remove:elements']) {
    engine.create({ name: 'victim', policy: { limits: { maxConnections: 10 } } });
    await quiet();
    const before = snapshot();
    const r = attempt(point, () => engine.remove('victim'));
    await quiet();
    const failed = snapshot();
    engine.remove('victim'); // a failed rm is finished by another
    await quiet();
    out[point] = { ...r, before, failed, retried: snapshot() };
  }
  out.final = snapshot();
} catch (err) {
  out.crash = (err as Error).stack;
} finally {
  await engine.down();
  engine.close();
  nft.free();
  rtnl.close();
}
process.stdout.write(JSON.stringify(out));
