// Per-link sysctls that rtnetlink cannot set. IPv4's (net.ipv4.conf.<if>.*) go in the
// RTM_NEWLINK that brings a link up (rtnl-requests setUp); IPv6 accepts only its address
// generation mode there, so switching IPv6 off takes a write under /proc/sys, which names
// the links of the namespace the calling thread is in.
import fs from 'node:fs';

/**
 * Switches IPv6 off on a link (net.ipv6.conf.<link>.disable_ipv6 = 1) before it comes up.
 * Address generation mode "none" alone still gives a link IPv6: the kernel adds an
 * ff00::/8 route per link, all in one node of the namespace's IPv6 routing tree, joins it
 * to multicast groups and sends MLD reports for it. With thousands of links every route
 * insert, link removal and report walks that node under the RTNL lock: at 4,000 sandboxes
 * that was most of why a create took 4 ms instead of 2. A link with IPv6 off has none of it.
 */
export function disableIpv6(link: string): void {
  try {
    fs.writeFileSync(`/proc/sys/net/ipv6/conf/${link}/disable_ipv6`, '1');
  } catch (err) {
    // No IPv6 in the kernel, or none on this link (an MTU below 1280): nothing to switch off.
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
}
