// Builders for the rtnetlink requests toastnet sends: pure, so their bytes are unit-tested.
import {
  AF_INET, AF_INET6, AF_UNSPEC, Attr, IFA_ADDRESS, IFA_LOCAL, IFF_UP, IFLA_ADDRESS, IFLA_AF_SPEC, IFLA_IFNAME,
  IFLA_INET6_ADDR_GEN_MODE, IFLA_INFO_DATA, IFLA_INFO_KIND, IFLA_LINK, IFLA_LINKINFO, IFLA_MACVLAN_MODE,
  IFLA_MTU, IFLA_NET_NS_FD, IFLA_NUM_RX_QUEUES, IFLA_NUM_TX_QUEUES, IN6_ADDR_GEN_MODE_NONE, MACVLAN_MODE_PRIVATE, NLM_F_CREATE, NLM_F_EXCL,
  NDA_DST, NLM_F_REPLACE, RTA_DST, RTA_GATEWAY, RTA_OIF, RTA_PREFSRC, RTM_DELLINK, RTM_DELNEIGH, RTM_DELROUTE, RTM_GETADDR,
  RTM_GETLINK, RTM_GETROUTE, RTM_NEWADDR, RTM_NEWLINK, RTM_NEWROUTE, RTNH_F_ONLINK, RT_SCOPE_LINK,
  RT_SCOPE_UNIVERSE, Request, VETH_INFO_PEER, encodeAttrs, ifaddrmsg, ifinfomsg, ipv4, mac, request, rtmsg, str,
  u32, u8,
} from './rtnetlink-codec.js';

/**
 * No IPv6 link-local address on toastnet's links: sandboxes get no IPv6 side door, and no
 * DAD delay. The kernel accepts this only on an existing link (not at creation), so links
 * are created down and brought up by setUp after this is set. (Host-side links also get
 * IPv6 switched off entirely: link-sysctl.ts.)
 */
const noIpv6: Attr = { type: IFLA_AF_SPEC, nested: [{ type: AF_INET6, nested: [{ type: IFLA_INET6_ADDR_GEN_MODE, data: u8(IN6_ADDR_GEN_MODE_NONE) }] }] };

export interface LinkEnd {
  name: string;
  mac?: string;
  /** ifindex to request (0 = kernel picks). */
  index?: number;
  /** Namespace fd to create this end in (undefined = the socket's namespace). */
  nsFd?: number;
  mtu?: number;
}

function endAttrs(e: LinkEnd): Attr[] {
  const a: Attr[] = [{ type: IFLA_IFNAME, data: str(e.name) }];
  if (e.mac) a.push({ type: IFLA_ADDRESS, data: mac(e.mac) });
  if (e.mtu) a.push({ type: IFLA_MTU, data: u32(e.mtu) });
  if (e.nsFd !== undefined) a.push({ type: IFLA_NET_NS_FD, data: u32(e.nsFd) });
  return a;
}

/**
 * One tx and one rx queue, asked for at creation. Without them the kernel allocates a queue per possible CPU and then
 * shrinks a registered device to one (veth_init_queues), and the shrink waits for an expedited RCU grace period while
 * holding RTNL: measured as the main off-CPU wait of API creates at 4,000 sandboxes. The device works the same
 * (it used one queue either way); only the allocated count (`ip -d link`: numtxqueues) reads 1 instead of the CPU
 * count. Every veth toastnet makes gets this: sandboxes', the gateway pair's, doctor's probe.
 */
const oneQueue: Attr[] = [{ type: IFLA_NUM_TX_QUEUES, data: u32(1) }, { type: IFLA_NUM_RX_QUEUES, data: u32(1) }];

/**
 * A veth pair (both ends down; see setUp), with the peer created directly inside another namespace:
 * moving a link between namespaces afterwards costs ~20 ms, creating it there ~0.
 */
export function newVeth(host: LinkEnd, peer: LinkEnd): Request {
  const peerMsg = Buffer.concat([ifinfomsg({ index: peer.index }), encodeAttrs([...endAttrs(peer), ...oneQueue])]);
  return request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, ifinfomsg({ index: host.index }), [
    ...endAttrs(host),
    ...oneQueue,
    { type: IFLA_LINKINFO, nested: [{ type: IFLA_INFO_KIND, data: str('veth') }, { type: IFLA_INFO_DATA, nested: [{ type: VETH_INFO_PEER, data: peerMsg }] }] },
  ]);
}

/** A macvlan child of `parentIndex` in private mode (children cannot talk to each other at L2), created inside the target namespace. */
export function newMacvlan(parentIndex: number, child: LinkEnd): Request {
  return request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, ifinfomsg({ index: child.index }), [
    ...endAttrs(child),
    { type: IFLA_LINK, data: u32(parentIndex) },
    { type: IFLA_LINKINFO, nested: [{ type: IFLA_INFO_KIND, data: str('macvlan') }, { type: IFLA_INFO_DATA, nested: [{ type: IFLA_MACVLAN_MODE, data: u32(MACVLAN_MODE_PRIVATE) }] }] },
  ]);
}

/** IPv4 per-interface settings (net.ipv4.conf.<if>.*), by IPV4_DEVCONF_* index (linux/ip.h). */
export const IPV4_DEVCONF = { proxy_arp: 3, send_redirects: 6, arp_announce: 18, proxy_arp_pvlan: 25 } as const;
const IFLA_INET_CONF = 1;

/**
 * Brings a link up (by index, or by name when index is 0), optionally first switching off
 * its IPv6 addresses and setting IPv4 per-interface options: the sysctls of
 * net.ipv4.conf.<if>, set in the same netlink message instead of one /proc write each.
 */
