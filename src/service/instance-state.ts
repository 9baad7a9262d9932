// What every part of an instance's engine shares: its config and names, the state store,
// one rtnetlink socket and one libnftables context, the address pool, the live sandboxes in
// the kernel's terms, and the derivations all parts use (a sandbox's spec, its kernel
// description and API view, its objects with connection tiers, the per-sandbox sets made
// exactly what the live sandboxes own). The parts (host-network.ts, sandbox-lifecycle.ts,
// policy-accounting.ts) hold it; engine.ts opens and closes it.
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { Config } from '../config/schema.js';
import { ToastnetError } from '../errors.js';
import { Ipam } from '../core/ipam.js';
import { cidrLast, parseCidr, parseIPv4 } from '../core/ipv4.js';
import { InstanceNames, instanceNames, isPoolMember, netnsName, sandboxLinkName, sandboxMac } from '../core/names.js';
import { ObjectRef, RulesetBuilder, USAGE_EPOCH_SET } from '../core/ruleset.js';
import type { NftCommand } from '../core/nft-schema.js';
import { faultPoint } from '../undo.js';
import { SandboxSpec } from '../core/sandbox-elements.js';
import { SandboxObject, sandboxObjects, tierChain } from '../core/sandbox-limits.js';
import { Policy, PolicyInput, aboveConnCeiling, mergePolicy, resolvePolicy, validatePolicy } from '../core/policy.js';
import { LINK_MODES, SandboxMode, isSandboxMode, poolModeOf } from '../core/link-modes.js';
import { TapDevice, resolveTapOptions, tapInfo } from '../core/tap.js';
import { PortMapping, checkPortMappings, instanceConflict, listenerConflict, publishConflict, publishedInMap } from '../core/publish.js';
import { hostListeners } from '../kernel/listeners.js';
import { FlowJudge } from '../core/flow-decision.js';
import { Nft } from '../kernel/nft.js';
import { netnsPath } from '../kernel/netns.js';
import { NetnsEtc } from '../kernel/netns-etc.js';
import { RtnetlinkSocket } from '../kernel/rtnetlink.js';
import { getLinkOrUndefined } from '../kernel/host-net.js';
import type { SandboxNetSpec } from '../kernel/sandbox-net.js';
import { CarriedUsage, SandboxRow, Store } from '../store/store.js';
import type { CreateOptions, SandboxInfo } from '../api/types.js';
import { LiveSandboxes, LiveSpec } from './live-sandboxes.js';
import { DnsAdmissions } from './dns-admissions.js';
import { countsOf, readCounters, readQuotas } from './accounting.js';
import { SandboxShapers } from './sandbox-shaping.js';

export class InstanceState {
  readonly names: InstanceNames;
  readonly rules: RulesetBuilder;
  readonly store: Store;
  readonly rtnl: RtnetlinkSocket;
  readonly nft: Nft;
  readonly ipam: Ipam;
  readonly prefixLength: number;
  /** ifindex of the macvlan parent, once the host side is known to be up. */
  parentIndex: number | undefined;
  /** Sandboxes' /etc/netns entries (resolv.conf for `ip netns exec`). */
  readonly etc: NetnsEtc;
  /** Live sandboxes' kernel-facing description (what their elements derive from). */
  readonly live: LiveSandboxes;
  readonly judge: FlowJudge;
  /** What DNS answers opened for each sandbox. */
  readonly admissions: DnsAdmissions;
  /** Bandwidth limits: the qdiscs and classes of limited sandboxes. */
  readonly shapers: SandboxShapers;
  /** maxConnections values whose tier (chain and counting set) exists in the kernel. */
  readonly knownTiers = new Set<number>();
  /** The instance's secret for sandbox MACs (sandboxMac): made once, kept with the state. */
  private readonly macKey: string;

