// A TAP for a microVM, Firecracker's jailer pattern (core/tap.ts has the topology): the
// sandbox's namespace and routed veth exactly as a veth sandbox has them, then, inside, a
// persistent TAP and tc redirects joining it to eth0 frame for frame. Nothing in the
// namespace has an address: the VMM started there reaches no network, only its TAP.
import { TAP_DEVICE, resolveTapOptions } from '../../core/tap.js';
import { netnsPath, withNetns } from '../netns.js';
import * as rq from '../rtnl-requests.js';
import { addClsact, redirectIngress } from '../tc-redirect.js';
import { createTap } from '../tun.js';
import type { LinkDriver } from './driver.js';
import { makeRoutedVeth, vethDriver } from './veth.js';

export const tapDriver: LinkDriver = {
  make: makeRoutedVeth,

  configureInside(inside, s, end): void {
    const tap = withNetns(netnsPath(s.netns), () => createTap(TAP_DEVICE, s.tap ?? resolveTapOptions(undefined)));
    inside.exec(
      [
        // No IPv6 link-local address on either: the namespace sends nothing of its own.
        rq.noIpv6Addresses(end.index),
        rq.noIpv6Addresses(tap),
        rq.setUp(end.index),
        rq.setUp(1),
        rq.setUp(tap),
        addClsact(end.index),
        addClsact(tap),
        redirectIngress(end.index, tap),
        redirectIngress(tap, end.index),
      ],
      [`no IPv6 on ${end.name}`, `no IPv6 on ${TAP_DEVICE}`, `up ${end.name}`, 'up lo', `up ${TAP_DEVICE}`, `clsact on ${end.name}`, `clsact on ${TAP_DEVICE}`, `${end.name} -> ${TAP_DEVICE}`, `${TAP_DEVICE} -> ${end.name}`],
    );
  },

  // A VMM holding the TAP holds the namespace, and so the veth, until the reaper ends it:
  // the host end goes down at once, so no frame passes either way meanwhile.
  cut(host, s): void {
    try {
      host.exec([rq.setDownByName(s.hostLink)], [`down ${s.hostLink}`]);
    } catch {
      // gone already
    }
  },

  removeHostSide: vethDriver.removeHostSide,
  present: vethDriver.present,
  describeHost: vethDriver.describeHost,
};
