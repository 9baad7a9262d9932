// One sandbox's network in the kernel: a namespace with lo and eth0 (address, default route
// via the gateway), joined to the host by a veth pair (host end routed /32) or a macvlan
// child of the instance's parent link. Create is all-or-nothing: on any failure the
// namespace (and with it every link inside) is removed again.
import fs from 'node:fs';
import { ToastnetError } from '../errors.js';
import { createNetns, deleteNetns, netnsPath, withNetns } from './netns.js';
import { disableIpv6 } from './link-sysctl.js';
import { RtnetlinkSocket } from './rtnetlink.js';
import {
  AddrInfo, LinkInfo, RouteInfo, RT_TABLE_MAIN, parseAddr, parseLink, parseRoute,
} from './rtnetlink-codec.js';
import * as rq from './rtnl-requests.js';

/** ifindex of eth0 in a fresh namespace: lo is always 1, so we can name 2 up front. */
const SANDBOX_IFINDEX = 2;

export interface SandboxNetSpec {
  netns: string;
  mode: 'veth' | 'macvlan';
  ip: string;
  prefixLength: number;
  gateway: string;
  mac: string;
  /** Host end of the veth (veth mode). */
  hostLink: string;
  /** ifindex of the macvlan parent (macvlan mode). */
  parentIndex?: number;
}

export function createSandboxNet(host: RtnetlinkSocket, s: SandboxNetSpec): void {
  let inside: RtnetlinkSocket | undefined;
  createNetns(s.netns, () => {
    inside = new RtnetlinkSocket();
  });
  let routed = false;
  try {
    const nsFd = fs.openSync(netnsPath(s.netns), 'r');
    let hostIndex: number | undefined;
    try {
      const eth0 = { name: 'eth0', index: SANDBOX_IFINDEX, nsFd, mac: s.mac };
      if (s.mode === 'veth') {
        // The echo carries the host end's ifindex. A lookup afterwards would cost as much
        // again: every message about the host end finds the peer namespace's id by walking
        // the host's ids (75 us against 14 at 4,000 sandboxes).
        const echoed = host.execEcho(rq.newVeth({ name: s.hostLink }, eth0), `create veth ${s.hostLink}`);
        hostIndex = echoed.map(parseLink).find((l) => l.name === s.hostLink)?.index;
      } else {
        if (s.parentIndex === undefined) throw new ToastnetError('not_ready', 'macvlan parent link missing: run `toastnet up`');
        host.exec([rq.newMacvlan(s.parentIndex, eth0)], ['create macvlan']);
      }
    } finally {
      fs.closeSync(nsFd);
    }
    if (s.mode === 'veth') {
      const index = hostIndex ?? parseLink(host.get(rq.getLink(s.hostLink), `get ${s.hostLink}`)).index;
      routed = true;
      disableIpv6(s.hostLink);
      host.exec(
        // proxy_arp: the host answers the sandbox's ARP for other subnet addresses, so traffic
        // to them reaches the filter (and a fast reject) instead of dying in ARP.
        // arp_announce 2: the host's own ARP requests here carry the gateway address, never
        // one of its other addresses.
        [rq.setUp(index, { noIpv6: true, ipv4: { proxy_arp: 1, arp_announce: 2 } }), rq.noProxyDelay(index), rq.addRoute({ dst: s.ip, dstLen: 32, oif: index, prefsrc: s.gateway })],
        [`up ${s.hostLink}`, `no proxy delay on ${s.hostLink}`, `route ${s.ip}/32`],
      );
    }
    inside!.exec(
      [
        rq.setUp(SANDBOX_IFINDEX, { noIpv6: true }),
        rq.setUp(1),
        rq.addAddr(SANDBOX_IFINDEX, s.ip, s.prefixLength),
        rq.addRoute({ dst: '0.0.0.0', dstLen: 0, oif: SANDBOX_IFINDEX, gateway: s.gateway, onlink: true }),
      ],
      ['up eth0', 'up lo', `address ${s.ip}/${s.prefixLength}`, `default route via ${s.gateway}`],
    );
  } catch (err) {
    removeSandboxNet(host, s, routed);
    throw err;
  } finally {
    inside?.close();
  }
}

/**
 * Removes the host route and the namespace; the kernel reaps the links inside once no
 * process holds the namespace (deleting a veth explicitly costs 25-35 ms). Idempotent.
 */
export function removeSandboxNet(host: RtnetlinkSocket, s: Pick<SandboxNetSpec, 'netns' | 'mode' | 'ip'>, routed = true): void {
  if (routed) removeHostRoute(host, s);
  deleteNetns(s.netns);
}

/** Removes a veth sandbox's host route (gone already when the kernel reaped its link). */
export function removeHostRoute(host: RtnetlinkSocket, s: Pick<SandboxNetSpec, 'mode' | 'ip'>): void {
  if (s.mode !== 'veth') return;
  try {
    host.exec([rq.delRoute(s.ip, 32)], ['delete route']);
  } catch {
    // already gone with its link
  }
}

export interface SandboxNetView {
  host?: LinkInfo;
  sandbox?: { links: LinkInfo[]; addresses: AddrInfo[]; routes: RouteInfo[] };
  hostRoutes: RouteInfo[];
}

/** Both ends of a sandbox's link as the kernel sees them now (for inspect and check). */
export function inspectSandboxNet(host: RtnetlinkSocket, s: Pick<SandboxNetSpec, 'netns' | 'mode' | 'ip' | 'hostLink'>): SandboxNetView {
  const view: SandboxNetView = { hostRoutes: [] };
  if (s.mode === 'veth') {
    try {
      view.host = parseLink(host.get(rq.getLink(s.hostLink), 'get link'));
    } catch {
      view.host = undefined;
    }
    view.hostRoutes = host.dump(rq.dumpRoutes()).map(parseRoute)
      .filter((r) => r.table === RT_TABLE_MAIN && r.dstLen === 32 && r.dst === s.ip);
  }
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