  constructor(readonly config: Config) {
    this.names = instanceNames(config.instance);
    this.rules = new RulesetBuilder(config);
    this.store = new Store(path.join(config.stateDir, 'state.db'));
    this.etc = new NetnsEtc(config.instance, `# written by toastnet\nnameserver ${config.gateway}\noptions edns0\n`);
    this.etc.writeShared();
    this.nft = new Nft(this.rules.elementSets());
    this.admissions = new DnsAdmissions(this.nft, this.rules);
    this.rtnl = new RtnetlinkSocket();
    this.shapers = new SandboxShapers(this.rtnl, this.names, config);
    const subnet = parseCidr(config.subnet);
    this.prefixLength = subnet.prefix;
    this.live = new LiveSandboxes([subnet.network, cidrLast(subnet)]);
    this.macKey = this.store.getMeta('mac_key') ?? this.newMacKey();
    const leased = this.store.list().map((s) => parseIPv4(s.ip));
    const nextFresh = Number(this.store.getMeta('next_fresh') ?? subnet.network + 1);
    this.ipam = new Ipam(subnet, new Set([parseIPv4(config.gateway)]), { nextFresh, released: this.store.releasedInOrder(), leased });
    this.judge = new FlowJudge(config);
    for (const r of this.store.list()) {
      if (r.state !== 'ready' || isPoolMember(r.name)) continue; // pool members have no elements
      try {
        this.live.set(r.name, this.spec(r, this.effectivePolicy(r.policy)));
      } catch {
        // A stored policy the current defaults make invalid: enforce the defaults alone.
        this.live.set(r.name, this.spec(r, this.effectivePolicy({})));
      }
    }
  }

  close(): void {
    this.nft.free();
    this.rtnl.close();
    this.store.close();
  }

  private newMacKey(): string {
    const key = randomBytes(32).toString('hex');
    this.store.setMeta('mac_key', key);
    return key;
  }

  effectivePolicy(own: PolicyInput): PolicyInput {
    return mergePolicy(this.config.defaultPolicy, own);
  }

  spec(r: Pick<SandboxRow, 'ip' | 'mode' | 'id'> & { publish?: PortMapping[] }, effective: PolicyInput, policy = resolvePolicy(effective)): LiveSpec {
    return {
      id: r.id, ip: r.ip, mac: sandboxMac(this.macKey, r.id), mode: r.mode, hostLink: sandboxLinkName(this.names, r.id), policy, ...(r.publish?.length ? { publish: r.publish } : {}),
    };
  }

  /**
   * Ports a new sandbox asks to publish, checked, before anything is made: refused (conflict)
   * when another sandbox (of this instance or another on the host) publishes an overlapping
   * host port, or a host socket listens there.
   */
  checkedPublish(doc: unknown): PortMapping[] {
    const publish = checkPortMappings(doc);
    if (publish.length === 0) return publish;
    const others = this.live.names().map((name) => ({ name, publish: this.live.get(name)?.publish }));
    const reason = publishConflict(publish, others) ?? this.otherInstancesConflict(publish) ?? listenerConflict(publish, hostListeners());
    if (reason) throw new ToastnetError('conflict', reason);
    return publish;
  }

  /** What other instances on this host publish: their tables' publish_addr maps. */
  private otherInstancesConflict(publish: PortMapping[]): string | undefined {
    for (const t of this.nft.listTables()) {
      if (t.family !== 'inet' || t.name === this.names.table) continue;
      const elems = this.nft.listMapElements('inet', t.name, 'publish_addr');
      const reason = elems && instanceConflict(publish, t.name, publishedInMap(elems));
      if (reason) return reason;
    }
    return undefined;
  }

  /** A policy document as given, with the defaults, and resolved (which checks every field before anything changes). */
  checkedPolicy(doc: unknown): { own: PolicyInput; effective: PolicyInput; policy: Policy } {
    const own = validatePolicy(doc ?? {});
    const effective = this.effectivePolicy(own);
    const policy = resolvePolicy(effective);
    // The instance's ceiling holds every sandbox (ruleset.ts): a higher rate would be a
    // setting that does nothing, so it is refused rather than shown and not applied.
    const above = aboveConnCeiling(policy.limits, this.config.newConnsPerSecond);
    if (above) throw new ToastnetError('invalid_argument', `policy: field "${above.field}": ${above.value} is above the instance's ceiling (newConnsPerSecond ${this.config.newConnsPerSecond} in its config, burst as much)`);
    return { own, effective, policy };
  }

