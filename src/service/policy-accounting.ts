// What a live sandbox may do and what it did: its policy (get, set in one transaction, and
// the cut of flows the new policy forbids, in both directions), the DNS gate's view of it
// (by address and by id) and the admissions its answers open, which rule a logged denial
// belongs to, and its accounting.
import { ToastnetError } from '../errors.js';
import { cidrContains, parseCidr, parseIPv4 } from '../core/ipv4.js';
import { isPoolMember } from '../core/names.js';
import type { DenyReason } from '../core/deny-reasons.js';
import { SandboxSpec, portRanges } from '../core/sandbox-elements.js';
import { sandboxObjects } from '../core/sandbox-limits.js';
import { Conntrack, ConntrackFlow } from '../kernel/conntrack.js';
import type { LoggedPacket } from '../kernel/nflog-codec.js';
import type { GateSandbox } from '../dns/gate.js';
import type { Policy } from '../core/policy.js';
import type { PolicyView } from '../api/types.js';
import type { InstanceState } from './instance-state.js';
import type { LiveSpec } from './live-sandboxes.js';
import type { Attribution } from './events.js';
import { attributeDenial } from './denial-attribution.js';
import { SandboxStats, readDenialCounts, readStats } from './accounting.js';

/** What the DNS gate knows of a live sandbox. */
function gateView(found: { name: string; spec: LiveSpec } | undefined): GateSandbox | undefined {
  return found ? { id: found.spec.id, name: found.name, ip: found.spec.ip, policy: found.spec.policy } : undefined;
}

export class PolicyAndAccounting {
  constructor(private readonly s: InstanceState) {}

  /** The sandbox at `ip`, for the DNS gate. */
  sandboxByIp(ip: string): GateSandbox | undefined {
    return gateView(this.s.live.at(ip));
  }

  /** The sandbox with row id `id` as it is now, or undefined once removed (ids are never reused), for the DNS gate. */
  sandboxById(id: number): GateSandbox | undefined {
    return gateView(this.s.live.byId(id));
  }

  /** Admits sandbox `s` to addresses of an allowed name for `ttl` seconds (DnsAdmissions.admit). */
  admitResolved(s: Pick<GateSandbox, 'id' | 'ip'>, allAddresses: string[], ttl: number, now = Date.now()): void {
    // The sandbox may have gone while its query was upstream, and its address gone to
    // another: admit only for the very sandbox that asked.
    if (this.s.live.at(s.ip)?.spec.id !== s.id) return;
    this.s.admissions.admit(s.ip, allAddresses, ttl, now);
  }

  /** Which sandbox a logged denial belongs to, and the rule that decided (events). */
  attribute(p: LoggedPacket, reason: DenyReason): Attribution | undefined {
    return attributeDenial(this.s.live, this.s.judge, p, reason);
  }

  policyGet(name: string): PolicyView {
    const r = isPoolMember(name) ? undefined : this.s.store.getByName(name);
    if (!r) throw new ToastnetError('not_found', `no sandbox named "${name}"`);
    return { name, policy: r.policy, effective: this.s.effectivePolicy(r.policy) };
  }

  /**
   * Replaces a running sandbox's policy in one nftables transaction (old elements out, new
   * in: no moment where more is open than either policy allows).
   */
  policySet(name: string, doc: unknown): PolicyView {
    const r = this.s.store.getByName(name);
    const old = this.s.live.get(name);
    if (!r || !old) throw new ToastnetError('not_found', `no sandbox named "${name}"`);
    const { own, effective, policy } = this.s.checkedPolicy(doc);
    const next = this.s.spec(r, effective, policy);
    const before = this.s.live.elementsOf(name, old);
    const after = this.s.live.elementsOf(name, next);
    const nextObjects = this.s.objectsOf(next);
    // Bandwidth first (a class changed in place: no moment without a limit), then the rest in
    // one nftables transaction; if that fails, the bandwidth goes back too.
    const unshape = this.s.shapers.change(old, next);
    try {
      this.s.nft.apply(this.s.rules.replace(before, after, sandboxObjects(old), nextObjects), 'replace policy');
    } catch (err) {
      try {
        unshape();
      } catch {
        // the original error matters more
      }
      throw err;
    }
    this.s.noteTiers(nextObjects);
    // Addresses admitted for names the new list still allows stay open; any other change
    // (a name dropped, the list removed) forgets them, since dns_allowed bypasses no_internet.
    const kept = next.policy.domains;
    if (old.policy.domains && !(kept && old.policy.domains.every((d) => kept.includes(d)))) this.s.admissions.forgetAll(next.ip);
    this.s.live.set(name, next);
    this.s.store.setPolicy(r.id, own);
    // Name checks turned on: its open connections were never judged, and the gate judges
    // only first flights; those it would judge now are cut (clients reconnect, and are judged).
    // (Enforced: report mode judges without cutting, so a switch from it counts as turning on.)
    const enforced = (p: Policy) => p.verifyNames === true && p.mode === 'enforce';
    const namesNewlyChecked = !enforced(old.policy) && enforced(next.policy);
    return { name, policy: own, effective, cut: this.cutForbiddenFlows(name, next, namesNewlyChecked) };
  }

