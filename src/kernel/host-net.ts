// The instance's host side: a veth pair whose host end carries the gateway address and
// whose other end is the parent of macvlan sandboxes (the note's tveth0/tveth1), plus IPv4
// forwarding in this namespace.
import fs from 'node:fs';
import { ToastnetError } from '../errors.js';
import { Cidr, cidrsOverlap, formatCidr, parseIPv4 } from '../core/ipv4.js';
import { InstanceNames } from '../core/names.js';
import { disableIpv6 } from './link-sysctl.js';
import { RtnetlinkSocket, isNoSuchLink } from './rtnetlink.js';
import { LinkInfo, RT_TABLE_MAIN, parseLink, parseRoute } from './rtnetlink-codec.js';
import * as rq from './rtnl-requests.js';

const FORWARD = '/proc/sys/net/ipv4/ip_forward';

export function getLinkOrUndefined(sock: RtnetlinkSocket, name: string): LinkInfo | undefined {
  try {
    return parseLink(sock.get(rq.getLink(name), `get ${name}`));
  } catch (err) {
    if (isNoSuchLink(err)) return undefined;
    throw err;
  }
}

/** Refuses a subnet that overlaps a route toastnet did not make (another instance, a LAN, a VPN). */
export function checkSubnetFree(sock: RtnetlinkSocket, n: InstanceNames, subnet: Cidr): void {
  const ours = new Set(sock.dump(rq.dumpLinks()).map(parseLink).filter((l) => l.name.startsWith(n.linkPrefix)).map((l) => l.index));
  const names = new Map(sock.dump(rq.dumpLinks()).map(parseLink).map((l) => [l.index, l.name]));
  for (const r of sock.dump(rq.dumpRoutes()).map(parseRoute)) {
    if (r.table !== RT_TABLE_MAIN || r.dstLen === 0 || (r.oif !== undefined && ours.has(r.oif))) continue;
    const c = { network: parseIPv4(r.dst), prefix: r.dstLen };
    if (cidrsOverlap(c, subnet)) {
      throw new ToastnetError('invalid_argument', `subnet ${formatCidr(subnet)} overlaps route ${formatCidr(c)} on ${names.get(r.oif ?? -1) ?? 'another link'}: choose another subnet`);
    }
  }
}

export interface HostNetState {
  parentIndex: number;
  gatewayIndex: number;
}

/** Idempotent: creates what is missing, fixes what differs, leaves the rest. */
export function setupHostNet(sock: RtnetlinkSocket, n: InstanceNames, gateway: string, prefixLength: number): HostNetState {
  if (!getLinkOrUndefined(sock, n.gatewayLink)) {
    const stray = getLinkOrUndefined(sock, n.macvlanParent);
    if (stray) sock.exec([rq.delLink(n.macvlanParent)], [`delete stray ${n.macvlanParent}`]);
    sock.exec([rq.newVeth({ name: n.gatewayLink }, { name: n.macvlanParent })], [`create ${n.gatewayLink}`]);
  }
  const gw = getLinkOrUndefined(sock, n.gatewayLink)!;
  const parent = getLinkOrUndefined(sock, n.macvlanParent);
  if (!parent) throw new ToastnetError('kernel', `${n.gatewayLink} exists but its peer ${n.macvlanParent} does not: run \`toastnet down\` then \`up\``);
  disableIpv6(n.gatewayLink);
  disableIpv6(n.macvlanParent);
  sock.exec(
    // proxy_arp + proxy_arp_pvlan on the gateway link: macvlan sandboxes cannot see each other
    // (private mode), so the host answers their ARP for each other's addresses and routes
    // (and filters) between them.
    [rq.setUp(gw.index, { noIpv6: true, ipv4: { proxy_arp: 1, proxy_arp_pvlan: 1, arp_announce: 2 } }), rq.noProxyDelay(gw.index), rq.setUp(parent.index, { noIpv6: true }), rq.addAddr(gw.index, gateway, prefixLength, true)],
    [`up ${n.gatewayLink}`, `no proxy delay on ${n.gatewayLink}`, `up ${n.macvlanParent}`, `address ${gateway}/${prefixLength}`],
  );
  return { parentIndex: parent.index, gatewayIndex: gw.index };
}

export function teardownHostNet(sock: RtnetlinkSocket, n: InstanceNames): void {
  if (getLinkOrUndefined(sock, n.gatewayLink)) sock.exec([rq.delLink(n.gatewayLink)], [`delete ${n.gatewayLink}`]);
  if (getLinkOrUndefined(sock, n.macvlanParent)) sock.exec([rq.delLink(n.macvlanParent)], [`delete ${n.macvlanParent}`]);
}

/** Gateway links of any toastnet instance in this namespace ("tn" + 4 hex + "g"). */
export function otherInstancesPresent(sock: RtnetlinkSocket, n: InstanceNames): boolean {
  return sock.dump(rq.dumpLinks()).map(parseLink).some((l) => /^tn[0-9a-f]{4}g$/.test(l.name) && l.name !== n.gatewayLink);
}

export function readForwarding(): boolean {
  return fs.readFileSync(FORWARD, 'utf8').trim() === '1';
}

export function writeForwarding(on: boolean): void {
  fs.writeFileSync(FORWARD, on ? '1\n' : '0\n');
}

/**
 * Conntrack keeps packet and byte counters per flow (nf_conntrack_acct) and its start and
 * stop times (nf_conntrack_timestamp) in this namespace, for the flow log. Both are
 * per-namespace sysctls, only read when a flow begins (flows already tracked keep none),
 * and left on at `down` (other users of conntrack only gain counters). The files exist once
 * the conntrack module is loaded: call after the ruleset (whose ct rules load it) is in.
 * Returns the sysctls that could not be set.
 */
export function enableConntrackAccounting(): string[] {
  const failed: string[] = [];
  for (const k of ['nf_conntrack_acct', 'nf_conntrack_timestamp']) {
    const file = `/proc/sys/net/netfilter/${k}`;
    try {
      if (fs.readFileSync(file, 'utf8').trim() !== '1') fs.writeFileSync(file, '1\n');
    } catch {
      failed.push(`net.netfilter.${k}`);
    }
  }
  return failed;
}