  /** The mode a create asks for (the instance's default if none) and, for tap, its device's options, checked. */
  checkedMode(o: Pick<CreateOptions, 'mode' | 'tap'>): { mode: SandboxMode; tap?: TapDevice } {
    const mode = o.mode ?? this.defaultMode;
    if (!isSandboxMode(mode)) throw new ToastnetError('invalid_argument', `mode "${String(mode)}": use ${Object.keys(LINK_MODES).join(', ')}`);
    if (mode !== 'tap') {
      if (o.tap !== undefined) throw new ToastnetError('invalid_argument', `tap options apply to mode tap, not ${mode}`);
      return { mode };
    }
    return { mode, tap: resolveTapOptions(o.tap) };
  }

  info(r: SandboxRow): SandboxInfo {
    const netns = netnsName(this.names, r.name);
    return {
      name: r.name,
      id: r.id,
      ip: r.ip,
      gateway: this.config.gateway,
      prefixLength: this.prefixLength,
      // An attached sandbox's namespace is the runtime's, and so is its resolv.conf (the
      // instance's shared one, which names the gateway, is the one to bind-mount).
      netns: r.attachment?.netns ?? netnsPath(netns),
      mac: sandboxMac(this.macKey, r.id),
      mode: r.mode,
      resolvConf: r.attachment ? this.etc.sharedResolvConf : NetnsEtc.resolvConfOf(netns),
      ...(LINK_MODES[r.mode].hostLink ? { hostLink: sandboxLinkName(this.names, r.id) } : {}),
      createdAt: new Date(r.createdAt).toISOString(),
      state: r.state,
      ...(r.publish?.length ? { publish: r.publish } : {}),
      ...(r.attachment ? { attachment: r.attachment } : {}),
      ...(r.mode === 'tap' ? {
        tap: tapInfo({ ip: r.ip, mac: sandboxMac(this.macKey, r.id), gateway: this.config.gateway, prefixLength: this.prefixLength, netns: netnsPath(netns) }, this.tapOf(r.id)),
      } : {}),
      labels: r.labels,
    };
  }

  /** The options a TAP sandbox's device was made with (the defaults for a row made without any). */
  tapOf(id: number): TapDevice {
    return this.store.taps.get(id) ?? resolveTapOptions(undefined);
  }

  /** The mode a create that names none gets, and the one the warm pool holds (it holds no macvlan). */
  get defaultMode(): SandboxMode {
    return this.config.defaultMode ?? 'veth';
  }

  get poolMode(): SandboxMode {
    return poolModeOf(this.defaultMode);
  }

  /** What the kernel layer makes for a sandbox (createSandboxNet); its MAC and host link derive from the row, as in spec(). */
  netSpec(row: SandboxRow, parentIndex?: number, tap?: TapDevice): SandboxNetSpec {
    return {
      netns: netnsName(this.names, row.name), mode: row.mode, ip: row.ip, prefixLength: this.prefixLength, gateway: this.config.gateway, mac: sandboxMac(this.macKey, row.id), hostLink: sandboxLinkName(this.names, row.id), parentIndex,
      ...(row.mode === 'tap' ? { tap: tap ?? this.tapOf(row.id) } : {}),
    };
  }

  ensureParent(): number {
    if (this.parentIndex === undefined) {
      const p = getLinkOrUndefined(this.rtnl, this.names.macvlanParent);
      if (!p) throw new ToastnetError('not_ready', 'host network is not set up: run `toastnet up`');
      this.parentIndex = p.index;
    }
    return this.parentIndex;
  }

  /** Whether a connection tier's chain and set exist (cached: tiers are never removed but with the table). */
  tierKnown(max: number): boolean {
    if (this.knownTiers.has(max)) return true;
    if (!this.nft.hasChain('inet', this.names.table, tierChain(max))) return false;
    this.knownTiers.add(max);
    return true;
  }

