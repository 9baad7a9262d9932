// The engine of one instance: turns up/down/create/remove/gc into kernel changes and
// state-store changes, keeping the two consistent. It owns the instance lock, one
// rtnetlink socket and one libnftables context for its lifetime. Every kernel step of an
// operation runs synchronously (no await between the state check and the kernel change),
// so the daemon can serve concurrent callers on one thread without interleaving them.
import fs from 'node:fs';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { Config } from '../config/schema.js';
import { kernelConfigHash } from '../config/load.js';
import { ToastnetError } from '../errors.js';
import { Undo, faultPoint, withUndo } from '../undo.js';
import { Ipam } from '../core/ipam.js';
import { cidrContains, cidrLast, formatIPv4, parseCidr, parseIPv4 } from '../core/ipv4.js';
import {
  InstanceNames, autoSandboxName, instanceNames, isPoolMember, netnsName, poolMemberName, sandboxIdFromLink, sandboxLinkName, sandboxMac, validateSandboxName,
} from '../core/names.js';
import { ObjectRef, RulesetBuilder } from '../core/ruleset.js';
import { Element, SandboxMode, SandboxSpec } from '../core/sandbox-elements.js';
import { SandboxObject, sandboxObjects, tierChain } from '../core/sandbox-limits.js';
import { Policy, PolicyInput, mergePolicy, resolvePolicy, validatePolicy } from '../core/policy.js';
import { Nft } from '../kernel/nft.js';
import { Conntrack, ConntrackFlow } from '../kernel/conntrack.js';
import { FlowJudge } from '../core/flow-decision.js';
import type { LoggedPacket } from '../kernel/nflog-codec.js';
import type { DenyReason } from '../core/ruleset.js';
import type { Attribution } from './events.js';
import { portRanges } from '../core/sandbox-elements.js';
import { aliasNetns, deleteNetns, finishReleases, listNetns, netnsInode, netnsPath, openNetns, releaseNetns, releasesSettled } from '../kernel/netns.js';
import { pidsInNetnses } from '../kernel/procs.js';
import { Reaper } from './reaper.js';
import { NETNS_ETC_DIR, NetnsEtc } from '../kernel/netns-etc.js';
import { RtnetlinkSocket } from '../kernel/rtnetlink.js';
import { parseLink } from '../kernel/rtnetlink-codec.js';
import * as rq from '../kernel/rtnl-requests.js';
import {
  checkSubnetFree, getLinkOrUndefined, otherInstancesPresent, readForwarding, setupHostNet, teardownHostNet, writeForwarding,
} from '../kernel/host-net.js';
import { SandboxNetSpec, SandboxNetView, createSandboxNet, inspectSandboxNet, removeSandboxNet } from '../kernel/sandbox-net.js';
import { linkDriver } from '../kernel/links/index.js';
import { LINK_MODES, isSandboxMode } from '../core/link-modes.js';
import { SandboxRow, Store } from '../store/store.js';
import { buildMember } from './pool-builder.js';
import { LiveSandboxes, LiveSpec } from './live-sandboxes.js';
import type { GateSandbox } from '../dns/gate.js';
import { DnsAdmissions } from './dns-admissions.js';
import { attributeDenial } from './denial-attribution.js';
import { InstanceLock } from './lock.js';
import { SandboxStats, countsOf, readCounters, readQuotas, readStats } from './accounting.js';
import { persistFiles, removePersisted } from './persist.js';

/** How long removals gather before one pass over /proc looks for processes left in them. */
const REAP_DELAY_MS = 50;
/**
 * How long released addresses gather before one conntrack dump deletes their flows (a dump
 * walks the whole table, ~11 ms here); they go back to the pool only after it. Fresh
 * addresses come first, so the wait costs a create nothing.
 */
const FORGET_DELAY_MS = 200;

/** Deletes every tracked flow with an address `gone` holds for (one conntrack dump). */
function deleteFlows(gone: (address: string) => boolean): number {
  const ct = new Conntrack();
  try {
    return ct.deleteFlowsOf(gone);
  } finally {
    ct.close();
  }
}

export interface SandboxInfo {
  name: string;
  id: number;
  ip: string;
  gateway: string;
  prefixLength: number;
  netns: string;
  mac: string;
  mode: SandboxMode;
  resolvConf: string;
  hostLink?: string;
  createdAt: string;
  state: string;
}

/** A row and the address it took (see Engine.lease). */
interface Lease {
  row: SandboxRow;
  ipNum: number;
  wasFresh: boolean;
}

/** A pool member being built off the main thread: its lease, and what the kernel part makes. */
export interface PoolReservation {
  lease: Lease;
  net: SandboxNetSpec;
}

export interface CreateOptions {
  name?: string;
  mode?: SandboxMode;
  /** The sandbox's own policy document; instance defaults fill what it leaves out. */
  policy?: unknown;
}

export interface PolicyView {
  name: string;
  /** As given for this sandbox. */
  policy: PolicyInput;
  /** With the instance's defaults merged in: what is enforced. */
  effective: PolicyInput;
  /** Connections cut because the new policy forbids them (policy set only). */
  cut?: number;
}

