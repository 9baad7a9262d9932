// Sandboxes' bandwidth limits as the kernel holds them (core/shaping.ts decides, kernel/shaper.ts
// speaks tc): made with a sandbox, changed with its policy, removed with it, rebuilt by `up`,
// and read for stats and inspect. A sandbox without a bandwidth limit costs nothing here: no
// qdisc, no request, and the shared devices keep no root until the first limited sandbox.
import { parseCidr } from '../core/ipv4.js';
import { LINK_MODES } from '../core/link-modes.js';
import { SandboxShaping, OWN_CLASS_MINOR, sandboxShaping } from '../core/shaping.js';
import type { SandboxSpec } from '../core/sandbox-spec.js';
import { getLinkOrUndefined } from '../kernel/host-net.js';
import {
  ShapedAttachment, ShapedCounts, ShaperDevices, applyShaping, ensureShaperDevices, findShaperDevices, readClasses, removeShaperDevices, removeStrayClasses, shapingPlan,
} from '../kernel/shaper.js';
import type { InstanceNames } from '../core/names.js';
import type { RtnetlinkSocket } from '../kernel/rtnetlink.js';
import type { Config } from '../config/schema.js';
import { ToastnetError } from '../errors.js';

/** What a sandbox's shaper did, each way it is limited: bytes it let through, drops for want of queue room, bytes waiting now. */
export interface ShapedStats {
  egress?: ShapedCounts;
  ingress?: ShapedCounts;
}

/** inspect's view of a sandbox's shaping: where each direction's class is, its settings and counts. */
export type ShapingView = Partial<Record<'egress' | 'ingress', { device: string; classid: string; rate: number; burst: number; queue: number } & Partial<ShapedCounts>>>;

type Shaped = Pick<SandboxSpec, 'ip' | 'mode' | 'mac' | 'hostLink' | 'policy'>;

export class SandboxShapers {
  private devices: ShaperDevices | undefined;
  private readonly subnet;

  constructor(private readonly rtnl: RtnetlinkSocket, private readonly names: InstanceNames, config: Config) {
    this.subnet = parseCidr(config.subnet);
  }

  /** The sandbox's shaping (undefined: no bandwidth limit); checks that its address can carry one. */
  of(s: Pick<SandboxSpec, 'ip' | 'policy'>): SandboxShaping | undefined {
    return sandboxShaping(s, this.subnet);
  }

  /** How the sandbox reaches the host, for the shaper: its own host device by ifindex, or its MAC on the shared parent. */
  private attachment(s: Shaped): ShapedAttachment {
    if (!LINK_MODES[s.mode].hostLink) return { macvlan: s.mac };
    const l = getLinkOrUndefined(this.rtnl, s.hostLink);
    if (!l) throw new ToastnetError('kernel', `host link ${s.hostLink} is missing`);
    return { device: l.index };
  }

  private shared(): ShaperDevices {
    return (this.devices ??= ensureShaperDevices(this.rtnl, this.names, this.subnet));
  }

  /**
   * Takes a sandbox's shaping from what `prev` had to what `next` has (a create: prev
   * undefined). Nothing to do when neither has a bandwidth limit, or both the same. Returns
   * the undo (back to `prev`).
   */
  change(prev: Shaped | undefined, next: Shaped): () => void {
    const [a, b] = [prev && this.of(prev), this.of(next)];
    if (!a && !b) return () => {};
    if (a && b && JSON.stringify(a) === JSON.stringify(b)) return () => {};
    const dev = this.shared();
    const at = this.attachment(next);
    applyShaping(this.rtnl, shapingPlan(dev, at, a, b));
    return () => applyShaping(this.rtnl, shapingPlan(dev, at, b, a), { tolerant: true });
  }

  /**
   * Removes a sandbox's classes on the shared devices; what sits on its own device goes
   * with the device. Idempotent.
   */
  remove(s: Shaped): void {
    const sh = this.of(s);
    if (!sh) return;
    const dev = this.devices ?? findShaperDevices(this.rtnl, this.names);
    if (!dev) return; // no shared devices: nothing of it there
    const at: ShapedAttachment = LINK_MODES[s.mode].hostLink ? { device: 0 } : { macvlan: s.mac };
    applyShaping(this.rtnl, shapingPlan(dev, at, sh, undefined, { keepOwnDevice: true }), { tolerant: true });
  }

