// The engine of one instance: the facade the daemon, the CLI and the benches drive. It owns
// the instance lock and the shared state (instance-state.ts) for its lifetime and hands each
// operation to the part it belongs to:
//   host-network.ts        up, the table, teardown, kernel gc, status
//   sandbox-lifecycle.ts   lease, create, pool members, acquire, remove, address release
//   policy-accounting.ts   policy get/set and cutting flows, the DNS gate's view, stats
// Every kernel step of an operation runs synchronously (no await between the state check
// and the kernel change), so the daemon can serve concurrent callers on one thread without
// interleaving them.
import type { LiveSandboxes } from './live-sandboxes.js';
import { Config } from '../config/schema.js';
import type { DenyReason } from '../core/deny-reasons.js';
import type { LoggedPacket } from '../kernel/nflog-codec.js';
import type { SandboxNetView } from '../kernel/sandbox-net.js';
import type { SandboxRow } from '../store/store.js';
import type { GateSandbox } from '../dns/gate.js';
import type { CreateOptions, GcReport, PolicyView, SandboxInfo, Status } from '../api/types.js';
import type { Attribution } from './events.js';
import type { SandboxStats } from './accounting.js';
import { InstanceState } from './instance-state.js';
import { HostNetwork } from './host-network.js';
import { PoolReservation, SandboxLifecycle } from './sandbox-lifecycle.js';
import { PolicyAndAccounting } from './policy-accounting.js';
import { InstanceLock } from './lock.js';
import type { SandboxMode } from '../core/link-modes.js';
import type { PolicyInput } from '../core/policy.js';
import type { PortMapping } from '../core/publish.js';
import type { RuntimeAttachment } from '../core/cni.js';

export type { CreateOptions, GcReport, PolicyView, SandboxInfo, Status } from '../api/types.js';
export type { PoolReservation } from './sandbox-lifecycle.js';

export class Engine {
  private readonly host: HostNetwork;
  private readonly sandboxes: SandboxLifecycle;
  private readonly policies: PolicyAndAccounting;

  private constructor(private readonly s: InstanceState, private readonly lock: InstanceLock) {
    this.host = new HostNetwork(s);
    this.sandboxes = new SandboxLifecycle(s);
    this.policies = new PolicyAndAccounting(s);
  }

  /** Opens the instance, waiting up to `waitMs` for another holder of the lock (see InstanceLock.acquire). */
  static async open(config: Config, waitMs = 0, giveUp?: () => Promise<boolean>): Promise<Engine> {
    const lock = waitMs > 0 ? await InstanceLock.acquire(config.runDir, waitMs, giveUp) : InstanceLock.tryAcquire(config.runDir);
    try {
      const state = new InstanceState(config);
      state.settleUsage(); // a crash in the middle of a rebuild: its counts, neither lost nor doubled
      return new Engine(state, lock);
    } catch (err) {
      lock.release();
      throw err;
    }
  }

  /** The live sandboxes (the daemon's name checks follow their policies). */
  get live(): LiveSandboxes {
    return this.s.live;
  }

  close(): void {
    this.sandboxes.close();
    this.s.close();
    this.lock.release();
  }

  get config(): Config {
    return this.s.config;
  }

  get names() {
    return this.s.names;
  }

  get rules() {
    return this.s.rules;
  }

  get store() {
    return this.s.store;
  }

  /** The name gate's kernel counts of drops without a verdict (the daemon reports them: service/unjudged.ts). */
  get unjudgedCounters() {
    return this.host.unjudgedCounters;
  }

  // ---- host ---------------------------------------------------------------------------

  isUp(): boolean {
    return this.host.isUp();
  }

  /** Sets up the host side; idempotent. Rebuilds the table with every live sandbox's elements. */
  up(o: { persist?: boolean; persistRoot?: string } = {}): void {
    this.host.up(o);
    // What a process that died before deleting its removed sandboxes' flows left behind.
    this.sandboxes.forgetStrayFlows();
  }

  /** Removes everything the instance made: sandboxes, table, links, files, state. */
  async down(o: { persistRoot?: string } = {}): Promise<{ sandboxes: number }> {
    const rows = this.s.store.list();
    for (const r of rows) this.sandboxes.remove(r.name);
    await this.sandboxes.settled();
    this.host.tearDown(o);
    return { sandboxes: rows.length };
  }

