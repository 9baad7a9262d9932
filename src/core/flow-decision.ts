// What the instance's from_sandbox chain decides for one new flow, computed in userspace
// with the same order (ruleset.ts): used to cut existing connections that a new policy
// forbids, and to name the rule behind a decision.
import type { FilterConfig } from './filter-config.js';
import { EgressRule, parseEgressRule } from './egress-rule.js';
import { cidrContains, cidrLast, parseCidr, parseIPv4 } from './ipv4.js';
import { Closed, decideEgress } from './policy-compile.js';
import { DENIED_RANGES, METADATA_ADDRESS } from './denied-ranges.js';
import { DenyReason } from './deny-reasons.js';
import type { Policy } from './policy.js';
import { SandboxSpec, portRanges } from './sandbox-elements.js';

export interface Flow {
  daddr: string;
  /** IP protocol number (6 tcp, 17 udp, 1 icmp). */
  proto: number;
  dport: number;
}

/** `namePending`: let open pending its name (core/name-check.ts): a connection the gate judges by its first flight. */
export type FlowDecision = { verdict: 'allow'; by: string; namePending?: true } | { verdict: 'deny'; reason: DenyReason; by: string };

const PROTO_NUM: Record<string, number> = { icmp: 1, tcp: 6, udp: 17 };

function ruleMatches(r: EgressRule, f: Flow, daddr: number): boolean {
  if (!cidrContains(r.cidr, daddr)) return false;
  if (r.proto && PROTO_NUM[r.proto] !== f.proto) return false;
  if (!r.proto && r.ports && f.proto !== 6 && f.proto !== 17) return false;
  if (r.ports && (f.dport < r.ports.from || f.dport > r.ports.to)) return false;
  return true;
}

export class FlowJudge {
  private readonly allow: EgressRule[];
  private readonly deny: EgressRule[];
  private readonly denied = DENIED_RANGES.map((c) => parseCidr(c));
  private readonly subnet;
  private readonly closed: Closed;
  private readonly metadata = parseIPv4(METADATA_ADDRESS);

  constructor(private readonly config: FilterConfig) {
    this.allow = config.allowCidrs.map((s) => parseEgressRule(s));
    this.deny = config.denyCidrs.map((s) => parseEgressRule(s));
    this.subnet = parseCidr(config.subnet);
    this.closed = [this.subnet.network, cidrLast(this.subnet)];
  }

  /**
   * The decision for a new flow from `s`, whose group peers are `peers`; report mode is not
   * applied. `resolved` says whether the sandbox's resolver answers currently admit an
   * address (the dns_allowed set); it matters only under a domain allow-list.
   */
  decide(s: SandboxSpec, peers: SandboxSpec[], f: Flow, resolved: (daddr: string) => boolean = () => false): FlowDecision {
    const d = parseIPv4(f.daddr);
    for (const r of this.deny) if (ruleMatches(r, f, d)) return { verdict: 'deny', reason: 'config', by: `denyCidrs ${r.text}` };
    if (!this.config.allowMetadata && d === this.metadata) return { verdict: 'deny', reason: 'metadata', by: 'cloud metadata' };
    if ((f.proto === 6 || f.proto === 17) && (f.dport === 53 || f.dport === 853)) return { verdict: 'deny', reason: 'dns', by: 'DNS elsewhere than the gateway' };
    const p = decideEgress(s.policy.allow, s.policy.deny, d, f.proto, f.dport, this.closed);
    if (p) return p.verdict === 'allow' ? { verdict: 'allow', by: `egress.allow ${p.rule}` } : { verdict: 'deny', reason: 'policy', by: `egress.deny ${p.rule}` };
    const peer = peers.find((x) => x.ip === f.daddr);
    if (peer && portRanges(peer.policy.group?.ports).some((r) => (r.proto < 0 || r.proto === f.proto) && f.dport >= r.from && f.dport <= r.to)) {
      return { verdict: 'allow', by: `group ${peer.policy.group?.name}` };
    }
    if (cidrContains(this.subnet, d)) return { verdict: 'deny', reason: 'sandbox', by: 'other sandboxes' };
    for (const r of this.allow) if (ruleMatches(r, f, d)) return { verdict: 'allow', by: `allowCidrs ${r.text}` };
    if (this.denied.some((c) => cidrContains(c, d))) return { verdict: 'deny', reason: 'private', by: 'private, metadata, multicast, reserved' };
    if (s.policy.domains) {
      if (!resolved(f.daddr)) return { verdict: 'deny', reason: 'domain', by: 'egress.domains' };
      if (s.policy.verifyNames) {
        // Name checks (core/name-check.ts): UDP names nothing unless its port is listed; TCP opens pending its first flight.
        if (f.proto === 17 && !unnamedPort(s.policy, f)) return { verdict: 'deny', reason: 'unnamed_udp', by: 'UDP to an admitted address names nothing' };
        if (f.proto === 6) return { verdict: 'allow', by: 'name pending: answered for an allowed name, to be named on the first flight', namePending: true };
      }
      return { verdict: 'allow', by: 'answered for an allowed name' };
    }
    if (!s.policy.internet) return { verdict: 'deny', reason: 'internet', by: 'egress.internet false' };
    if (s.policy.verifyNames) {
      if (f.proto === 17 && !unnamedPort(s.policy, f)) return { verdict: 'deny', reason: 'unnamed_udp', by: 'UDP to the internet names nothing' };
      if (f.proto !== 6 && f.proto !== 17) return { verdict: 'deny', reason: 'unnamed_proto', by: 'another protocol to the internet names nothing' };
      if (f.proto === 6) return { verdict: 'allow', by: 'name pending: to be named on the first flight as the sandbox\'s DNS answered', namePending: true };
    }
    return { verdict: 'allow', by: 'internet' };
  }
}

/** Whether `f` goes to a port where the policy lets a checked connection name nothing. */
const unnamedPort = (p: Policy, f: Flow) => portRanges(p.unnamedPorts ?? []).some((r) => (r.proto < 0 || r.proto === f.proto) && f.dport >= r.from && f.dport <= r.to);
