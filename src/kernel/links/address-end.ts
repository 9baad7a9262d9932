// The inside of a veth or macvlan sandbox: its end up with the sandbox's address and a
// default route via the gateway, lo up; one batch on a socket inside the namespace.
import type { RtnetlinkSocket } from '../rtnetlink.js';
import * as rq from '../rtnl-requests.js';
import type { SandboxEnd, SandboxNetSpec } from './driver.js';

export function addressEnd(inside: RtnetlinkSocket, s: SandboxNetSpec, end: SandboxEnd): void {
  inside.exec(
    [
      // Before the up, in a message of its own: see noIpv6Addresses.
      rq.noIpv6Addresses(end.index),
      rq.setUp(end.index),
      rq.setUp(1),
      rq.addAddr(end.index, s.ip, s.prefixLength),
      rq.addRoute({ dst: '0.0.0.0', dstLen: 0, oif: end.index, gateway: s.gateway, onlink: true }),
    ],
    [`no IPv6 on ${end.name}`, `up ${end.name}`, 'up lo', `address ${s.ip}/${s.prefixLength}`, `default route via ${s.gateway}`],
  );
}
