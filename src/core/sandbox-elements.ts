// Everything the kernel holds for one sandbox, as set and map elements of the instance's
// table: admission (source address on its link or MAC), its compiled egress policy, group
// reachability with its peers, inbound restrictions, report mode. Pure: the same sandbox
// and peers always give the same elements, so a policy change is "delete the old list, add
// the new one" in one transaction, and removal deletes exactly what creation added.
import { formatIPv4 } from './ipv4.js';
import { PortRange } from './policy.js';
import { Closed, compileEgress } from './policy-compile.js';
import { ACCOUNTING_SETS, LIMIT_MAPS } from './sandbox-limits.js';
import { PUBLISH_SETS, publishElements } from './publish-elements.js';

import { LINK_MODES, SandboxMode } from './link-modes.js';
import type { SandboxSpec } from './sandbox-spec.js';

export type { SandboxMode };

export type { SandboxSpec };

/** Sets and maps of the instance table that hold per-sandbox elements, with their types. */
export const SANDBOX_SETS = {
  veth_src: { type: ['ifname', 'ether_addr', 'ipv4_addr'], comment: 'host link . MAC . address of each veth sandbox' },
  macvlan_src: { type: ['ether_addr', 'ipv4_addr'], comment: 'MAC . address of each macvlan sandbox' },
  sandbox_self: { type: ['ipv4_addr', 'ipv4_addr'], comment: 'address . address of each sandbox: is it an endpoint of the flow a related packet belongs to' },
  egress_policy: { type: ['ipv4_addr', 'ipv4_addr', 'inet_proto', 'inet_service'], map: 'verdict', flags: ['interval'], comment: 'sandbox . destination . protocol . port: per-sandbox allow/deny' },
  group_pairs: { type: ['ipv4_addr', 'ipv4_addr', 'inet_proto', 'inet_service'], flags: ['interval'], comment: 'source . destination . protocol . port open between sandboxes of one group' },
  no_internet: { type: 'ipv4_addr', comment: 'sandboxes without public internet' },
  report_mode: { type: 'ipv4_addr', comment: 'sandboxes whose denials are only logged' },
  inbound_closed: { type: 'ipv4_addr', comment: 'sandboxes the host may not connect into' },
  inbound_only: { type: 'ipv4_addr', comment: 'sandboxes the host may connect into only on inbound_ports' },
  inbound_ports: { type: ['ipv4_addr', 'inet_proto', 'inet_service'], flags: ['interval'], comment: 'sandbox . protocol . port the host may connect to' },
  domain_mode: { type: 'ipv4_addr', comment: 'sandboxes with a domain allow-list: internet only via dns_allowed' },
  name_check: { type: 'ipv4_addr', comment: 'sandboxes whose connections must name first an allowed domain (to admitted addresses) or, without a list, what their DNS answered' },
  unnamed_ports: { type: ['ipv4_addr', 'inet_proto', 'inet_service'], flags: ['interval'], comment: 'sandbox . protocol . port where a checked connection may name nothing' },
  ...ACCOUNTING_SETS,
  ...LIMIT_MAPS,
  ...PUBLISH_SETS,
} as const;

/**
 * Addresses a sandbox's own DNS answers gave for its allowed names, with the answer's TTL
 * as timeout: written by the DNS forwarder (not derived from the policy), so it is not a
 * per-sandbox element set like the ones above.
 */
export const DNS_ALLOWED_SET = { name: 'dns_allowed', type: ['ipv4_addr', 'ipv4_addr'], flags: ['timeout'], comment: 'sandbox . address from an allowed DNS answer, until its TTL' } as const;

export type SandboxSet = keyof typeof SANDBOX_SETS;

export interface Element {
  set: SandboxSet;
  elem: unknown;
}

const range = (lo: number, hi: number): unknown => (lo === hi ? lo : { range: [lo, hi] });
const addrRange = (lo: number, hi: number): unknown => (lo === hi ? formatIPv4(lo) : { range: [formatIPv4(lo), formatIPv4(hi)] });
const PROTO = { tcp: 6, udp: 17 } as const;

