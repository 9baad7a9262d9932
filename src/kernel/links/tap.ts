// A TAP for a microVM, Firecracker's jailer pattern (core/tap.ts has the topology): the
// sandbox's namespace and routed veth exactly as a veth sandbox has them, then, inside, a
// persistent TAP and tc redirects joining it to eth0 frame for frame. Nothing in the
// namespace has an address: the VMM started there reaches no network, only its TAP.
import fs from 'node:fs';
import { ToastnetError } from '../../errors.js';
import { TAP_DEVICE, resolveTapOptions } from '../../core/tap.js';
import * as rq from '../rtnl-requests.js';
import { addClsact, redirectIngress } from '../tc-redirect.js';
import { createTap, openTun } from '../tun.js';
import type { LinkDriver } from './driver.js';
import { makeRoutedVeth, vethDriver } from './veth.js';

export const tapDriver: LinkDriver = {
  make: makeRoutedVeth,

  // Opened while the namespace is being made: the TAP belongs where its fd was opened.
  openInside: openTun,

  configureInside(inside, s, end, opened): void {
    if (opened === undefined) throw new ToastnetError('internal', 'tap: /dev/net/tun was not opened inside the namespace');
    // lo is 1 and eth0 the end's index in a fresh namespace; the TAP takes the next.
    const tap = end.index + 1;
    try {
      createTap(opened, TAP_DEVICE, tap, s.tap ?? resolveTapOptions(undefined));
      inside.exec(
        [
          // No IPv6 link-local address on either: the namespace sends nothing of its own.
          // (In messages of their own: setUp's noIpv6 comes too late, see noIpv6Addresses;
          // the TAP too gets a link-local address at its up, VMM or not.)
          rq.noIpv6Addresses(end.index),
          rq.noIpv6Addresses(tap),
          // qdiscs while the links are down: grafting an ingress qdisc onto a link that is up
          // deactivates it first (qdisc_graft), which waits for an RCU grace period (0.17 ms
          // for the two here, against 0.03 ms on links still down).
          addClsact(end.index),
          addClsact(tap),
        ],
        [`no IPv6 on ${end.name}`, `no IPv6 on ${TAP_DEVICE}`, `clsact on ${end.name}`, `clsact on ${TAP_DEVICE}`],
      );
    } finally {
      // Closing the fd detaches it from the TAP, which waits for an expedited grace period
      // (~0.1 ms, __tun_detach). The first filter on a new qdisc needs one since the qdisc
      // was made (mini_qdisc_pair_swap): closing here, between the two, serves both.
      fs.closeSync(opened);
    }
    inside.exec(
      [redirectIngress(end.index, tap), redirectIngress(tap, end.index), rq.setUp(end.index), rq.setUp(1), rq.setUp(tap)],
      [`${end.name} -> ${TAP_DEVICE}`, `${TAP_DEVICE} -> ${end.name}`, `up ${end.name}`, 'up lo', `up ${TAP_DEVICE}`],
    );
  },

  // A VMM holding the TAP holds the namespace, and so the veth, until the reaper ends it:
  // the route to the guest goes at once (its elements went just before, so nothing it sends
  // passes the source check), so nothing is routed to it meanwhile. Deleting the route costs
  // 14 us here; taking the host end down, 104 us (dev_close waits for an expedited RCU
  // grace period under RTNL).
  cut: vethDriver.removeHostSide,

  removeHostSide: vethDriver.removeHostSide,
  present: vethDriver.present,
  describeHost: vethDriver.describeHost,
};
