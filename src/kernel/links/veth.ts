// A veth pair per sandbox, routed: the host end gets a /32 route to the sandbox and answers
// its ARP (proxy_arp), so sandboxes share no L2 segment and the filter sees every packet on
// the sandbox's own host link, which the sandbox cannot forge.
import { disableIpv6 } from '../link-sysctl.js';
import type { RtnetlinkSocket } from '../rtnetlink.js';
import { RT_TABLE_MAIN, parseLink, parseRoute } from '../rtnetlink-codec.js';
import * as rq from '../rtnl-requests.js';
import { getLinkOrUndefined } from '../host-net.js';
import type { LinkDriver, SandboxEnd, SandboxNetSpec } from './driver.js';
import { addressEnd } from './address-end.js';

export const vethDriver: LinkDriver = {
  make(host: RtnetlinkSocket, s: SandboxNetSpec, end: SandboxEnd): void {
    makeRoutedVeth(host, s, end);
  },

  configureInside: addressEnd,

  removeHostSide(host, s): void {
    // The link goes with the namespace (reaped by the kernel) and its route with the link;
    // a namespace that processes keep alive keeps both, so the route is removed here.
    try {
      host.exec([rq.delRoute(s.ip, 32)], ['delete route']);
    } catch {
      // already gone with its link
    }
  },

  present(host, s): boolean {
    return getLinkOrUndefined(host, s.hostLink) !== undefined;
  },

  describeHost(host, s) {
    return {
      host: getLinkOrUndefined(host, s.hostLink),
      hostRoutes: host.dump(rq.dumpRoutes()).map(parseRoute).filter((r) => r.table === RT_TABLE_MAIN && r.dstLen === 32 && r.dst === s.ip),
    };
  },
};

/** The veth pair, its peer `end` inside the namespace, and the routed host end (also tap's: links/tap.ts). */
export function makeRoutedVeth(host: RtnetlinkSocket, s: SandboxNetSpec, end: SandboxEnd): void {
  // The echo carries the host end's ifindex. A lookup afterwards would cost as much again:
  // every message about the host end finds the peer namespace's id by walking the host's
  // ids (75 us against 14 at 4,000 sandboxes).
  const echoed = host.execEcho(rq.newVeth({ name: s.hostLink }, end), `create veth ${s.hostLink}`);
  const index = echoed.map(parseLink).find((l) => l.name === s.hostLink)?.index
    ?? parseLink(host.get(rq.getLink(s.hostLink), `get ${s.hostLink}`)).index;
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