/** Port specs as disjoint (proto, from, to) ranges: overlapping interval elements are refused by the kernel. */
export function portRanges(ports: PortRange[] | undefined): { proto: number; from: number; to: number }[] {
  if (!ports) return [{ proto: -1, from: 0, to: 65535 }];
  const out: { proto: number; from: number; to: number }[] = [];
  for (const proto of [6, 17]) {
    const rs = ports.filter((p) => !p.proto || PROTO[p.proto] === proto).map((p) => [p.from, p.to]).sort((a, b) => a[0] - b[0]);
    let cur: number[] | undefined;
    for (const r of rs) {
      if (cur && r[0] <= cur[1] + 1) cur[1] = Math.max(cur[1], r[1]);
      else {
        if (cur) out.push({ proto, from: cur[0], to: cur[1] });
        cur = [...r];
      }
    }
    if (cur) out.push({ proto, from: cur[0], to: cur[1] });
  }
  return out;
}

/** Group reachability from `src` to `dst` (on dst's group ports). */
function pair(src: SandboxSpec, dst: SandboxSpec): Element[] {
  return portRanges(dst.policy.group?.ports).map((r) => ({
    set: 'group_pairs' as const,
    elem: { concat: [src.ip, dst.ip, r.proto < 0 ? range(0, 255) : r.proto, range(r.from, r.to)] },
  }));
}

/** Peers in the same group as `s` (excluding `s`). */
export function groupPeers(s: SandboxSpec, all: Iterable<SandboxSpec>): SandboxSpec[] {
  const g = s.policy.group?.name;
  if (!g) return [];
  return [...all].filter((p) => p.ip !== s.ip && p.policy.group?.name === g);
}

/**
 * The elements owned by `s`: its own, plus group pairs in both directions with `peers`
 * (pairs belong to both ends; the caller passes peers that already exist). `instanceSubnet`
 * is the range its allows never open (see policy-compile.ts).
 */
export function sandboxElements(s: SandboxSpec, peers: SandboxSpec[] = [], instanceSubnet?: Closed): Element[] {
  const out: Element[] = [];
  out.push(LINK_MODES[s.mode].admission(s));
  // Accounting: every sandbox, its own counter in each set.
  out.push({ set: 'acct_out', elem: s.ip }, { set: 'acct_in', elem: s.ip }, { set: 'acct_blocked', elem: s.ip });
  out.push({ set: 'sandbox_self', elem: { concat: [s.ip, s.ip] } });
  const p = s.policy;
  for (const c of compileEgress(p.allow, p.deny, instanceSubnet)) {
    out.push({
      set: 'egress_policy',
      elem: [{ concat: [s.ip, addrRange(c.dst[0], c.dst[1]), range(c.proto[0], c.proto[1]), range(c.port[0], c.port[1])] }, c.verdict === 'allow' ? { accept: null } : { jump: { target: 'deny_policy' } }],
    });
  }
  if (!p.internet) out.push({ set: 'no_internet', elem: s.ip });
  if (p.domains) out.push({ set: 'domain_mode', elem: s.ip });
  if (p.verifyNames) {
    out.push({ set: 'name_check', elem: s.ip });
    // Only listed ports: portRanges reads "no list" as every port.
    if (p.unnamedPorts && p.unnamedPorts.length > 0) {
      for (const r of portRanges(p.unnamedPorts)) out.push({ set: 'unnamed_ports', elem: { concat: [s.ip, r.proto, range(r.from, r.to)] } });
    }
  }
  if (p.mode === 'report') out.push({ set: 'report_mode', elem: s.ip });
  if (!p.inbound.enabled) out.push({ set: 'inbound_closed', elem: s.ip });
  else if (p.inbound.ports) {
    out.push({ set: 'inbound_only', elem: s.ip });
    for (const r of portRanges(p.inbound.ports)) out.push({ set: 'inbound_ports', elem: { concat: [s.ip, r.proto, range(r.from, r.to)] } });
  }
  out.push(...publishElements(s));
  for (const peer of peers) out.push(...pair(s, peer), ...pair(peer, s));
  return out;
}

/** Groups elements by set, in a stable order, for add/delete commands. */
export function bySet(elements: Element[]): Map<SandboxSet, unknown[]> {
  const m = new Map<SandboxSet, unknown[]>();
  for (const e of elements) {
    const list = m.get(e.set);
    if (list) list.push(e.elem);
    else m.set(e.set, [e.elem]);
  }
  return m;
}