  /**
   * Removes what no live sandbox owns: rows whose namespace or link is gone (a reboot, a
   * crash mid-create), namespaces, links and resolv.conf dirs of unknown sandboxes, and set
   * elements that do not match the store.
   */
  gc(): GcReport {
    const sandboxes = this.sandboxes.gcRows();
    const live = this.s.store.list();
    const kernel = this.host.gcKernel(new Set(live.map((r) => r.name)), new Set(live.map((r) => r.id)));
    if (this.s.nft.hasTable('inet', this.s.names.table)) this.s.resetKernelSandboxes();
    // Bandwidth classes of sandboxes gone (a crash mid-removal, rows gc just removed).
    if (this.s.parentIndex !== undefined || this.host.isUp()) this.s.shapers.reconcile(this.s.live.specs());
    return { sandboxes, ...kernel };
  }

  status(daemonPid?: number): Status {
    return this.host.status(this.sandboxes.beingBuilt, daemonPid);
  }

  // ---- sandboxes ----------------------------------------------------------------------

  info(r: SandboxRow): SandboxInfo {
    return this.s.info(r);
  }

  /** Creates a sandbox network; all-or-nothing (no row, lease, link or element survives a failure). */
  create(o: CreateOptions = {}): SandboxInfo {
    return this.sandboxes.create(o);
  }

  /** Turns an idle warm-pool member into the sandbox `o` asks for; undefined when there is none. */
  acquire(o: CreateOptions = {}): SandboxInfo | undefined {
    return this.sandboxes.acquire(o);
  }

  /** Attaches a container runtime's namespace as a sandbox (CNI ADD: service/cni.ts). */
  attach(name: string, mode: SandboxMode, own: PolicyInput, a: RuntimeAttachment, publish: PortMapping[] = []): SandboxInfo {
    return this.sandboxes.attach(name, mode, own, a, publish);
  }

  /** Removes a sandbox; an attached one loses its link and host-side state only, never the runtime's namespace. */
  remove(name: string): void {
    this.sandboxes.remove(name);
  }

  /** Resolves once every removal so far has ended the processes left inside and freed its address. */
  settled(): Promise<void> {
    return this.sandboxes.settled();
  }

  get(name: string): SandboxInfo {
    return this.sandboxes.get(name);
  }

  list(): SandboxInfo[] {
    return this.sandboxes.list();
  }

  inspect(name: string): SandboxInfo & { kernel: SandboxNetView } {
    return this.sandboxes.inspect(name);
  }

  createPoolMember(): void {
    this.sandboxes.createPoolMember();
  }

  reservePoolMember(): PoolReservation {
    return this.sandboxes.reservePoolMember();
  }

  finishPoolMember(r: PoolReservation, failed?: unknown): void {
    this.sandboxes.finishPoolMember(r, failed);
  }

  poolIdle(): number {
    return this.sandboxes.poolIdle();
  }

  dropPoolMember(): boolean {
    return this.sandboxes.dropPoolMember();
  }

  // ---- policy, DNS and accounting -------------------------------------------------------

  policyGet(name: string): PolicyView {
    return this.policies.policyGet(name);
  }

  policySet(name: string, doc: unknown): PolicyView {
    return this.policies.policySet(name, doc);
  }

  sandboxByIp(ip: string): GateSandbox | undefined {
    return this.policies.sandboxByIp(ip);
  }

  sandboxById(id: number): GateSandbox | undefined {
    return this.policies.sandboxById(id);
  }

  admitResolved(s: Pick<GateSandbox, 'id' | 'ip'>, allAddresses: string[], ttl: number, now = Date.now()): void {
    this.policies.admitResolved(s, allAddresses, ttl, now);
  }

  attribute(p: LoggedPacket, reason: DenyReason): Attribution | undefined {
    return this.policies.attribute(p, reason);
  }

  stats(name?: string): SandboxStats[] {
    return this.policies.stats(name);
  }

  /** Exact blocked and reported packets by deny reason, instance-wide (the kernel's per-rule counters). */
  denialCounts(): Record<string, { blocked: number; reported: number }> {
    return this.policies.denialCounts();
  }
}
