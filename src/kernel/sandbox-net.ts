// One sandbox's network in the kernel: a namespace with lo and eth0, joined to the host by
// its mode's link driver (links/), which also configures the inside (eth0's address and
// default route via the gateway; for tap, the TAP joined to eth0). Create is
// all-or-nothing: on any failure the host side and the namespace (and with it every link
// inside) are removed again.
import fs from 'node:fs';
import { createNetns, deleteNetns, netnsPath, withNetns } from './netns.js';
import { RtnetlinkSocket } from './rtnetlink.js';
import { SandboxNetSpec, linkDriver } from './links/index.js';
import {
  AddrInfo, LinkInfo, RouteInfo, RT_TABLE_MAIN, parseAddr, parseLink, parseRoute,
} from './rtnetlink-codec.js';
import * as rq from './rtnl-requests.js';

/** ifindex of eth0 in a fresh namespace: lo is always 1, so we can name 2 up front. */
const SANDBOX_IFINDEX = 2;

export type { SandboxNetSpec };

export function createSandboxNet(host: RtnetlinkSocket, s: SandboxNetSpec): void {
  const driver = linkDriver(s.mode);
  let inside: RtnetlinkSocket | undefined;
  let opened: number | undefined;
  createNetns(s.netns, () => {
    inside = new RtnetlinkSocket();
    opened = driver.openInside?.(s);
  });
  try {
    const nsFd = fs.openSync(netnsPath(s.netns), 'r');
    const end = { name: 'eth0', index: SANDBOX_IFINDEX, nsFd, mac: s.mac };
    try {
      driver.make(host, s, end);
    } finally {
      fs.closeSync(nsFd);
    }
    const handed = opened;
    opened = undefined; // configureInside closes it
    driver.configureInside(inside!, s, end, handed);
  } catch (err) {
    removeSandboxNet(host, s);
    throw err;
  } finally {
    inside?.close();
    if (opened !== undefined) fs.closeSync(opened);
  }
}

/**
 * Removes the host side and the namespace; the kernel reaps the links inside once no
 * process holds the namespace (deleting a veth explicitly costs 25-35 ms). Idempotent.
 */
export function removeSandboxNet(host: RtnetlinkSocket, s: Pick<SandboxNetSpec, 'netns' | 'mode' | 'ip' | 'hostLink'>): void {
  linkDriver(s.mode).removeHostSide(host, s);
  deleteNetns(s.netns);
}

export interface SandboxNetView {
  host?: LinkInfo;
  sandbox?: { links: LinkInfo[]; addresses: AddrInfo[]; routes: RouteInfo[] };
  hostRoutes: RouteInfo[];
}

/** Both ends of a sandbox's link as the kernel sees them now (for inspect and check). */
export function inspectSandboxNet(host: RtnetlinkSocket, s: Pick<SandboxNetSpec, 'netns' | 'mode' | 'ip' | 'hostLink'>): SandboxNetView {
  const view: SandboxNetView = linkDriver(s.mode).describeHost(host, s);
  if (fs.existsSync(netnsPath(s.netns))) {
    const sock = withNetns(netnsPath(s.netns), () => new RtnetlinkSocket());
    try {
      view.sandbox = {
        links: sock.dump(rq.dumpLinks()).map(parseLink),
        addresses: sock.dump(rq.dumpAddrs()).map(parseAddr),
        routes: sock.dump(rq.dumpRoutes()).map(parseRoute).filter((r) => r.table === RT_TABLE_MAIN),
      };
    } finally {
      sock.close();
    }
  }
  return view;
}
