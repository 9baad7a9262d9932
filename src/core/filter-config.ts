// What the ruleset and the userspace flow decision need of an instance's configuration: a
// plain interface here, so that the pure core depends on nothing outside it. The resolved
// `Config` (config/schema.ts) has these fields and is passed as is.
export interface FilterConfig {
  instance: string;
  subnet: string;
  gateway: string;
  allowCidrs: string[];
  denyCidrs: string[];
  allowMetadata: boolean;
  denyAction: 'reject' | 'drop';
  logGroup: number;
  /** Ceiling of DNS packets per second each sandbox may send to the gateway (kernel-metered). */
  dnsPacketsPerSecond: number;
  /** Ceiling of new connections per second each sandbox may open through the host (kernel-metered). */
  newConnsPerSecond: number;
}