export interface GcReport {
  sandboxes: string[];
  namespaces: string[];
  links: string[];
  files: string[];
}

export interface Status {
  instance: string;
  up: boolean;
  subnet: string;
  gateway: string;
  table: string;
  gatewayLink: string;
  forwarding: boolean;
  sandboxes: number;
  /** `releasing`: held by removed sandboxes until the processes left in them have ended. */
  addresses: { capacity: number; used: number; free: number; releasing: number };
  dnsUpstreams: string[];
  stateFile: string;
  socket: string;
  daemon: { pid: number } | null;
  /** Idle warm-pool members (they hold addresses: counted in addresses.used). */
  pool: { idle: number; acquired?: number; missed?: number };
  /** The daemon's resolver counters (absent without a daemon). */
  dns?: { queries: number; answered: number; cached: number; servfail: number; dropped: number; upstreamTimeouts: number; cacheEntries: number };
  /** The daemon's operation latencies (count, and p50/p99 as histogram bucket bounds in seconds). */
  latency?: Record<string, { count: number; p50: number; p99: number }>;
}

export class Engine {
  readonly names: InstanceNames;
  readonly rules: RulesetBuilder;
  readonly store: Store;
  private readonly rtnl: RtnetlinkSocket;
  private readonly nft: Nft;
  private readonly ipam: Ipam;
  private readonly prefixLength: number;
  private parentIndex: number | undefined;
  /** Sandboxes' /etc/netns entries (resolv.conf for `ip netns exec`). */
  private readonly etc: NetnsEtc;
  private readonly reaper = new Reaper({ delayMs: REAP_DELAY_MS, graceMs: 2000 });
  /** Live sandboxes' kernel-facing description (what their elements derive from). */
  private readonly live: LiveSandboxes;
  /** Ids of pool members another thread is building (reservePoolMember). */
  private readonly building = new Set<number>();
  private readonly judge: FlowJudge;
  /** What DNS answers opened for each sandbox. */
  private readonly admissions: DnsAdmissions;
  /** maxConnections values whose tier (chain and counting set) exists in the kernel. */
  private readonly knownTiers = new Set<number>();
  /** Addresses of removed sandboxes whose traffic state (flows, neighbour entry) is still to be deleted. */
  private readonly forgetting = new Set<number>();
  private forgetTimer: NodeJS.Timeout | undefined;
  /** The instance's secret for sandbox MACs (sandboxMac): made once, kept with the state. */
  private readonly macKey: string;

