// Run inside a testbed's host namespace (nsenter --net) by cni-faults.test.ts: injects a
// failure at every fault point of attaching a runtime's namespace (veth and macvlan) on an
// in-process engine, then attaches and removes for real; prints as JSON the error each
// attempt gave and what the instance and the runtime's namespace held before and after.
// Arguments: instance, state dir, run dir, DNS, the runtime's namespace (a path).
import fs from 'node:fs';
import { resolve as resolveConfig } from '../../../src/config/load.js';
import { ConfigSchema } from '../../../src/config/schema.js';
import { Engine } from '../../../src/service/engine.js';
import { RtnetlinkSocket } from '../../../src/kernel/rtnetlink.js';
import { Nft } from '../../../src/kernel/nft.js';
import { withNetns } from '../../../src/kernel/netns.js';
import { parseLink } from '../../../src/kernel/rtnetlink-codec.js';
import * as rq from '../../../src/kernel/rtnl-requests.js';
import { InjectedFault, injectFault, undoFailuresOf } from '../../../src/undo.js';

const [instance, stateDir, runDir, dns, runtimeNs] = process.argv.slice(2);
const config = resolveConfig(ConfigSchema.parse({ instance, stateDir, runDir, dnsUpstreams: [dns] }), []);
const engine = await Engine.open(config);
const rtnl = new RtnetlinkSocket();
const nft = new Nft();

function linksIn(path: string): string[] {
  const sock = withNetns(path, () => new RtnetlinkSocket());
  try {
    return sock.dump(rq.dumpLinks()).map(parseLink).map((l) => `${l.name}${l.up ? ':up' : ''}`).sort();
  } finally {
    sock.close();
  }
}

function snapshot() {
  const table = nft.listTable('inet', instance) ?? [];
  const elements: string[] = [];
  for (const item of table) {
    const set = (item.set ?? item.map) as { name: string; elem?: unknown[] } | undefined;
    if (set?.elem && set.name !== 'dns_allowed') elements.push(`${set.name}:${JSON.stringify(set.elem)}`);
  }
  return {
    rows: engine.store.list().map((r) => `${r.name}@${r.ip}:${r.state}:${r.attachment ? 'attached' : ''}`).sort(),
    used: engine.status().addresses.used,
    hostLinks: rtnl.dump(rq.dumpLinks()).map(parseLink).map((l) => l.name).filter((n) => n.startsWith(engine.names.sandboxLinkPrefix)).sort(),
    runtimeLinks: linksIn(runtimeNs),
    elements: elements.sort(),
  };
}

const attachment = { network: 'n', containerId: 'c1', ifname: 'eth0', netns: runtimeNs, cniVersion: '1.0.0' };
const out: Record<string, unknown> = {};
try {
  engine.up();
  engine.create({ name: 'keep' });
  await engine.settled();
  for (const mode of ['veth', 'macvlan'] as const) {
    for (const point of ['attach:leased', 'attach:network', 'attach:admitted']) {
      const before = snapshot();
      injectFault(point);
      let r: Record<string, unknown>;
      try {
        engine.attach('cni-victim', mode, { limits: { egressRate: '10mbit' } }, attachment);
        r = { injected: false };
      } catch (err) {
        r = { error: (err as Error).message, injected: err instanceof InjectedFault, undoFailures: undoFailuresOf(err).length };
      } finally {
        injectFault(undefined);
      }
      await engine.settled();
      out[`${mode} ${point}`] = { ...r, before, after: snapshot() };
    }
    // For real: attached, then removed (the link only; the namespace stays the runtime's).
    const before = snapshot();
    engine.attach('cni-real', mode, {}, attachment);
    const attached = snapshot();
    engine.remove('cni-real');
    await engine.settled();
    out[`${mode} real`] = { before, attached, after: snapshot(), nsKept: fs.existsSync(runtimeNs) };
  }
} catch (err) {
  out.crash = (err as Error).stack;
} finally {
  process.stdout.write(`${JSON.stringify(out)}\n`);
  engine.close();
}
