// The instance's nftables table as data (libnftables JSON), built from config and the list
// of live sandboxes. Pure: no kernel access, golden-tested.
//
// Per-sandbox state lives only in set elements (veth_src, macvlan_src), never in rules, so
// the rule count and the per-packet cost stay flat however many sandboxes exist, and
// create/delete is a one-element transaction.
import { Config } from '../config/schema.js';
import { EgressRule, parseEgressRule } from './egress-rule.js';
import { formatIPv4, parseCidr } from './ipv4.js';
import { InstanceNames, instanceNames } from './names.js';
import type { NftCommand } from '../kernel/nft.js';

export type SandboxMode = 'veth' | 'macvlan';

/** What the ruleset needs to know of one sandbox. */
export interface SandboxAddressing {
  ip: string;
  mac: string;
  mode: SandboxMode;
  /** Host end of the veth (veth mode). */
  hostLink: string;
}

/**
 * Destinations a sandbox never reaches unless the operator opens them (allowCidrs):
 * "this network", RFC 1918 private space, shared address space (CGNAT), loopback,
 * link-local (cloud metadata at 169.254.169.254), IETF protocol assignments, benchmarking,
 * multicast, and reserved space including the limited broadcast address.
 */
export const DENIED_RANGES = [
  '0.0.0.0/8', '10.0.0.0/8', '100.64.0.0/10', '127.0.0.0/8', '169.254.0.0/16', '172.16.0.0/12',
  '192.0.0.0/24', '192.168.0.0/16', '198.18.0.0/15', '224.0.0.0/4', '240.0.0.0/4',
];

type Expr = Record<string, unknown>;

const meta = (key: string) => ({ meta: { key } });
const payload = (protocol: string, field: string) => ({ payload: { protocol, field } });
const match = (left: unknown, right: unknown, op = '=='): Expr => ({ match: { op, left, right } });
const prefixValue = (cidr: string): unknown => {
  const c = parseCidr(cidr);
  return c.prefix === 32 ? formatIPv4(c.network) : { prefix: { addr: formatIPv4(c.network), len: c.prefix } };
};
const ctState = (states: string[]): Expr => match({ ct: { key: 'state' } }, states, 'in');

/** Matches for one allow/deny entry: destination prefix, protocol, ports. */
export function egressRuleMatch(r: EgressRule): Expr[] {
  const out: Expr[] = [match(payload('ip', 'daddr'), prefixValue(`${formatIPv4(r.cidr.network)}/${r.cidr.prefix}`))];
  if (r.proto) out.push(match(meta('l4proto'), r.proto));
  else if (r.ports) out.push(match(meta('l4proto'), { set: ['tcp', 'udp'] }));
  if (r.ports) {
    out.push(match(payload('th', 'dport'), r.ports.from === r.ports.to ? r.ports.from : { range: [r.ports.from, r.ports.to] }));
  }
  return out;
}

export class RulesetBuilder {
  readonly names: InstanceNames;
  private readonly allow: EgressRule[];
  private readonly deny: EgressRule[];

  constructor(private readonly config: Config) {
    this.names = instanceNames(config.instance);
    this.allow = config.allowCidrs.map((s) => parseEgressRule(s, 'allowCidrs'));
    this.deny = config.denyCidrs.map((s) => parseEgressRule(s, 'denyCidrs'));
  }

  private get t() {
    return { family: 'inet', table: this.names.table };
  }

  private chain(name: string, hook?: { type: string; hook: string; prio: number }): NftCommand {
    return { add: { chain: { ...this.t, name, ...(hook ? { ...hook, policy: 'accept' } : {}) } } };
  }

  private rule(chain: string, expr: Expr[], comment?: string): NftCommand {
    return { add: { rule: { ...this.t, chain, expr, ...(comment ? { comment } : {}) } } };
  }

  /** Set elements that admit one sandbox's traffic (its address on its own link or MAC). */
  sandboxElements(s: SandboxAddressing): { set: string; elem: unknown } {
    return s.mode === 'veth'
      ? { set: 'veth_src', elem: { concat: [s.hostLink, s.ip] } }
      : { set: 'macvlan_src', elem: { concat: [s.mac, s.ip] } };
  }

  addSandbox(s: SandboxAddressing): NftCommand[] {
    const e = this.sandboxElements(s);
    return [{ add: { element: { ...this.t, name: e.set, elem: [e.elem] } } }];
  }

  removeSandbox(s: SandboxAddressing): NftCommand[] {
    const e = this.sandboxElements(s);
    return [{ delete: { element: { ...this.t, name: e.set, elem: [e.elem] } } }];
  }

  /** Replaces both sets' contents with exactly the given sandboxes (gc, reconcile). */
  resetSandboxes(sandboxes: SandboxAddressing[]): NftCommand[] {
    const cmds: NftCommand[] = [
      { flush: { set: { ...this.t, name: 'veth_src' } } },
      { flush: { set: { ...this.t, name: 'macvlan_src' } } },
    ];
    return cmds.concat(this.elementCommands(sandboxes));
  }

  private elementCommands(sandboxes: SandboxAddressing[]): NftCommand[] {
    const bySet = new Map<string, unknown[]>();
    for (const s of sandboxes) {
      const e = this.sandboxElements(s);
      bySet.set(e.set, [...(bySet.get(e.set) ?? []), e.elem]);
    }
    return [...bySet].map(([name, elem]) => ({ add: { element: { ...this.t, name, elem } } }));
  }

  /** Removes the instance's table if present (down). */
  deleteTable(): NftCommand[] {
    const table = { family: 'inet', name: this.names.table };
    return [{ add: { table } }, { delete: { table } }];
  }

