// What the filter and the gateway's resolver agree on: the mark its sockets carry and the
// largest query it takes (the ruleset enforces both in the kernel).
/**
 * SO_MARK of the resolver's listening sockets: sandbox DNS to the gateway is accepted only
 * when it would reach a socket carrying it, so that with the daemon down no other host
 * service bound to *:53 answers sandboxes outside their allow-lists. (A socket mark only
 * marks what that socket sends; it matters to routing only where fwmark rules use this value.)
 */
export const RESOLVER_SOCKET_MARK = 0x746e0035;

/** Largest DNS query the resolver takes (over UDP or TCP; a stub's is a few hundred bytes, more is data); larger UDP ones are dropped in the kernel. */
export const MAX_DNS_QUERY_BYTES = 4096;