  /**
   * After `up` (or a restart): the shared devices made again if missing, every live limited
   * sandbox's shaping made again where it is missing (and set to its policy where it
   * differs), and classes of sandboxes that are gone removed.
   */
  reconcile(live: Shaped[]): void {
    this.devices = undefined;
    const limited = live.filter((s) => this.of(s) !== undefined);
    if (limited.length === 0) {
      // Nothing to shape: no roots made, only leftovers removed.
      const found = findShaperDevices(this.rtnl, this.names);
      if (found) removeStrayClasses(this.rtnl, found, this.subnet, new Set());
      return;
    }
    const dev = this.shared();
    removeStrayClasses(this.rtnl, dev, this.subnet, new Set(limited.map((s) => this.of(s)!.minor)));
    for (const s of limited) {
      let at: ShapedAttachment;
      try {
        at = this.attachment(s);
      } catch {
        continue; // its link is gone: gc removes the sandbox
      }
      // As a create, but what exists already is fine (and is set to the policy in place).
      applyShaping(this.rtnl, shapingPlan(dev, at, undefined, this.of(s)), { tolerant: true, existing: true });
    }
  }

  /** Removes the shared devices (teardown). */
  tearDown(): void {
    removeShaperDevices(this.rtnl, this.names);
    this.devices = undefined;
  }

  /** Where a sandbox's classes are, with their settings and counts (inspect); undefined without a bandwidth limit. */
  describe(s: Shaped): ShapingView | undefined {
    const sh = this.of(s);
    if (!sh) return undefined;
    const counts = this.read([s]).get(s.ip) ?? {};
    const own = LINK_MODES[s.mode].hostLink;
    const view: ShapingView = {};
    if (sh.egress) view.egress = { device: own ? this.names.shaperLink : this.names.macvlanParent, classid: `1:${sh.minor.toString(16)}`, rate: sh.egress.rate, burst: sh.egress.burst, queue: sh.egress.queue, ...counts.egress };
    if (sh.ingress) view.ingress = { device: own ? s.hostLink : this.names.gatewayLink, classid: own ? '1:1' : `1:${sh.minor.toString(16)}`, rate: sh.ingress.rate, burst: sh.ingress.burst, queue: sh.ingress.queue, ...counts.ingress };
    return view;
  }

  /** Each limited sandbox's shaper counts, by address (one class dump per shared device, one per own device). */
  read(sandboxes: Shaped[]): Map<string, ShapedStats> {
    const out = new Map<string, ShapedStats>();
    const limited = sandboxes.map((s) => ({ s, sh: this.of(s) })).filter((x) => x.sh !== undefined);
    if (limited.length === 0) return out;
    const dev = this.devices ?? findShaperDevices(this.rtnl, this.names);
    if (!dev) return out; // not made yet (or gone with the host side): nothing counted
    const cache = new Map<number, Map<number, ShapedCounts>>();
    const classes = (ifindex: number) => {
      if (!cache.has(ifindex)) cache.set(ifindex, readClasses(this.rtnl, ifindex));
      return cache.get(ifindex)!;
    };
    for (const { s, sh } of limited) {
      const st: ShapedStats = {};
      const own = LINK_MODES[s.mode].hostLink;
      if (sh!.egress) st.egress = classes(own ? dev.ifb : dev.parent).get(sh!.minor);
      if (sh!.ingress) {
        if (own) {
          const l = getLinkOrUndefined(this.rtnl, s.hostLink);
          st.ingress = l ? readClasses(this.rtnl, l.index).get(OWN_CLASS_MINOR) : undefined;
        } else {
          st.ingress = classes(dev.gateway).get(sh!.minor);
        }
      }
      out.set(s.ip, st);
    }
    return out;
  }
}
