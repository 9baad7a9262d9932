// Run inside a testbed's host namespace (nsenter --net) by pool-member.test.ts: drives a
// pool member's two halves on an in-process engine, as the daemon's builder thread does,
// and prints what it saw at each step as JSON. Arguments: instance, state dir, run dir, DNS.
import fs from 'node:fs';
import path from 'node:path';
import { resolve as resolveConfig } from '../../../src/config/load.js';
import { ConfigSchema } from '../../../src/config/schema.js';
import { Engine, type PoolReservation } from '../../../src/service/engine.js';
import { buildMember } from '../../../src/service/pool-builder.js';
import { RtnetlinkSocket } from '../../../src/kernel/rtnetlink.js';
import { NetnsEtc, NETNS_ETC_DIR } from '../../../src/kernel/netns-etc.js';
import { netnsPath } from '../../../src/kernel/netns.js';
import { getLinkOrUndefined } from '../../../src/kernel/host-net.js';
import { waitFor } from '../../helpers/wait.js';

const [instance, stateDir, runDir, dns] = process.argv.slice(2);
const config = resolveConfig(ConfigSchema.parse({ instance, stateDir, runDir, dnsUpstreams: [dns] }), []);
const engine = await Engine.open(config);
const rtnl = new RtnetlinkSocket();
// The builder's own view of /etc/netns, as the worker thread has (same instance, same shared directory).
const etc = new NetnsEtc(instance, '');

/** What exists of a reserved member, in the store, the kernel and /etc/netns. */
function traces(r: PoolReservation) {
  const row = engine.store.getByName(r.lease.row.name);
  return {
    row: row?.state ?? null,
    netns: fs.existsSync(netnsPath(r.net.netns)),
    hostLink: getLinkOrUndefined(rtnl, r.net.hostLink!) !== undefined, // (sysfs shows the root namespace's links)
    etc: fs.existsSync(path.join(NETNS_ETC_DIR, r.net.netns)),
  };
}

const out: Record<string, unknown> = {};
try {
  engine.up();
  // 1. gc while a member is being built: before its kernel part exists, and after.
  const a = engine.reservePoolMember();
  out.reserved = { ...traces(a), idle: engine.status().pool.idle, gc: engine.gc() };
  buildMember(rtnl, etc, a.net);
  out.built = { ...traces(a), gc: engine.gc() };
  engine.finishPoolMember(a);
  out.finished = { ...traces(a), idle: engine.status().pool.idle };

  // 2. A builder thread that died midway: the kernel part is there, the builder undid nothing.
  const b = engine.reservePoolMember();
  buildMember(rtnl, etc, b.net);
  const before = traces(b);
  engine.finishPoolMember(b, new Error('builder thread died'));
  await engine.settled();
  // The kernel reaps the links of a destroyed namespace in the background. If it never
  // does, the test reports the link left (out.died.after), not this wait.
  await waitFor(() => !traces(b).hostLink, 'the dead member\'s host link to go', 5000, 20).catch(() => undefined);
  const c = engine.reservePoolMember(); // the address goes out again first
  out.died = { before, after: traces(b), ip: b.lease.row.ip, nextIp: c.lease.row.ip, idle: engine.status().pool.idle };

  // 3. Queued members failing in the order they were queued (fresh addresses given back
  // lowest first): the stored cursor must stay at the lowest, as after a restart it is all there is.
  const d = engine.reservePoolMember();
  engine.finishPoolMember(c, new Error('refused'));
  engine.finishPoolMember(d, new Error('refused'));
  out.outOfOrder = { lowest: c.lease.row.ip, storedCursor: engine.store.getMeta('next_fresh') };
} finally {
  await engine.down().catch((err) => { out.downError = String(err); });
  rtnl.close();
  engine.close();
}
process.stdout.write(`${JSON.stringify(out)}\n`);