  /** A sandbox's objects, with the connection tiers the kernel does not have yet marked for creation. */
  objectsOf(s: SandboxSpec, used?: ReadonlyMap<string, number>): SandboxObject[] {
    return this.markNewTiers(sandboxObjects(s, used));
  }

  markNewTiers(objects: SandboxObject[]): SandboxObject[] {
    return objects.map((o) => (o.kind === 'tier' && !this.tierKnown(o.max) ? { ...o, create: true } : o));
  }

  noteTiers(objects: SandboxObject[]): void {
    for (const o of objects) if (o.kind === 'tier') this.knownTiers.add(o.max);
  }

  tryNft(cmds: ReturnType<RulesetBuilder['remove']>): void {
    try {
      this.nft.apply(cmds);
    } catch {
      // Some element was not there (state and kernel disagreed): make the sets exactly
      // what the live sandboxes own.
      this.resetKernelSandboxes();
    }
  }

  /** Makes the per-sandbox sets, maps and objects exactly what the live sandboxes own. */
  resetKernelSandboxes(): void {
    const wanted = this.live.objects();
    const names = new Set(wanted.map((o) => `${o.kind}:${o.name}`));
    const stale: ObjectRef[] = [];
    for (const item of this.nft.listTable('inet', this.names.table, { terse: true }) ?? []) {
      for (const kind of ['limit', 'quota'] as const) {
        const o = item[kind] as { name?: string } | undefined;
        if (o?.name !== undefined && !names.has(`${kind}:${o.name}`)) stale.push({ kind, name: o.name });
      }
    }
    // The reset flushes the accounting sets: carry their counts first.
    this.rebuildKeepingUsage(() => this.rules.resetSandboxes(this.live.elements(), this.markNewTiers(wanted), stale), 'reset sandbox sets');
    this.nft.compact();
    this.noteTiers(wanted);
    this.admissions.clear(); // dns_allowed was flushed
  }

  /**
   * Rebuilds kernel state with the commands `build` makes, keeping the totals: what the
   * per-sandbox counters and quotas hold is read first and written ahead to the store, the
   * rebuild records its epoch in the kernel in the same transaction, and then the counts are
   * folded into the carried totals; quotas are made again with what was used. A crash
   * anywhere in between is settled by settleUsage (no count lost, none counted twice).
   */
  rebuildKeepingUsage(build: (quotaUsed: ReadonlyMap<string, number>) => NftCommand[], what: string): void {
    this.settleUsage();
    const exists = this.nft.hasTable('inet', this.names.table);
    const counters = exists ? readCounters(this.nft, this.names.table) : undefined;
    const quotaUsed = new Map([...(exists ? readQuotas(this.nft, this.names.table) : [])].map(([name, q]) => [name, q.used]));
    const epoch = Number(this.store.getMeta('usage_epoch') ?? '0') + 1;
    const counts: [number, CarriedUsage][] = [];
    for (const r of counters ? this.store.list() : []) {
      const { out: o, in: i, blocked: b } = countsOf(counters!, r.ip);
      if (o.packets + i.packets + b.packets > 0) counts.push([r.id, { outPackets: o.packets, outBytes: o.bytes, inPackets: i.packets, inBytes: i.bytes, blockedPackets: b.packets }]);
    }
    this.store.setPendingUsage(epoch, counts);
    faultPoint('rebuild:written-ahead');
    this.nft.apply([...build(quotaUsed), ...this.rules.usageEpoch(epoch)], what);
    faultPoint('rebuild:applied');
    this.store.settlePendingUsage(true);
  }

  /**
   * Settles counts written ahead of a rebuild that a crash interrupted: the kernel's epoch
   * says whether the rebuild happened (its counters were reset: fold the counts in) or not
   * (the kernel still counts them: drop them). Cheap when nothing is pending.
   */
  settleUsage(): void {
    const pending = this.store.pendingUsageEpoch();
    if (pending === undefined) return;
    const elems = this.nft.listSetElements('inet', this.names.table, USAGE_EPOCH_SET) ?? [];
    this.store.settlePendingUsage(elems.includes(pending));
  }
}
