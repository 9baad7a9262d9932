// A sandbox's life: its lease (row and address, one transaction), its creation (network,
// resolv.conf entry, elements: all or nothing, through one Undo), acquisition of a warm-pool
// member and the two halves of making one, removal, and the address's way back to the pool
// (after the processes left inside have ended and its flows are deleted: reaper.ts). A
// runtime's namespace attached through CNI takes the same steps (attached-sandboxes.ts).
import fs from 'node:fs';
import { ToastnetError } from '../errors.js';
import { Undo, faultPoint, withUndo } from '../undo.js';
import { formatIPv4, parseCidr, parseIPv4, cidrContains } from '../core/ipv4.js';
import { autoSandboxName, isPoolMember, netnsName, poolMemberName, sandboxLinkName, validateSandboxName } from '../core/names.js';
import { Element, SandboxMode } from '../core/sandbox-elements.js';
import { SandboxObject, sandboxObjects } from '../core/sandbox-limits.js';
import { PolicyInput } from '../core/policy.js';
import type { PortMapping } from '../core/publish.js';
import { Labels, validateLabels } from '../core/labels.js';
import { LINK_MODES, isSandboxMode } from '../core/link-modes.js';
import { TapDevice, isDefaultTap, resolveTapOptions } from '../core/tap.js';
import { Conntrack } from '../kernel/conntrack.js';
import { aliasNetns, deleteNetns, finishReleases, listNetns, openNetns, releaseNetns, releasesSettled } from '../kernel/netns.js';
import { getLinkOrUndefined } from '../kernel/host-net.js';
import * as rq from '../kernel/rtnl-requests.js';
import { SandboxNetSpec, SandboxNetView, createSandboxNet, inspectSandboxNet, removeSandboxNet } from '../kernel/sandbox-net.js';
import type { RuntimeAttachment } from '../core/cni.js';
import { linkDriver } from '../kernel/links/index.js';
import { SandboxRow } from '../store/store.js';
import type { CreateOptions, SandboxInfo } from '../api/types.js';
import type { InstanceState } from './instance-state.js';
import type { LiveSpec } from './live-sandboxes.js';
import { buildMember } from './pool-builder.js';
import type { ShapingView } from './sandbox-shaping.js';
import { Reaper } from './reaper.js';
import { AttachedSandboxes, ownedNetns } from './attached-sandboxes.js';

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

/** A row and the address it took (see SandboxLifecycle.lease). */
export interface Lease {
  row: SandboxRow;
  ipNum: number;
  wasFresh: boolean;
}

/** A pool member being built off the main thread: its lease, and what the kernel part makes. */
export interface PoolReservation {
  lease: Lease;
  net: SandboxNetSpec;
}

export class SandboxLifecycle {
  private readonly reaper = new Reaper({ delayMs: REAP_DELAY_MS, graceMs: 2000 });
  /** Ids of pool members another thread is building (reservePoolMember). */
  private readonly building = new Set<number>();
  /** Addresses of removed sandboxes whose traffic state (flows, neighbour entry) is still to be deleted. */
  private readonly forgetting = new Set<number>();
  private forgetTimer: NodeJS.Timeout | undefined;
  /** Sandboxes in a container runtime's namespace (CNI), made and removed with the steps here. */
  private readonly attached: AttachedSandboxes;

  constructor(private readonly s: InstanceState) {
    this.attached = new AttachedSandboxes(s, this);
  }

  /** Creates a sandbox network; all-or-nothing (no row, lease, link or element survives a failure). */
  create(o: CreateOptions = {}): SandboxInfo {
    if (o.name !== undefined) validateSandboxName(o.name);
    return this.createNetwork(o);
  }