  private constructor(readonly config: Config, private readonly lock: InstanceLock) {
    this.names = instanceNames(config.instance);
    this.rules = new RulesetBuilder(config);
    this.store = new Store(path.join(config.stateDir, 'state.db'));
    this.etc = new NetnsEtc(config.instance, `# written by toastnet\nnameserver ${config.gateway}\noptions edns0\n`);
    this.etc.writeShared();
    this.nft = new Nft(this.rules.elementSets());
    this.admissions = new DnsAdmissions(this.nft, this.rules);
    this.rtnl = new RtnetlinkSocket();
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

  private newMacKey(): string {
    const key = randomBytes(32).toString('hex');
    this.store.setMeta('mac_key', key);
    return key;
  }

  private effectivePolicy(own: PolicyInput): PolicyInput {
    return mergePolicy(this.config.defaultPolicy, own);
  }

  private spec(r: Pick<SandboxRow, 'ip' | 'mode' | 'id'>, effective: PolicyInput, policy = resolvePolicy(effective)): LiveSpec {
    return { id: r.id, ip: r.ip, mac: sandboxMac(this.macKey, r.id), mode: r.mode, hostLink: sandboxLinkName(this.names, r.id), policy };
  }

  /** A policy document as given, with the defaults, and resolved (which checks every field before anything changes). */
  private checkedPolicy(doc: unknown): { own: PolicyInput; effective: PolicyInput; policy: Policy } {
    const own = validatePolicy(doc ?? {});
    const effective = this.effectivePolicy(own);
    return { own, effective, policy: resolvePolicy(effective) };
  }

  /** Whether a connection tier's chain and set exist (cached: tiers are never removed but with the table). */
  private tierKnown(max: number): boolean {
    if (this.knownTiers.has(max)) return true;
    if (!this.nft.hasChain('inet', this.names.table, tierChain(max))) return false;
    this.knownTiers.add(max);
    return true;
  }

  /** A sandbox's objects, with the connection tiers the kernel does not have yet marked for creation. */
  private objectsOf(s: SandboxSpec, used?: ReadonlyMap<string, number>): SandboxObject[] {
    return this.markNewTiers(sandboxObjects(s, used));
  }

  private markNewTiers(objects: SandboxObject[]): SandboxObject[] {
    return objects.map((o) => (o.kind === 'tier' && !this.tierKnown(o.max) ? { ...o, create: true } : o));
  }

  private noteTiers(objects: SandboxObject[]): void {
    for (const o of objects) if (o.kind === 'tier') this.knownTiers.add(o.max);
  }

  /** Makes the per-sandbox sets, maps and objects exactly what the live sandboxes own. */
  private resetKernelSandboxes(): void {
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
    this.rebuildKeepingUsage(() => this.nft.apply(this.rules.resetSandboxes(this.live.elements(), this.markNewTiers(wanted), stale), 'reset sandbox sets'));
    this.nft.compact();
    this.noteTiers(wanted);
    this.admissions.clear(); // dns_allowed was flushed
  }

  /**
   * Rebuilds kernel state with `apply`, keeping the totals: what the per-sandbox counters
   * and quotas held before is read first, then (once the rebuild succeeded) the counts are
   * added to the store's carried totals, and quotas are made again with what was used.
   */
  private rebuildKeepingUsage(apply: (quotaUsed: ReadonlyMap<string, number>) => void): void {
    const exists = this.nft.hasTable('inet', this.names.table);
    const counters = exists ? readCounters(this.nft, this.names.table) : undefined;
    const quotaUsed = new Map([...(exists ? readQuotas(this.nft, this.names.table) : [])].map(([name, q]) => [name, q.used]));
    apply(quotaUsed);
    if (!counters) return;
    this.store.transaction(() => {
      for (const r of this.store.list()) {
        const { out: o, in: i, blocked: b } = countsOf(counters, r.ip);
        if (o.packets + i.packets + b.packets > 0) this.store.carryUsage(r.id, { outPackets: o.packets, outBytes: o.bytes, inPackets: i.packets, inBytes: i.bytes, blockedPackets: b.packets });
      }
    });
  }

  /** Opens the instance, waiting up to `waitMs` for another holder of the lock (see InstanceLock.acquire). */
  static async open(config: Config, waitMs = 0, giveUp?: () => Promise<boolean>): Promise<Engine> {
    const lock = waitMs > 0 ? await InstanceLock.acquire(config.runDir, waitMs, giveUp) : InstanceLock.tryAcquire(config.runDir);
    try {
      return new Engine(config, lock);
    } catch (err) {
      lock.release();
      throw err;
    }
  }

  close(): void {
    this.reaper.stop();
    this.forgetReleased();
    this.nft.free();
    this.rtnl.close();
    this.store.close();
    this.lock.release();
  }

  // ---- host -------------------------------------------------------------------------

  isUp(): boolean {
    return getLinkOrUndefined(this.rtnl, this.names.gatewayLink) !== undefined
      && this.nft.hasTable('inet', this.names.table);
  }

  /** Sets up the host side; idempotent. Rebuilds the table with every live sandbox's elements. */
  up(o: { persist?: boolean; persistRoot?: string } = {}): void {
    const hash = kernelConfigHash(this.config);
    const previous = this.store.getMeta('config_hash');
    if (previous && previous !== hash && this.store.count() > 0) {
      throw new ToastnetError('invalid_argument', 'subnet or gateway changed while sandboxes exist: remove them (or `toastnet down`) first');
    }
    checkSubnetFree(this.rtnl, this.names, parseCidr(this.config.subnet));
    if (this.store.getMeta('forwarding_before') === undefined) this.store.setMeta('forwarding_before', readForwarding() ? '1' : '0');
    const host = setupHostNet(this.rtnl, this.names, this.config.gateway, this.prefixLength);
    this.parentIndex = host.parentIndex;
    writeForwarding(true);
    // Counters and quotas start again in a rebuilt table: carry what they hold.
    this.rebuildKeepingUsage((used) => this.nft.apply(this.rules.fullTable(this.live.elements(), this.live.objects(used)), 'install ruleset'));
    this.nft.compact();
    this.knownTiers.clear();
    this.noteTiers(this.live.objects());
    this.admissions.clear(); // the new table starts with an empty dns_allowed
    this.forgetStrayFlows();
    this.store.setMeta('config_hash', hash);
    if (o.persist) persistFiles(this.config, o.persistRoot ?? '/');
  }

  /** Removes everything the instance made: sandboxes, table, links, files, state. */
  async down(o: { persistRoot?: string } = {}): Promise<{ sandboxes: number }> {
    const rows = this.store.list();
    for (const r of rows) this.remove(r.name);
    await this.settled();
    this.gcKernel(new Set());
    this.nft.apply(this.rules.deleteTable(), 'delete table');
    const others = otherInstancesPresent(this.rtnl, this.names);
    teardownHostNet(this.rtnl, this.names);
    if (this.store.getMeta('forwarding_before') === '0' && !others) writeForwarding(false);
    removePersisted(this.config, o.persistRoot ?? '/');
    this.store.close();
    for (const f of ['state.db', 'state.db-wal', 'state.db-shm']) fs.rmSync(path.join(this.config.stateDir, f), { force: true });
    this.etc.removeShared();
    try {
      fs.rmdirSync(this.config.stateDir); // only if nothing else lives there
    } catch {
      // not empty, or already gone
    }
    return { sandboxes: rows.length };
  }

  // ---- sandboxes ----------------------------------------------------------------------

  info(r: SandboxRow): SandboxInfo {
    const netns = netnsName(this.names, r.name);
    return {
      name: r.name,
      id: r.id,
      ip: r.ip,
      gateway: this.config.gateway,
      prefixLength: this.prefixLength,
      netns: netnsPath(netns),
      mac: sandboxMac(this.macKey, r.id),
      mode: r.mode,
      resolvConf: NetnsEtc.resolvConfOf(netns),
      ...(LINK_MODES[r.mode].hostLink ? { hostLink: sandboxLinkName(this.names, r.id) } : {}),
      createdAt: new Date(r.createdAt).toISOString(),
      state: r.state,
    };
  }

  private ensureParent(): number {
    if (this.parentIndex === undefined) {
      const p = getLinkOrUndefined(this.rtnl, this.names.macvlanParent);
      if (!p) throw new ToastnetError('not_ready', 'host network is not set up: run `toastnet up`');
      this.parentIndex = p.index;
    }
    return this.parentIndex;
  }

  /** Creates a sandbox network; all-or-nothing (no row, lease, link or element survives a failure). */
  create(o: CreateOptions = {}): SandboxInfo {
    if (o.name !== undefined) validateSandboxName(o.name);
    return this.createNetwork(o);
  }

  /**
   * Makes an idle warm-pool member on this thread (the daemon's pool builds them on a worker
   * thread: reservePoolMember): a veth sandbox network with an address but no set element
   * at all, so the filter's source check drops everything it might send (it runs nothing
   * anyway) until it is acquired.
   */
  createPoolMember(): void {
    const r = this.reservePoolMember();
    let failed: unknown;
    try {
      buildMember(this.rtnl, this.etc, r.net);
    } catch (err) {
      failed = err;
    }
    this.finishPoolMember(r, failed);
    if (failed !== undefined) throw failed;
  }

  /** Idle pool members, with those being built (the refill counts them as made). */
  poolIdle(): number {
    return this.store.countPool();
  }

  /** Removes the oldest idle pool member; false when there is none. */
  dropPoolMember(): boolean {
    const member = this.store.firstPoolMember();
    if (!member) return false;
    this.remove(member.name);
    return true;
  }

  /**
   * Turns an idle pool member into the sandbox `o` asks for, or returns undefined when the
   * pool is empty (or `o` wants macvlan, which the pool does not hold). The member was never
   * used: its namespace, link, address, conntrack and neighbour entries are fresh. The
   * namespace is renamed, resolv.conf written, and the sandbox's elements added in one
   * transaction; a failure puts the member back as it was.
   */
  acquire(o: CreateOptions = {}): SandboxInfo | undefined {
    if ((o.mode ?? 'veth') !== 'veth') return undefined;
    // No member: nothing checked here, the create made on the spot checks it all once.
    const member = this.store.firstPoolMember();
    if (!member) return undefined;
    if (o.name !== undefined) validateSandboxName(o.name);
    const { own, effective, policy } = this.checkedPolicy(o.policy);
    const name = o.name ?? autoSandboxName(member.id);
    const createdAt = Date.now();
    try {
      this.store.renameSandbox(member.id, name, own, createdAt);
    } catch (err) {
      // The caller's own name is taken: its error. An automatic name someone took by hand:
      // not the caller's problem, a fresh network gets a fresh name.
      if (o.name !== undefined) throw err;
      return undefined;
    }
    const row = { ...member, name, policy: own, createdAt };
    const spec = this.spec(row, effective, policy);
    const elements = this.live.elementsOf(name, spec);
    const objects = this.objectsOf(spec);
    const [from, to] = [netnsName(this.names, member.name), netnsName(this.names, name)];
    try {
      withUndo((undo) => {
        undo.push('give the member its name back', () => this.store.renameSandbox(member.id, member.name, member.policy, member.createdAt));
        faultPoint('acquire:renamed');
        aliasNetns(from, to);
        undo.push('drop the new namespace name', () => deleteNetns(to));
        faultPoint('acquire:aliased');
        this.etc.rename(from, to);
        undo.push('rename the resolv.conf entry back', () => this.etc.rename(to, from));
        faultPoint('acquire:etc');
        this.admit(name, spec, elements, objects, undo);
        faultPoint('acquire:admitted');
      });
    } catch {
      // A member that cannot be acquired (its namespace gone, say) must not block the pool:
      // drop it; the caller gets a network made on the spot.
      try {
        this.remove(member.name);
      } catch {
        // gone already
      }
      return undefined;
    }
    // The member's old name is unmounted on a libuv thread, off the caller's time.
    releaseNetns(from);
    return this.info(row);
  }

  /** Adds a sandbox's elements and objects in one transaction and makes it live; `undo` learns how to take them out again. */
  private admit(name: string, spec: LiveSpec, elements: Element[], objects: SandboxObject[], undo: Undo): void {
    this.nft.apply(this.rules.add(elements, objects), 'admit sandbox');
    this.noteTiers(objects);
    undo.push('remove the elements', () => this.tryNft(this.rules.remove(elements, objects)));
    this.live.set(name, spec);
    undo.push('forget the live sandbox', () => this.live.delete(name));
  }

  private createNetwork(o: CreateOptions): SandboxInfo {
    const mode = o.mode ?? 'veth';
    if (!isSandboxMode(mode)) throw new ToastnetError('invalid_argument', `mode "${String(mode)}": use ${Object.keys(LINK_MODES).join(' or ')}`);
    const { own, effective, policy } = this.checkedPolicy(o.policy);
    const parentIndex = this.ensureParent(); // also: the host side is up

    const lease = this.lease(o.name, mode, own);
    const { row } = lease;
    const spec = this.spec(row, effective, policy);
    const elements = this.live.elementsOf(row.name, spec);
    const objects = this.objectsOf(spec);
    const net = this.netSpec(row, parentIndex);
    withUndo((undo) => {
      undo.push('give the address back', () => this.unlease(lease));
      faultPoint('create:leased');
      // All-or-nothing itself: on failure it removed what it made (and a name that was there
      // already, a conflict, is not its to remove).
      createSandboxNet(this.rtnl, net);
      undo.push('remove the network', () => removeSandboxNet(this.rtnl, net));
      faultPoint('create:network');
      this.etc.link(net.netns);
      undo.push('remove the resolv.conf entry', () => this.etc.unlink(net.netns));
      faultPoint('create:etc');
      this.admit(row.name, spec, elements, objects, undo);
      faultPoint('create:admitted');
      this.store.markReady(row.id);
    });
    return this.info({ ...row, state: 'ready' });
  }

  /** A new row (state 'creating') and its address, in one transaction; conflict if the name is taken. */
  private lease(name: string | undefined, mode: SandboxMode, own: PolicyInput): Lease {
    const ipNum = this.ipam.peek();
    const wasFresh = this.ipam.isFresh(ipNum);
    const ip = formatIPv4(ipNum);
    const row = this.store.transaction(() => {
      const n = name ?? autoSandboxName(this.store.peekNextId());
      if (this.store.getByName(n)) throw new ToastnetError('conflict', `sandbox "${n}" already exists`);
      this.store.insertSandbox(n, ip, mode, own);
      this.store.takeReleased(ipNum);
      this.store.setMeta('next_fresh', String(wasFresh ? ipNum + 1 : this.ipam.freshCursor));
      return this.store.getByName(n)!;
    });
    this.ipam.take(ipNum);
    return { row, ipNum, wasFresh };
  }

  /** Undoes a lease: no row, and the address first in line again (or the fresh cursor back). */
  private unlease(l: Lease): void {
    // Leases given back out of order (the pool's queued members failing in turn) must leave
    // the lowest of them as the stored cursor, as untake does in memory.
    const cursor = l.wasFresh ? Math.min(l.ipNum, this.ipam.freshCursor) : this.ipam.freshCursor;
    this.store.transaction(() => {
      this.store.deleteSandbox(l.row.id);
      if (!l.wasFresh) this.store.addReleasedFirst(l.ipNum);
      this.store.setMeta('next_fresh', String(cursor));
    });
    this.ipam.untake(l.ipNum, l.wasFresh);
  }

  /**
   * First half of a pool member whose kernel part another thread makes (PoolBuilder): its
   * row, in state 'creating' until finishPoolMember, and its address. The row keeps the
   * pool from asking for more meanwhile, acquire does not take it (not ready), and gc
   * leaves it alone.
   */
  reservePoolMember(): PoolReservation {
    if (this.parentIndex === undefined) this.ensureParent();
    // No policy to check: a member carries none until it is acquired (with the acquirer's).
    const lease = this.lease(poolMemberName(this.store.peekNextId()), 'veth', {});
    this.building.add(lease.row.id);
    return { lease, net: this.netSpec(lease.row) };
  }

  /** What the kernel layer makes for a sandbox (createSandboxNet); its MAC and host link derive from the row, as in spec(). */
  private netSpec(row: SandboxRow, parentIndex?: number): SandboxNetSpec {
    return {
      netns: netnsName(this.names, row.name), mode: row.mode, ip: row.ip, prefixLength: this.prefixLength, gateway: this.config.gateway, mac: sandboxMac(this.macKey, row.id), hostLink: sandboxLinkName(this.names, row.id), parentIndex,
    };
  }

  /** Second half: the member is ready, or (`failed`) what it had is removed and its row and address given back. */
  finishPoolMember(r: PoolReservation, failed?: unknown): void {
    this.building.delete(r.lease.row.id);
    if (failed === undefined) {
      this.store.markReady(r.lease.row.id);
      return;
    }
    // The builder undoes its own work when the kernel refuses; a builder thread that died
    // midway did not: whatever it made goes before the address can be handed out again.
    // Each step guarded: the address goes back even if the network will not go away.
    const undo = new Undo();
    undo.push('give the address back', () => this.unlease(r.lease));
    undo.push('remove the resolv.conf entry', () => this.etc.unlink(r.net.netns));
    undo.push('remove the network', () => removeSandboxNet(this.rtnl, r.net));
    try {
      undo.rollback(failed);
    } catch {
      // the builder's own error was reported by whoever called
    }
  }

  private tryNft(cmds: ReturnType<RulesetBuilder['remove']>): void {
    try {
      this.nft.apply(cmds);
    } catch {
      // Some element was not there (state and kernel disagreed): make the sets exactly
      // what the live sandboxes own.
      this.resetKernelSandboxes();
    }
  }

  // ---- policy -------------------------------------------------------------------------

  /** The sandbox at `ip`, for the DNS gate. */
  sandboxByIp(ip: string): GateSandbox | undefined {
    const found = this.live.at(ip);
    return found ? { id: found.spec.id, name: found.name, ip, policy: found.spec.policy } : undefined;
  }

  /** The sandbox with row id `id` as it is now, or undefined once removed (ids are never reused), for the DNS gate. */
  sandboxById(id: number): GateSandbox | undefined {
    const found = this.live.byId(id);
    return found ? { id, name: found.name, ip: found.spec.ip, policy: found.spec.policy } : undefined;
  }

  /** Admits sandbox `s` to addresses of an allowed name for `ttl` seconds (DnsAdmissions.admit). */
  admitResolved(s: Pick<GateSandbox, 'id' | 'ip'>, allAddresses: string[], ttl: number, now = Date.now()): void {
    // The sandbox may have gone while its query was upstream, and its address gone to
    // another: admit only for the very sandbox that asked.
    if (this.live.at(s.ip)?.spec.id !== s.id) return;
    this.admissions.admit(s.ip, allAddresses, ttl, now);
  }

  /** Which sandbox a logged denial belongs to, and the rule that decided (events). */
  attribute(p: LoggedPacket, reason: DenyReason): Attribution | undefined {
    return attributeDenial(this.live, this.judge, p, reason);
  }

  policyGet(name: string): PolicyView {
    const r = isPoolMember(name) ? undefined : this.store.getByName(name);
    if (!r) throw new ToastnetError('not_found', `no sandbox named "${name}"`);
    return { name, policy: r.policy, effective: this.effectivePolicy(r.policy) };
  }

  /**
   * Replaces a running sandbox's policy in one nftables transaction (old elements out, new
   * in: no moment where more is open than either policy allows).
   */
  policySet(name: string, doc: unknown): PolicyView {
    const r = this.store.getByName(name);
    const old = this.live.get(name);
    if (!r || !old) throw new ToastnetError('not_found', `no sandbox named "${name}"`);
    const { own, effective, policy } = this.checkedPolicy(doc);
    const next = this.spec(r, effective, policy);
    const before = this.live.elementsOf(name, old);
    const after = this.live.elementsOf(name, next);
    const nextObjects = this.objectsOf(next);
    this.nft.apply(this.rules.replace(before, after, sandboxObjects(old), nextObjects), 'replace policy');
    this.noteTiers(nextObjects);
    // Addresses admitted for names the new list still allows stay open; any other change
    // (a name dropped, the list removed) forgets them, since dns_allowed bypasses no_internet.
    const kept = next.policy.domains;
    if (old.policy.domains && !(kept && old.policy.domains.every((d) => kept.includes(d)))) this.admissions.forgetAll(next.ip);
    this.live.set(name, next);
    this.store.setPolicy(r.id, own);
    return { name, policy: own, effective, cut: this.cutForbiddenFlows(name, next) };
  }

  /**
   * Established connections skip the rules, so a narrowed policy must also end the flows it
   * now forbids, in both directions and whoever opened them: each tracked flow of the
   * sandbox is judged again (in the ruleset's order) from the side of the one that opened
   * it, with the policies and groups now in force, and the forbidden ones are deleted from
   * conntrack. Call it once the new spec is live.
   */
  private cutForbiddenFlows(name: string, s: SandboxSpec): number {
    const ct = new Conntrack();
    try {
      const now = Date.now();
      const subnet = parseCidr(this.config.subnet);
      const forbidden = (f: ConntrackFlow): boolean => {
        const flow = { daddr: f.dst, proto: f.proto, dport: f.dport };
        if (f.src === s.ip) {
          // Its DNS and other traffic to the host are not forwarded flows.
          if (f.dst === this.config.gateway || s.policy.mode === 'report') return false;
          const peers = this.live.peersOf(name, s);
          return this.judge.decide(s, peers, flow, (d) => this.admissions.isOpen(s.ip, d, now)).verdict === 'deny';
        }
        if (f.dst !== s.ip) return false;
        if (f.src === this.config.gateway || !cidrContains(subnet, parseIPv4(f.src))) {
          // The host's own connection into it: its inbound policy.
          const inbound = s.policy.inbound;
          if (s.policy.mode === 'report') return false;
          return !inbound.enabled || (inbound.ports !== undefined && !portRanges(inbound.ports).some((p) => p.proto === f.proto && f.dport >= p.from && f.dport <= p.to));
        }
        // Another sandbox's connection into it: that sandbox's egress, with its groups as they are now.
        const opener = this.live.at(f.src);
        if (!opener) return true;
        if (opener.spec.policy.mode === 'report') return false;
        const peers = this.live.peersOf(opener.name, opener.spec);
        return this.judge.decide(opener.spec, peers, flow, (d) => this.admissions.isOpen(f.src, d, now)).verdict === 'deny';
      };
      return ct.delete(ct.flows().filter(forbidden));
    } finally {
      ct.close();
    }
  }

  /** Accounting for one sandbox, or all (one kernel read either way). */
  stats(name?: string): SandboxStats[] {
    const rows = this.store.list().filter((r) => r.state === 'ready' && !isPoolMember(r.name) && (name === undefined || r.name === name));
    if (name !== undefined && rows.length === 0) throw new ToastnetError('not_found', `no sandbox named "${name}"`);
    return readStats(this.nft, this.names.table, this.store, rows.map((r) => ({ id: r.id, name: r.name, ip: r.ip, createdAt: r.createdAt, limits: this.live.get(r.name)?.policy.limits ?? {} })));
  }

  get(name: string): SandboxInfo {
    const r = isPoolMember(name) ? undefined : this.store.getByName(name);
    if (!r) throw new ToastnetError('not_found', `no sandbox named "${name}"`);
    return this.info(r);
  }

  list(): SandboxInfo[] {
    return this.store.list().filter((r) => !isPoolMember(r.name)).map((r) => this.info(r));
  }

  inspect(name: string): SandboxInfo & { kernel: SandboxNetView } {
    const info = this.get(name);
    const r = this.store.getByName(name)!;
    const kernel = inspectSandboxNet(this.rtnl, { netns: netnsName(this.names, name), mode: r.mode, ip: r.ip, hostLink: sandboxLinkName(this.names, r.id) });
    return { ...info, kernel };
  }

  /**
   * Removes a sandbox: its elements first (its traffic stops at once), then its namespace
   * and resolv.conf, then its row; the name is free when this returns. Whether processes
   * still hold the namespace is read shortly after, for many removals at once (reaper.ts);
   * the address goes back to the pool once none do.
   */
  remove(name: string): void {
    const r = this.store.getByName(name);
    if (!r) throw new ToastnetError('not_found', `no sandbox named "${name}"`);
    const netns = netnsName(this.names, name);
    // Nothing has changed until the elements go: a failure before leaves the sandbox whole.
    // After that every step is idempotent, so a failed rm is finished by another rm (or gc).
    const fd = withUndo((undo) => {
      const opened = openNetns(netns);
      if (opened !== undefined) undo.push('close the namespace fd', () => fs.closeSync(opened));
      faultPoint('remove:opened');
      return opened;
    });
    const spec = this.live.get(name);
    if (spec) {
      this.admissions.forgetAll(spec.ip);
      const elements = this.live.elementsOf(name, spec);
      this.live.delete(name);
      this.tryNft(this.rules.remove(elements, sandboxObjects(spec)));
    }
    try {
      faultPoint('remove:elements');
    } catch (err) {
      if (fd !== undefined) fs.closeSync(fd);
      throw err;
    }
    const ipNum = parseIPv4(r.ip);
    // The host route goes with the link when the kernel reaps it; a namespace that
    // processes keep alive has it removed by the reaper. The name is free from here on (a
    // create of it finishes the release); the unmount itself runs on a libuv thread, and the
    // reaper looks for processes inside only once the name is gone, so that none can enter
    // after its look.
    releaseNetns(netns, () => this.reaper.add({
      fd,
      // Only the route: the name may belong to a new sandbox by now.
      held: () => linkDriver(r.mode).removeHostSide(this.rtnl, { ip: r.ip, hostLink: sandboxLinkName(this.names, r.id) }),
      release: () => this.releaseAddress(ipNum),
    }));
    this.etc.unlink(netns);
    this.store.transaction(() => {
      this.store.deleteSandbox(r.id);
      this.store.addReleased(ipNum);
    });
  }

  /** Resolves once every removal so far has ended the processes left inside and freed its address. */
  async settled(): Promise<void> {
    await releasesSettled(); // each hands its namespace to the reaper when its name is gone
    await this.reaper.settled();
    this.forgetReleased();
  }

  /**
   * Gives a removed sandbox's address back to the pool once nothing of its traffic state is
   * left: conntrack entries outlive the namespace that made them, and the address's next
   * owner would otherwise inherit its flows (replies on them are accepted as established).
   */
  private releaseAddress(ipNum: number): void {
    this.forgetting.add(ipNum);
    this.forgetTimer ??= setTimeout(() => this.forgetReleased(), FORGET_DELAY_MS);
  }

  private forgetReleased(): void {
    clearTimeout(this.forgetTimer);
    this.forgetTimer = undefined;
    if (this.forgetting.size === 0) return;
    const gone = new Set([...this.forgetting].map(formatIPv4));
    try {
      this.forgetTrafficState(gone);
    } catch {
      // ctnetlink refused (a transient error): the addresses stay held and are tried again.
      this.forgetTimer = setTimeout(() => this.forgetReleased(), FORGET_DELAY_MS * 5);
      return;
    }
    for (const a of gone) {
      this.forgetting.delete(parseIPv4(a));
      this.ipam.release(parseIPv4(a));
    }
  }

  /**
   * Deletes the flows of `addresses` and the host's neighbour entries of them on the gateway
   * link (where macvlan sandboxes live: a reused address comes with another MAC).
   */
  private forgetTrafficState(addresses: Set<string>): void {
    deleteFlows((a) => addresses.has(a));
    const gw = getLinkOrUndefined(this.rtnl, this.names.gatewayLink);
    if (!gw) return;
    for (const a of addresses) {
      try {
        this.rtnl.exec([rq.delNeigh(gw.index, a)], [`forget neighbour ${a}`]);
      } catch {
        // none: the host never talked to it
      }
    }
  }

  /**
   * Deletes flows of subnet addresses no live sandbox holds: what a process that died before
   * forgetReleased left (its released addresses are in the store's queue, ready to lease).
   */
  private forgetStrayFlows(): void {
    const subnet = parseCidr(this.config.subnet);
    const held = new Set([this.config.gateway, ...this.store.list().map((r) => r.ip)]);
    deleteFlows((a) => a !== '' && cidrContains(subnet, parseIPv4(a)) && !held.has(a));
  }

  // ---- gc and status ----------------------------------------------------------------

  /**
   * Removes what no live sandbox owns: rows whose namespace or link is gone (a reboot, a
   * crash mid-create), namespaces, links and resolv.conf dirs of unknown sandboxes, and set
   * elements that do not match the store.
   */
  gc(): GcReport {
    finishReleases();
    const report: GcReport = { sandboxes: [], namespaces: [], links: [], files: [] };
    const namespaces = new Set(listNetns());
    for (const r of this.store.list()) {
      if (this.building.has(r.id)) continue;
      const netns = netnsName(this.names, r.name);
      const hostLink = sandboxLinkName(this.names, r.id);
      if (r.state === 'ready' && namespaces.has(netns) && linkDriver(r.mode).present(this.rtnl, { hostLink })) continue;
      removeSandboxNet(this.rtnl, { netns, mode: r.mode, ip: r.ip, hostLink });
      this.etc.unlink(netns);
      this.store.transaction(() => {
        this.store.deleteSandbox(r.id);
        this.store.addReleased(parseIPv4(r.ip));
      });
      this.releaseAddress(parseIPv4(r.ip));
      report.sandboxes.push(r.name);
    }
    const live = this.store.list();
    const g = this.gcKernel(new Set(live.map((r) => r.name)), new Set(live.map((r) => r.id)));
    report.namespaces.push(...g.namespaces);
    report.links.push(...g.links);
    report.files.push(...g.files);
    for (const name of this.live.names()) if (!this.store.getByName(name)) this.live.delete(name);
    if (this.nft.hasTable('inet', this.names.table)) this.resetKernelSandboxes();
    return report;
  }

  /** Removes the instance's namespaces, links and files not owned by the given sandboxes. */
  private gcKernel(liveNames: Set<string>, liveIds = new Set<number>()): Omit<GcReport, 'sandboxes'> {
    const out = { namespaces: [] as string[], links: [] as string[], files: [] as string[] };
    const p = this.names.netnsPrefix;
    const unknown = new Set<number>();
    const mine = listNetns().filter((ns) => ns.startsWith(p));
    for (const ns of mine) {
      if (liveNames.has(ns.slice(p.length))) continue;
      const ino = netnsInode(ns);
      deleteNetns(ns);
      if (ino !== undefined) unknown.add(ino);
      out.namespaces.push(ns);
    }
    if (unknown.size > 0) {
      // A second name of a live sandbox's namespace (a pool member's old name, left by a
      // crash right after an acquisition) is dropped, but what runs inside belongs to the
      // sandbox.
      for (const ns of mine) {
        const ino = liveNames.has(ns.slice(p.length)) ? netnsInode(ns) : undefined;
        if (ino !== undefined) unknown.delete(ino);
      }
      for (const pids of pidsInNetnses(unknown).values()) for (const pid of pids) process.kill(pid, 'SIGKILL');
    }
    for (const l of this.rtnl.dump(rq.dumpLinks()).map(parseLink)) {
      const id = sandboxIdFromLink(this.names, l.name);
      if (id === undefined || liveIds.has(id)) continue;
      try {
        this.rtnl.exec([rq.delLink(l.name)], [`delete ${l.name}`]);
        out.links.push(l.name);
      } catch {
        // being reaped by the kernel already
      }
    }
    for (const d of NetnsEtc.list()) {
      if (d.startsWith(p) && !liveNames.has(d.slice(p.length))) {
        this.etc.unlink(d);
        out.files.push(path.join(NETNS_ETC_DIR, d));
      }
    }
    return out;
  }

  status(daemonPid?: number): Status {
    const sandboxes = this.store.count();
    const pooled = this.store.countPool();
    // Leased: live sandboxes, pool members, and removed sandboxes whose processes are being ended.
    const used = this.ipam.capacity - this.ipam.free;
    return {
      instance: this.config.instance,
      up: this.isUp(),
      subnet: this.config.subnet,
      gateway: this.config.gateway,
      table: `inet ${this.names.table}`,
      gatewayLink: this.names.gatewayLink,
      forwarding: readForwarding(),
      sandboxes: sandboxes - pooled,
      pool: { idle: pooled - this.building.size }, // ready to be acquired, not those being built
      addresses: { capacity: this.ipam.capacity, used, free: this.ipam.free, releasing: used - sandboxes },
      dnsUpstreams: this.config.dnsUpstreams,
      stateFile: this.store.file,
      socket: path.join(this.config.runDir, 'toastnet.sock'),
      daemon: daemonPid ? { pid: daemonPid } : null,
    };
  }
}