export function setUp(index: number, o: { name?: string; noIpv6?: boolean; ipv4?: Partial<Record<keyof typeof IPV4_DEVCONF, number>> } = {}): Request {
  const attrs: Attr[] = [];
  if (o.name) attrs.push({ type: IFLA_IFNAME, data: str(o.name) });
  const af: Attr[] = [];
  if (o.ipv4) {
    af.push({ type: AF_INET, nested: [{ type: IFLA_INET_CONF, nested: Object.entries(o.ipv4).map(([k, v]) => ({ type: IPV4_DEVCONF[k as keyof typeof IPV4_DEVCONF], data: u32(v!) })) }] });
  }
  if (o.noIpv6) af.push(...(noIpv6 as { nested: Attr[] }).nested);
  if (af.length > 0) attrs.push({ type: IFLA_AF_SPEC, nested: af });
  return request(RTM_NEWLINK, 0, ifinfomsg({ index, flags: IFF_UP, change: IFF_UP }), attrs);
}

/**
 * Switches off IPv6 addresses on a link without bringing it up. setUp's noIpv6 rides in the
 * same message as IFF_UP, and the kernel applies IFLA_AF_SPEC after the flags (do_setlink):
 * a link with a carrier already (a veth whose host end is up) gets its link-local address
 * before the mode is set. Sent first, in the same batch, this leaves none.
 */
export function noIpv6Addresses(index: number): Request {
  return request(RTM_NEWLINK, 0, ifinfomsg({ index }), [noIpv6]);
}

const RTM_SETNEIGHTBL = 67;
const NDTA_NAME = 1;
const NDTA_PARMS = 6;
const NDTPA_IFINDEX = 1;
const NDTPA_PROXY_DELAY = 13;

/**
 * No delay before the host answers ARP on the link's behalf (net.ipv4.neigh.<if>.proxy_delay,
 * 0.8 s by default, random): with it, a sandbox's first packets to a peer wait in its
 * neighbour queue, and a burst overflows the queue.
 */
export function noProxyDelay(index: number): Request {
  const ndtmsg = Buffer.from([AF_INET, 0, 0, 0]);
  const delay = Buffer.alloc(8); // u64, milliseconds
  return request(RTM_SETNEIGHTBL, 0, ndtmsg, [
    { type: NDTA_NAME, data: str('arp_cache') },
    { type: NDTA_PARMS, nested: [{ type: NDTPA_IFINDEX, data: u32(index) }, { type: NDTPA_PROXY_DELAY, data: delay }] },
  ]);
}

export function delLink(name: string): Request {
  return request(RTM_DELLINK, 0, ifinfomsg(), [{ type: IFLA_IFNAME, data: str(name) }]);
}

export function getLink(name: string): Request {
  return request(RTM_GETLINK, 0, ifinfomsg(), [{ type: IFLA_IFNAME, data: str(name) }]);
}

export function dumpLinks(): Request {
  return request(RTM_GETLINK, 0, ifinfomsg());
}

export function addAddr(index: number, ip: string, prefixLength: number, replace = false): Request {
  return request(RTM_NEWADDR, NLM_F_CREATE | (replace ? NLM_F_REPLACE : NLM_F_EXCL), ifaddrmsg({ family: AF_INET, prefixlen: prefixLength, index }), [
    { type: IFA_LOCAL, data: ipv4(ip) },
    { type: IFA_ADDRESS, data: ipv4(ip) },
  ]);
}

export function dumpAddrs(): Request {
  return request(RTM_GETADDR, 0, ifaddrmsg({ family: AF_INET, prefixlen: 0, index: 0 }));
}

export interface RouteSpec {
  dst: string;
  dstLen: number;
  oif: number;
  gateway?: string;
  prefsrc?: string;
  /** Trust the gateway to be on the link even without a connected route to it. */
  onlink?: boolean;
}

export function addRoute(r: RouteSpec): Request {
  const attrs: Attr[] = [{ type: RTA_OIF, data: u32(r.oif) }];
  if (r.dstLen > 0) attrs.unshift({ type: RTA_DST, data: ipv4(r.dst) });
  if (r.gateway) attrs.push({ type: RTA_GATEWAY, data: ipv4(r.gateway) });
  if (r.prefsrc) attrs.push({ type: RTA_PREFSRC, data: ipv4(r.prefsrc) });
  return request(
    RTM_NEWROUTE,
    NLM_F_CREATE | NLM_F_REPLACE,
    rtmsg({ family: AF_INET, dstLen: r.dstLen, scope: r.gateway ? RT_SCOPE_UNIVERSE : RT_SCOPE_LINK, flags: r.onlink ? RTNH_F_ONLINK : 0 }),
    attrs,
  );
}

export function delRoute(dst: string, dstLen: number): Request {
  return request(RTM_DELROUTE, 0, rtmsg({ family: AF_INET, dstLen, scope: 255 /* RT_SCOPE_NOWHERE: any */ }), [{ type: RTA_DST, data: ipv4(dst) }]);
}

export function dumpRoutes(): Request {
  return request(RTM_GETROUTE, 0, rtmsg({ family: AF_INET, dstLen: 0, table: 0, protocol: 0, scope: 0, type: 0 }));
}

/**
 * Forgets the neighbour entry of `ip` on link `index` (ndmsg: family, pad, ifindex, state,
 * flags, type): a removed macvlan sandbox's address must not keep pointing at its MAC.
 */
export function delNeigh(index: number, ip: string): Request {
  const ndmsg = Buffer.alloc(12);
  ndmsg.writeUInt8(AF_INET, 0);
  ndmsg.writeInt32LE(index, 4);
  return request(RTM_DELNEIGH, 0, ndmsg, [{ type: NDA_DST, data: ipv4(ip) }]);
}

export { AF_UNSPEC };
