// Why the filter denies a packet: each reason has a chain deny_<reason> in the ruleset and is
// the NFLOG prefix "tn:<reason>", and events, metrics and report mode read these lists.
/** Denial reasons: each has a chain deny_<reason> and is the NFLOG prefix "tn:<reason>". */
export const DENY_REASONS = {
  config: 'an instance denyCidrs entry',
  metadata: 'the cloud metadata address',
  policy: 'the sandbox policy (egress.deny)',
  sandbox: 'another sandbox',
  private: 'private, link-local, multicast or reserved space',
  internet: 'the sandbox policy (egress.internet false)',
  host: 'a host service',
  inbound: 'the sandbox policy (inbound)',
  dns: 'a DNS server other than the gateway',
  domain: 'the sandbox policy (egress.domains): no allowed name resolved to it',
  packets: 'over limits.packetsPerSecond',
  connrate: 'over limits.newConnsPerSecond',
  connections: 'over limits.maxConnections',
  quota_out: 'limits.egressBytes spent',
  quota_in: 'limits.ingressBytes spent',
  dns_flood: 'over dnsPacketsPerSecond (DNS packets to the gateway)',
  conn_flood: 'over newConnsPerSecond (the instance\'s ceiling of new connections a sandbox opens)',
  unnamed_udp: 'the sandbox policy (egress.verifyNames): UDP where names are checked names nothing (QUIC falls back to TCP)',
  unnamed_proto: 'the sandbox policy (egress.verifyNames without egress.domains): a protocol other than TCP and UDP names nothing (ICMP included)',
} as const;
export type DenyReason = keyof typeof DENY_REASONS;

/**
 * Denials the daemon decides rather than a chain of the filter (the name gate's reader,
 * core/name-check.ts): events and metrics only, no deny chain or NFLOG prefix.
 */
export const DAEMON_REASONS = {
  name_mismatch: 'the sandbox policy (egress.verifyNames): the connection named, in its first flight, a domain not allowed (or, without egress.domains, not answered with its address), or none',
  name_unjudged: 'no verdict on a name-checked connection: the daemon was down or its name queue full, so its packets were dropped (fail closed)',
} as const;
/** What a denial event can give as its reason. */
export type EventReason = DenyReason | keyof typeof DAEMON_REASONS;

/**
 * Limits, not policy: their excess is dropped (a reset would end the connection, and
 * traffic over a rate is to be slowed, not refused), and report mode does not lift them.
 */
export const LIMIT_REASONS: DenyReason[] = ['packets', 'connrate', 'connections', 'quota_out', 'quota_in', 'dns_flood', 'conn_flood'];

/** Denials whose sandbox is the packet's destination (the others are about its source). */
export const INBOUND_REASONS: DenyReason[] = ['inbound', 'quota_in'];

/** Denials report mode does not lift. */
export const HARD_REASONS: DenyReason[] = ['config', 'metadata', 'host', 'dns', ...LIMIT_REASONS];