  /**
   * The whole table, replacing any previous version atomically (add + delete + add in one
   * transaction): `up` twice gives the same ruleset, and live sandboxes keep their elements.
   */
  fullTable(sandboxes: SandboxAddressing[]): NftCommand[] {
    const n = this.names;
    const table = { family: 'inet', name: n.table };
    const all = `${n.linkPrefix}*`;
    const subnet = prefixValue(this.config.subnet);
    const cmds: NftCommand[] = [{ add: { table } }, { delete: { table } }, { add: { table } }];

    cmds.push({ add: { set: { ...this.t, name: 'veth_src', type: ['ifname', 'ipv4_addr'], comment: 'host link . address of each veth sandbox' } } });
    cmds.push({ add: { set: { ...this.t, name: 'macvlan_src', type: ['ether_addr', 'ipv4_addr'], comment: 'MAC . address of each macvlan sandbox' } } });

    cmds.push(this.chain('forward', { type: 'filter', hook: 'forward', prio: 0 }));
    cmds.push(this.chain('input', { type: 'filter', hook: 'input', prio: 0 }));
    cmds.push(this.chain('postrouting', { type: 'nat', hook: 'postrouting', prio: 100 }));
    for (const c of ['from_sandbox', 'to_sandbox', 'sandbox_to_host', 'source_check', 'deny']) cmds.push(this.chain(c));

    // Dispatch: only traffic on this instance's links is judged; everything else passes untouched.
    cmds.push(this.rule('forward', [match(meta('iifname'), all), { jump: { target: 'from_sandbox' } }]));
    cmds.push(this.rule('forward', [match(meta('oifname'), all), { jump: { target: 'to_sandbox' } }]));
    cmds.push(this.rule('input', [match(meta('iifname'), all), { jump: { target: 'sandbox_to_host' } }]));

    // A packet from a sandbox must carry that sandbox's own address, on its own link (veth)
    // or from its own MAC (macvlan), whatever the sandbox did to its interfaces.
    cmds.push(this.rule('source_check', [match(meta('nfproto'), 'ipv6'), { counter: null }, { drop: null }], 'no IPv6 from sandboxes'));
    cmds.push(this.rule('source_check', [
      match(meta('iifname'), `${n.sandboxLinkPrefix}*`),
      match({ concat: [meta('iifname'), payload('ip', 'saddr')] }, '@veth_src', '!='),
      { counter: null }, { drop: null },
    ], 'spoofed source (veth)'));
    cmds.push(this.rule('source_check', [
      match(meta('iifname'), n.gatewayLink),
      match({ concat: [payload('ether', 'saddr'), payload('ip', 'saddr')] }, '@macvlan_src', '!='),
      { counter: null }, { drop: null },
    ], 'spoofed source (macvlan)'));
    cmds.push(this.rule('source_check', [ctState(['invalid']), { counter: null }, { drop: null }], 'invalid conntrack state'));

    // Sandbox -> anywhere but the host.
    cmds.push(this.rule('from_sandbox', [{ jump: { target: 'source_check' } }]));
    cmds.push(this.rule('from_sandbox', [ctState(['established', 'related']), { accept: null }]));
    for (const r of this.deny) cmds.push(this.rule('from_sandbox', [...egressRuleMatch(r), { counter: null }, { jump: { target: 'deny' } }], `denyCidrs ${r.text}`));
    for (const r of this.allow) cmds.push(this.rule('from_sandbox', [...egressRuleMatch(r), { counter: null }, { accept: null }], `allowCidrs ${r.text}`));
    cmds.push(this.rule('from_sandbox', [match(payload('ip', 'daddr'), subnet), { counter: null }, { jump: { target: 'deny' } }], 'other sandboxes'));
    cmds.push(this.rule('from_sandbox', [match(payload('ip', 'daddr'), { set: DENIED_RANGES.map(prefixValue) }), { counter: null }, { jump: { target: 'deny' } }], 'private, metadata, multicast, reserved'));
    cmds.push(this.rule('from_sandbox', [{ counter: null }, { accept: null }], 'internet'));

    // Anywhere -> sandbox (forwarded): only replies. The host's own connections into a
    // sandbox are locally generated (output), so the orchestrator can still reach it.
    cmds.push(this.rule('to_sandbox', [ctState(['established', 'related']), { accept: null }]));
    cmds.push(this.rule('to_sandbox', [{ counter: null }, { drop: null }], 'no new connections into sandboxes from elsewhere'));

    // Sandbox -> host: DNS on the gateway, replies to the host's own connections, nothing else.
    cmds.push(this.rule('sandbox_to_host', [{ jump: { target: 'source_check' } }]));
    cmds.push(this.rule('sandbox_to_host', [ctState(['established', 'related']), { accept: null }]));
    cmds.push(this.rule('sandbox_to_host', [
      match(payload('ip', 'daddr'), this.config.gateway), match(meta('l4proto'), { set: ['udp', 'tcp'] }), match(payload('th', 'dport'), 53), { accept: null },
    ], 'DNS on the gateway'));
    cmds.push(this.rule('sandbox_to_host', [{ counter: null }, { jump: { target: 'deny' } }], 'host services'));

    // Fail fast: clients get a reset or an unreachable in microseconds instead of hanging.
    cmds.push(this.rule('deny', [match(meta('l4proto'), 'tcp'), { reject: { type: 'tcp reset' } }]));
    cmds.push(this.rule('deny', [{ reject: { type: 'icmpx', expr: 'admin-prohibited' } }]));

    // NAT to the internet; never between sandboxes or towards them.
    cmds.push(this.rule('postrouting', [
      match(payload('ip', 'saddr'), subnet), match(payload('ip', 'daddr'), subnet, '!='), match(meta('oifname'), all, '!='), { masquerade: null },
    ], 'sandboxes to the internet'));

    return cmds.concat(this.elementCommands(sandboxes));
  }
}