  /**
   * Established connections skip the rules, so a narrowed policy must also end the flows it
   * now forbids, in both directions and whoever opened them: each tracked flow of the
   * sandbox is judged again (in the ruleset's order) from the side of the one that opened
   * it, with the policies and groups now in force, and the forbidden ones are deleted from
   * conntrack; so are, when name checks were just turned on (`namesNewlyChecked`), its own
   * connections they would have judged. Call it once the new spec is live.
   */
  private cutForbiddenFlows(name: string, s: SandboxSpec, namesNewlyChecked = false): number {
    const ct = new Conntrack();
    try {
      const now = Date.now();
      const subnet = parseCidr(this.s.config.subnet);
      const forbidden = (f: ConntrackFlow): boolean => {
        const flow = { daddr: f.dst, proto: f.proto, dport: f.dport };
        if (f.src === s.ip) {
          // Its DNS and other traffic to the host are not forwarded flows.
          if (f.dst === this.s.config.gateway || s.policy.mode === 'report') return false;
          const peers = this.s.live.peersOf(name, s);
          const d = this.s.judge.decide(s, peers, flow, (a) => this.s.admissions.isOpen(s.ip, a, now));
          return d.verdict === 'deny' || (namesNewlyChecked && d.namePending === true);
        }
        if (f.dst !== s.ip) return false;
        if (f.src === this.s.config.gateway || !cidrContains(subnet, parseIPv4(f.src))) {
          // The host's own connection into it: its inbound policy.
          const inbound = s.policy.inbound;
          if (s.policy.mode === 'report') return false;
          return !inbound.enabled || (inbound.ports !== undefined && !portRanges(inbound.ports).some((p) => p.proto === f.proto && f.dport >= p.from && f.dport <= p.to));
        }
        // Another sandbox's connection into it: that sandbox's egress, with its groups as they are now.
        const opener = this.s.live.at(f.src);
        if (!opener) return true;
        if (opener.spec.policy.mode === 'report') return false;
        const peers = this.s.live.peersOf(opener.name, opener.spec);
        return this.s.judge.decide(opener.spec, peers, flow, (d) => this.s.admissions.isOpen(f.src, d, now)).verdict === 'deny';
      };
      return ct.delete(ct.flows().filter(forbidden));
    } finally {
      ct.close();
    }
  }

  /** Exact blocked (and reported) packets by deny reason, instance-wide since the table was last built. */
  denialCounts(): Record<string, { blocked: number; reported: number }> {
    return readDenialCounts(this.s.nft, this.s.names.table);
  }

  /** Accounting for one sandbox, or all (one kernel read either way). */
  stats(name?: string): SandboxStats[] {
    const rows = this.s.store.list().filter((r) => r.state === 'ready' && !isPoolMember(r.name) && (name === undefined || r.name === name));
    if (name !== undefined && rows.length === 0) throw new ToastnetError('not_found', `no sandbox named "${name}"`);
    const out = readStats(this.s.nft, this.s.names.table, this.s.store, rows.map((r) => ({ id: r.id, name: r.name, ip: r.ip, createdAt: r.createdAt, limits: this.s.live.get(r.name)?.policy.limits ?? {}, publishes: r.publish.length > 0, attachment: r.attachment })));
    const specs = rows.map((r) => this.s.live.get(r.name)).filter((s) => s !== undefined);
    const shaped = this.s.shapers.read(specs);
    for (const st of out) {
      const sh = shaped.get(st.ip);
      if (sh) st.shaped = sh;
    }
    return out;
  }
}