  private createNetwork(o: CreateOptions): SandboxInfo {
    const { mode, tap } = this.s.checkedMode(o);
    const { own, effective, policy } = this.s.checkedPolicy(o.policy);
    const labels = validateLabels(o.labels);
    const parentIndex = this.s.ensureParent(); // also: the host side is up
    const publish = this.s.checkedPublish(o.publish);

    const lease = this.lease(o.name, mode, own, publish, tap, labels);
    const { row } = lease;
    const spec = this.s.spec(row, effective, policy);
    const elements = this.s.live.elementsOf(row.name, spec);
    const objects = this.s.objectsOf(spec);
    const net = this.s.netSpec(row, parentIndex, tap);
    withUndo((undo) => {
      undo.push('give the address back', () => this.unlease(lease));
      this.s.shapers.of(spec); // an address that cannot carry a bandwidth limit: refused before anything is made
      faultPoint('create:leased');
      // All-or-nothing itself: on failure it removed what it made (and a name that was there
      // already, a conflict, is not its to remove).
      createSandboxNet(this.s.rtnl, net);
      undo.push('remove the network', () => removeSandboxNet(this.s.rtnl, net));
      faultPoint('create:network');
      this.s.etc.link(net.netns);
      undo.push('remove the resolv.conf entry', () => this.s.etc.unlink(net.netns));
      faultPoint('create:etc');
      this.admit(row.name, spec, elements, objects, undo);
      faultPoint('create:admitted');
      this.s.store.markReady(row.id);
    });
    return this.s.info({ ...row, state: 'ready' });
  }

  /** Attaches a container runtime's namespace (CNI ADD): attached-sandboxes.ts. */
  attach(name: string, mode: SandboxMode, own: PolicyInput, a: RuntimeAttachment, publish: PortMapping[] = []): SandboxInfo {
    return this.attached.attach(name, mode, own, a, publish);
  }

  /** Adds a sandbox's elements and objects in one transaction and makes it live; `undo` learns how to take them out again. */
  admit(name: string, spec: LiveSpec, elements: Element[], objects: SandboxObject[], undo: Undo): void {
    // Its bandwidth limits first, before its elements let any packet through: nothing it
    // sends passes unshaped. No work at all for a sandbox without them.
    undo.push('remove the shaping', this.s.shapers.change(undefined, spec));
    this.s.nft.apply(this.s.rules.add(elements, objects), 'admit sandbox');
    this.s.noteTiers(objects);
    undo.push('remove the elements', () => this.s.tryNft(this.s.rules.remove(elements, objects)));
    this.s.live.set(name, spec);
    undo.push('forget the live sandbox', () => this.s.live.delete(name));
  }

  /** A new row (state 'creating') and its address, in one transaction; conflict if the name is taken. */
  lease(name: string | undefined, mode: SandboxMode, own: PolicyInput, publish: PortMapping[] = [], tap?: TapDevice, labels: Labels = {}): Lease {
    const ipNum = this.s.ipam.peek();
    const wasFresh = this.s.ipam.isFresh(ipNum);
    const ip = formatIPv4(ipNum);
    const row = this.s.store.transaction(() => {
      const n = name ?? autoSandboxName(this.s.store.peekNextId());
      if (this.s.store.getByName(n)) throw new ToastnetError('conflict', `sandbox "${n}" already exists`);
      const id = this.s.store.insertSandbox(n, ip, mode, own);
      if (publish.length > 0) this.s.store.setPublish(id, publish);
      if (tap) this.s.store.taps.set(id, tap);
      if (Object.keys(labels).length > 0) this.s.store.setLabels(id, labels);
      this.s.store.takeReleased(ipNum);
      this.s.store.setMeta('next_fresh', String(wasFresh ? ipNum + 1 : this.s.ipam.freshCursor));
      return this.s.store.getByName(n)!;
    });
    this.s.ipam.take(ipNum);
    return { row, ipNum, wasFresh };
  }

