// A sandbox's limits and accounting as kernel state, keyed by the sandbox's address, so
// the rules stay the same whatever the number of sandboxes (one lookup per packet and limit).
//
// Accounting: elements of the sets acct_out, acct_in, acct_blocked, each element with its
// own counter (the sets' counter template): not named counter objects, since libnftables
// 1.0.6 reads every named object of the table on each transaction (a cost that grows with
// the number of sandboxes: 2.7 ms per change at 4,000 counters against 0.18 ms with none).
//
// Limits: named objects reached through maps, made only for sandboxes that have limits:
//   limits    lp_/ln_<ip>_<params>          packets, new connections per second (bandwidth
//                                           is shaped by qdiscs instead: core/shaping.ts)
//   quotas    qe_<ip>, qi_<ip>              bytes out / in over its lifetime
//   tiers     conns_<max>                   concurrent connections: one chain and counting
//                                           set per distinct maxConnections value in use,
//                                           since nftables' "ct count" takes a constant;
//                                           made once, never removed with a sandbox
//
// Limit objects carry their parameters in their name: the kernel does not update a limit in
// place, so a change is a new object. Quotas keep their name: the kernel updates them in
// place and keeps what was used.
import type { SandboxSpec } from './sandbox-spec.js';

/** A named object of one sandbox, reached from `map` by the sandbox's address `ip`. */
export type SandboxObject = { ip: string } & (
  | { kind: 'limit'; name: string; map: 'limit_packets' | 'limit_newconns'; rate: number; burst: number; unit: 'packets' }
  | { kind: 'quota'; name: string; map: 'quota_egress' | 'quota_ingress'; bytes: number; used?: number }
  /** `create`: the tier is not in the kernel yet (its set must be made with its rule, in one batch). */
  | { kind: 'tier'; name: string; map: 'conn_tier'; max: number; create?: boolean });

/** Sets of sandbox addresses, each element with its own counter. */
export const ACCOUNTING_SETS = {
  acct_out: { type: 'ipv4_addr', stmt: [{ counter: null }], comment: 'sandboxes, each with a counter of what it sent' },
  acct_in: { type: 'ipv4_addr', stmt: [{ counter: null }], comment: 'sandboxes, each with a counter of what it received' },
  acct_blocked: { type: 'ipv4_addr', stmt: [{ counter: null }], comment: 'sandboxes, each with a counter of its blocked packets' },
} as const;

/** Maps from a sandbox address to its objects (and the connection tier verdict map). */
export const LIMIT_MAPS = {
  limit_packets: { type: 'ipv4_addr', map: 'limit', comment: 'sandbox -> packets per second limit' },
  limit_newconns: { type: 'ipv4_addr', map: 'limit', comment: 'sandbox -> new connections per second limit' },
  quota_egress: { type: 'ipv4_addr', map: 'quota', comment: 'sandbox -> upload quota' },
  quota_ingress: { type: 'ipv4_addr', map: 'quota', comment: 'sandbox -> download quota' },
  conn_tier: { type: 'ipv4_addr', map: 'verdict', comment: 'sandbox -> chain counting its connections against its maxConnections' },
} as const;

export type LimitMap = keyof typeof LIMIT_MAPS;

/** The address as 8 hex digits: object names must be short and unique per sandbox. */
export function ipHex(ip: string): string {
  return ip.split('.').map((o) => Number(o).toString(16).padStart(2, '0')).join('');
}

export function quotaNames(ip: string): { egress: string; ingress: string } {
  const h = ipHex(ip);
  return { egress: `qe_${h}`, ingress: `qi_${h}` };
}

export const tierChain = (max: number): string => `conns_${max}`;
export const tierSet = (max: number): string => `connc_${max}`;

/**
 * The sandbox's objects. `used` carries quota consumption (by object name) into a rebuilt
 * table, so `up` does not hand out a fresh quota.
 */
export function sandboxObjects(s: SandboxSpec, used: ReadonlyMap<string, number> = new Map()): SandboxObject[] {
  const ip = s.ip;
  const h = ipHex(ip);
  const l = s.policy.limits;
  const out: SandboxObject[] = [];
  if (l.packetsPerSecond) out.push({ ip, kind: 'limit', name: `lp_${h}_${l.packetsPerSecond}_${l.packetsBurst}`, map: 'limit_packets', rate: l.packetsPerSecond, burst: l.packetsBurst!, unit: 'packets' });
  if (l.newConnsPerSecond) out.push({ ip, kind: 'limit', name: `ln_${h}_${l.newConnsPerSecond}_${l.newConnsBurst}`, map: 'limit_newconns', rate: l.newConnsPerSecond, burst: l.newConnsBurst!, unit: 'packets' });
  const q = quotaNames(ip);
  // Never more used than the quota holds: the kernel refuses a quota whose use exceeds it
  // (a lowered default would otherwise make the whole rebuild fail).
  const usedOf = (name: string, bytes: number) => (used.has(name) ? { used: Math.min(used.get(name)!, bytes) } : {});
  if (l.egressBytes) out.push({ ip, kind: 'quota', name: q.egress, map: 'quota_egress', bytes: l.egressBytes, ...usedOf(q.egress, l.egressBytes) });
  if (l.ingressBytes) out.push({ ip, kind: 'quota', name: q.ingress, map: 'quota_ingress', bytes: l.ingressBytes, ...usedOf(q.ingress, l.ingressBytes) });
  if (l.maxConnections) out.push({ ip, kind: 'tier', name: tierChain(l.maxConnections), map: 'conn_tier', max: l.maxConnections });
  return out;
}

/** The map element pointing the sandbox's address at the object. */
export function objectElement(o: SandboxObject): { set: LimitMap; elem: unknown } {
  return { set: o.map, elem: [o.ip, o.kind === 'tier' ? { jump: { target: o.name } } : o.name] };
}

/** What identifies an object's kernel state: the same key in two lists means nothing to change. */
export function objectKey(o: SandboxObject): string {
  if (o.kind === 'quota') return `quota:${o.name}:${o.bytes}`;
  return `${o.kind}:${o.name}`;
}
