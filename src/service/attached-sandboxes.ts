// Sandboxes in a namespace a container runtime made and owns (CNI, service/cni.ts): leased,
// admitted and removed with the same steps as toastnet's own (sandbox-lifecycle.ts), but the
// namespace is never toastnet's to name, enter with a reaper or remove. Only the link goes,
// and a veth's off the daemon's thread (kernel/background-unlink.ts).
import fs from 'node:fs';
import { ToastnetError } from '../errors.js';
import { Undo, faultPoint, withUndo } from '../undo.js';
import { parseIPv4 } from '../core/ipv4.js';
import { sandboxLinkName, validateSandboxName } from '../core/names.js';
import type { Element, SandboxMode } from '../core/sandbox-elements.js';
import type { SandboxObject } from '../core/sandbox-limits.js';
import type { PolicyInput } from '../core/policy.js';
import type { PortMapping } from '../core/publish.js';
import type { RuntimeAttachment } from '../core/cni.js';
import { adoptSandboxNet, releaseAdoptedNet } from '../kernel/sandbox-net.js';
import { BackgroundUnlinker } from '../kernel/background-unlink.js';
import type { SandboxRow } from '../store/store.js';
import type { SandboxInfo } from '../api/types.js';
import type { InstanceState } from './instance-state.js';
import type { LiveSpec } from './live-sandboxes.js';
import type { Lease } from './sandbox-lifecycle.js';

/** The steps of a sandbox's life this shares with toastnet's own sandboxes (SandboxLifecycle). */
export interface LifeSteps {
  lease(name: string | undefined, mode: SandboxMode, own: PolicyInput, publish?: PortMapping[]): Lease;
  unlease(l: Lease): void;
  admit(name: string, spec: LiveSpec, elements: Element[], objects: SandboxObject[], undo: Undo): void;
  dropElements(name: string): void;
  releaseAddress(ipNum: number): void;
}

export class AttachedSandboxes {
  /** Attached sandboxes' links being deleted off the caller's time (CNI DEL). */
  private readonly unlinker = new BackgroundUnlinker();

  constructor(private readonly s: InstanceState, private readonly steps: LifeSteps) {}

  /**
   * Attaches a namespace a container runtime made (CNI ADD) as sandbox `name`: the same
   * lease, link, address, elements and policy as create, but the namespace stays the
   * runtime's (no name under /run/netns, no resolv.conf entry: the runtime writes its own).
   * Its published ports (the runtime's portMappings) as create's. All-or-nothing.
   */
  attach(name: string, mode: SandboxMode, own: PolicyInput, a: RuntimeAttachment, publishWanted: PortMapping[] = []): SandboxInfo {
    validateSandboxName(name);
    const { effective, policy } = this.s.checkedPolicy(own);
    const parentIndex = this.s.ensureParent();
    const publish = this.s.checkedPublish(publishWanted);
    const lease = this.steps.lease(name, mode, own, publish);
    const { row } = lease;
    const spec = this.s.spec(row, effective, policy);
    const elements = this.s.live.elementsOf(row.name, spec);
    const objects = this.s.objectsOf(spec);
    const net = this.s.netSpec(row, parentIndex);
    const end = { netnsPath: a.netns, ifname: a.ifname };
    const attachment = withUndo((undo) => {
      undo.push('give the address back', () => this.steps.unlease(lease)); // the row, and its attachment with it
      faultPoint('attach:leased');
      let netnsInode: number;
      try {
        netnsInode = adoptSandboxNet(this.s.rtnl, net, end);
      } catch (err) {
        // The name may be held by the link of a detached sandbox still being deleted (the
        // same container and interface again): finish those deletions, then try once more.
        if (!(err instanceof ToastnetError && err.code === 'conflict') || !this.unlinker.busy) throw err;
        this.unlinker.settleSync(this.s.rtnl);
        netnsInode = adoptSandboxNet(this.s.rtnl, net, end);
      }
      undo.push('take the link out', () => releaseAdoptedNet(this.s.rtnl, net, end));
      faultPoint('attach:network');
      const recorded = { ...a, netnsInode };
      this.s.store.setAttachment(row.id, recorded);
      this.steps.admit(row.name, spec, elements, objects, undo);
      faultPoint('attach:admitted');
      this.s.store.markReady(row.id);
      return recorded;
    });
    return this.s.info({ ...row, state: 'ready', attachment });
  }

  /**
   * Removes an attached sandbox (CNI DEL, rm, gc, down): its elements, its link and
   * host-side state, its row. The namespace and the processes in it are the runtime's:
   * nothing here enters the reaper. Idempotent past the elements, like remove.
   */
  detach(r: SandboxRow, a: RuntimeAttachment): void {
    this.steps.dropElements(r.name);
    const ipNum = parseIPv4(r.ip);
    // The address goes back only once the link (and with it the /32 route) is gone.
    let deferred = false;
    releaseAdoptedNet(this.s.rtnl, { mode: r.mode, ip: r.ip, hostLink: sandboxLinkName(this.s.names, r.id) }, { netnsPath: ownedNetns(a), ifname: a.ifname }, (link) => {
      deferred = true;
      this.unlinker.remove(link, () => this.steps.releaseAddress(ipNum));
    });
    this.s.store.transaction(() => {
      this.s.store.deleteSandbox(r.id);
      this.s.store.addReleased(ipNum);
    });
    if (!deferred) this.steps.releaseAddress(ipNum);
  }

  /** Resolves once every link deletion so far is over. */
  settled(): Promise<void> {
    return this.unlinker.settled();
  }

  /** Finishes pending link deletions here, for an owner closing. */
  close(): void {
    this.unlinker.settleSync(this.s.rtnl);
    this.unlinker.close();
  }
}

/**
 * The attached namespace's path while it is still the one attached: a /proc/PID/ns/net
 * path names another namespace once the PID is reused, and the link inside that one is
 * not ours.
 */
export function ownedNetns(a: RuntimeAttachment): string | undefined {
  try {
    const ino = fs.statSync(a.netns).ino;
    return a.netnsInode === undefined || ino === a.netnsInode ? a.netns : undefined;
  } catch {
    return undefined;
  }
}