  /** Undoes a lease: no row, and the address first in line again (or the fresh cursor back). */
  unlease(l: Lease): void {
    // Leases given back out of order (the pool's queued members failing in turn) must leave
    // the lowest of them as the stored cursor, as untake does in memory.
    const cursor = l.wasFresh ? Math.min(l.ipNum, this.s.ipam.freshCursor) : this.s.ipam.freshCursor;
    this.s.store.transaction(() => {
      this.s.store.deleteSandbox(l.row.id);
      if (!l.wasFresh) this.s.store.addReleasedFirst(l.ipNum);
      this.s.store.setMeta('next_fresh', String(cursor));
    });
    this.s.ipam.untake(l.ipNum, l.wasFresh);
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
      buildMember(this.s.rtnl, this.s.etc, r.net);
    } catch (err) {
      failed = err;
    }
    this.finishPoolMember(r, failed);
    if (failed !== undefined) throw failed;
  }

  /**
   * First half of a pool member whose kernel part another thread makes (PoolBuilder): its
   * row, in state 'creating' until finishPoolMember, and its address. The row keeps the
   * pool from asking for more meanwhile, acquire does not take it (not ready), and gc
   * leaves it alone.
   */
  reservePoolMember(): PoolReservation {
    if (this.s.parentIndex === undefined) this.s.ensureParent();
    // No policy to check: a member carries none until it is acquired (with the acquirer's).
    const mode = this.s.poolMode;
    const tap = mode === 'tap' ? resolveTapOptions(undefined) : undefined;
    const lease = this.lease(poolMemberName(this.s.store.peekNextId()), mode, {}, [], tap);
    this.building.add(lease.row.id);
    return { lease, net: this.s.netSpec(lease.row, undefined, tap) };
  }

  /** Second half: the member is ready, or (`failed`) what it had is removed and its row and address given back. */
  finishPoolMember(r: PoolReservation, failed?: unknown): void {
    this.building.delete(r.lease.row.id);
    if (failed === undefined) {
      this.s.store.markReady(r.lease.row.id);
      return;
    }
    // The builder undoes its own work when the kernel refuses; a builder thread that died
    // midway did not: whatever it made goes before the address can be handed out again.
    // Each step guarded: the address goes back even if the network will not go away.
    const undo = new Undo();
    undo.push('give the address back', () => this.unlease(r.lease));
    undo.push('remove the resolv.conf entry', () => this.s.etc.unlink(r.net.netns));
    undo.push('remove the network', () => removeSandboxNet(this.s.rtnl, r.net));
    try {
      undo.rollback(failed);
    } catch {
      // the builder's own error was reported by whoever called
    }
  }

  /** Idle pool members, with those being built (the refill counts them as made). */
  poolIdle(): number {
    return this.s.store.countPool();
  }

  /** Removes the oldest idle pool member; false when there is none. */
  dropPoolMember(): boolean {
    const member = this.s.store.firstPoolMember();
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
    const mode = o.mode ?? this.s.defaultMode;
    if (mode !== this.s.poolMode) return undefined;
    // Members' TAPs have the default options; other options need a device made for them.
    if (mode === 'tap' && !isDefaultTap(resolveTapOptions(o.tap))) return undefined;
    if (mode !== 'tap' && o.tap !== undefined) return undefined; // the create refuses it
    // No member: nothing checked here, the create made on the spot checks it all once.
    const member = this.s.store.firstPoolMember();
    if (!member || member.mode !== mode) return undefined;
    if (o.name !== undefined) validateSandboxName(o.name);
    const { own, effective, policy } = this.s.checkedPolicy(o.policy);
    const publish = this.s.checkedPublish(o.publish);
    const labels = validateLabels(o.labels);
    const name = o.name ?? autoSandboxName(member.id);
    const createdAt = Date.now();
    try {
      this.s.store.transaction(() => {
        this.s.store.renameSandbox(member.id, name, own, createdAt);
        this.s.store.setLabels(member.id, labels);
      });
    } catch (err) {
      // The caller's own name is taken: its error. An automatic name someone took by hand:
      // not the caller's problem, a fresh network gets a fresh name.
      if (o.name !== undefined) throw err;
      return undefined;
    }
    const row = { ...member, name, policy: own, createdAt, publish, labels };
    const spec = this.s.spec(row, effective, policy);
    const elements = this.s.live.elementsOf(name, spec);
    const objects = this.s.objectsOf(spec);
    const [from, to] = [netnsName(this.s.names, member.name), netnsName(this.s.names, name)];
    try {
      withUndo((undo) => {
        undo.push('give the member its name back', () => this.s.store.transaction(() => {
          this.s.store.renameSandbox(member.id, member.name, member.policy, member.createdAt);
          this.s.store.setLabels(member.id, member.labels);
        }));
        if (publish.length > 0) {
          this.s.store.setPublish(member.id, publish);
          undo.push('unpublish the member', () => this.s.store.setPublish(member.id, []));
        }
        faultPoint('acquire:renamed');
        aliasNetns(from, to);
        undo.push('drop the new namespace name', () => deleteNetns(to));
        faultPoint('acquire:aliased');
        this.s.etc.rename(from, to);
        undo.push('rename the resolv.conf entry back', () => this.s.etc.rename(to, from));
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
    return this.s.info(row);
  }

  get(name: string): SandboxInfo {
    const r = isPoolMember(name) ? undefined : this.s.store.getByName(name);
    if (!r) throw new ToastnetError('not_found', `no sandbox named "${name}"`);
    return this.s.info(r);
  }

  list(): SandboxInfo[] {
    return this.s.store.list().filter((r) => !isPoolMember(r.name)).map((r) => this.s.info(r));
  }

  inspect(name: string): SandboxInfo & { kernel: SandboxNetView & { shaping?: ShapingView } } {
    const info = this.get(name);
    const r = this.s.store.getByName(name)!;
    const netns = netnsName(this.s.names, name);
    const kernel = inspectSandboxNet(this.s.rtnl, { netns, mode: r.mode, ip: r.ip, hostLink: sandboxLinkName(this.s.names, r.id) }, r.attachment ? ownedNetns(r.attachment) ?? '' : undefined);
    const spec = this.s.live.get(name);
    const shaping = spec && this.s.shapers.describe(spec);
    return { ...info, kernel: { ...kernel, ...(shaping ? { shaping } : {}) } };
  }

  /**
   * Removes a sandbox: its elements first (its traffic stops at once), then its namespace
   * and resolv.conf, then its row; the name is free when this returns. Whether processes
   * still hold the namespace is read shortly after, for many removals at once (reaper.ts);
   * the address goes back to the pool once none do.
   */
  remove(name: string): void {
    const r = this.s.store.getByName(name);
    if (!r) throw new ToastnetError('not_found', `no sandbox named "${name}"`);
    if (r.attachment) {
      this.attached.detach(r, r.attachment);
      return;
    }
    const netns = netnsName(this.s.names, name);
    // Nothing has changed until the elements go: a failure before leaves the sandbox whole.
    // After that every step is idempotent, so a failed rm is finished by another rm (or gc).
    const fd = withUndo((undo) => {
      const opened = openNetns(netns);
      if (opened !== undefined) undo.push('close the namespace fd', () => fs.closeSync(opened));
      faultPoint('remove:opened');
      return opened;
    });
    this.dropElements(name);
    // A link a VMM keeps alive until the reaper ends it is cut off now (tap).
    linkDriver(r.mode).cut?.(this.s.rtnl, { ip: r.ip, hostLink: sandboxLinkName(this.s.names, r.id) });
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
      held: () => linkDriver(r.mode).removeHostSide(this.s.rtnl, { ip: r.ip, hostLink: sandboxLinkName(this.s.names, r.id) }),
      release: () => this.releaseAddress(ipNum),
    }));
    this.s.etc.unlink(netns);
    this.s.store.transaction(() => {
      this.s.store.deleteSandbox(r.id);
      this.s.store.addReleased(ipNum);
    });
  }

  /** Its traffic stops: its elements leave the kernel and it is no longer live. */
  dropElements(name: string): void {
    const spec = this.s.live.get(name);
    if (!spec) return;
    this.s.admissions.forgetAll(spec.ip);
    const elements = this.s.live.elementsOf(name, spec);
    this.s.live.delete(name);
    this.s.tryNft(this.s.rules.remove(elements, sandboxObjects(spec)));
    try {
      this.s.shapers.remove(spec);
    } catch {
      // its classes stay until `up` or gc reconciles them (no address leads there any more)
    }
  }

  /** Resolves once every removal so far has ended the processes left inside and freed its address. */
  async settled(): Promise<void> {
    await releasesSettled(); // each hands its namespace to the reaper when its name is gone
    await this.reaper.settled();
    await this.attached.settled();
    this.forgetReleased();
  }

  /**
   * Gives a removed sandbox's address back to the pool once nothing of its traffic state is
   * left: conntrack entries outlive the namespace that made them, and the address's next
   * owner would otherwise inherit its flows (replies on them are accepted as established).
   */
  releaseAddress(ipNum: number): void {
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
      this.s.ipam.release(parseIPv4(a));
    }
  }

  /**
   * Deletes the flows of `addresses` and the host's neighbour entries of them on the gateway
   * link (where macvlan sandboxes live: a reused address comes with another MAC).
   */
  private forgetTrafficState(addresses: Set<string>): void {
    deleteFlows((a) => addresses.has(a));
    const gw = getLinkOrUndefined(this.s.rtnl, this.s.names.gatewayLink);
    if (!gw) return;
    for (const a of addresses) {
      try {
        this.s.rtnl.exec([rq.delNeigh(gw.index, a)], [`forget neighbour ${a}`]);
      } catch {
        // none: the host never talked to it
      }
    }
  }

  /**
   * Deletes flows of subnet addresses no live sandbox holds: what a process that died before
   * forgetReleased left (its released addresses are in the store's queue, ready to lease).
   */
  forgetStrayFlows(): void {
    const subnet = parseCidr(this.s.config.subnet);
    const held = new Set([this.s.config.gateway, ...this.s.store.list().map((r) => r.ip)]);
    deleteFlows((a) => a !== '' && cidrContains(subnet, parseIPv4(a)) && !held.has(a));
  }

  /**
   * Removes sandboxes whose namespace or host link is gone (a reboot, a crash mid-create)
   * or whose row never became ready, leaving members being built alone; returns their
   * names. Their kernel leftovers go with them, their addresses back through the usual
   * release (flows deleted first).
   */
  gcRows(): string[] {
    finishReleases();
    const gone: string[] = [];
    const namespaces = new Set(listNetns());
    for (const r of this.s.store.list()) {
      if (this.building.has(r.id)) continue;
      const netns = netnsName(this.s.names, r.name);
      const hostLink = sandboxLinkName(this.s.names, r.id);
      const nsThere = r.attachment ? ownedNetns(r.attachment) !== undefined : namespaces.has(netns);
      if (r.state === 'ready' && nsThere && linkDriver(r.mode).present(this.s.rtnl, { hostLink })) continue;
      if (r.attachment) {
        // The runtime's container is gone without a DEL (or its link went): what is ours goes.
        this.attached.detach(r, r.attachment);
        gone.push(r.name);
        continue;
      }
      removeSandboxNet(this.s.rtnl, { netns, mode: r.mode, ip: r.ip, hostLink });
      this.s.etc.unlink(netns);
      this.s.store.transaction(() => {
        this.s.store.deleteSandbox(r.id);
        this.s.store.addReleased(parseIPv4(r.ip));
      });
      this.releaseAddress(parseIPv4(r.ip));
      gone.push(r.name);
    }
    for (const name of this.s.live.names()) if (!this.s.store.getByName(name)) this.s.live.delete(name);
    return gone;
  }

  /** Pool members another thread is building now (not yet ready to be acquired). */
  get beingBuilt(): number {
    return this.building.size;
  }

  /** For an owner closing without settled(): runs what is pending now. */
  close(): void {
    this.reaper.stop();
    this.attached.close();
    this.forgetReleased();
  }
}

