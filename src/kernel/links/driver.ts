// How a sandbox is attached to the host: one small interface, one implementation per mode
// (netavark's network drivers, CNI's one plugin per job). The engine never branches on the
// mode; a new attachment (a TAP device, a namespace made by a container runtime) is one
// more driver here and one more entry in core/link-modes.ts for the elements it needs.
import type { SandboxMode } from '../../core/link-modes.js';
import type { TapDevice } from '../../core/tap.js';
import type { RtnetlinkSocket } from '../rtnetlink.js';
import type { LinkInfo, RouteInfo } from '../rtnetlink-codec.js';

/** What the kernel layer makes for one sandbox. */
export interface SandboxNetSpec {
  netns: string;
  mode: SandboxMode;
  ip: string;
  prefixLength: number;
  gateway: string;
  mac: string;
  /** Host end of the link, for drivers that have one (veth). */
  hostLink: string;
  /** ifindex of the instance's macvlan parent; its presence also says the host side is up. */
  parentIndex?: number;
  /** The TAP's options (tap mode). */
  tap?: TapDevice;
}

/** The sandbox's end as the kernel must make it: eth0, with this index, inside the namespace `nsFd`. */
export interface SandboxEnd {
  name: string;
  index: number;
  nsFd: number;
  mac: string;
}

export interface LinkDriver {
  /**
   * Makes the link: its sandbox end inside the namespace `end.nsFd` (ours, or one a runtime
   * made: adopting is the same call), and whatever the host side needs (a route, sysctls).
   * On failure, `removeHostSide` and the namespace's removal take back what it made.
   */
  make(host: RtnetlinkSocket, s: SandboxNetSpec, end: SandboxEnd): void;
  /**
   * Runs inside the new namespace while it is being made (no switch of its own): opens what
   * must be opened there (tap: /dev/net/tun). Returns an fd that configureInside closes
   * (the caller does, if configureInside is never reached).
   */
  openInside?(s: SandboxNetSpec): number;
  /**
   * Configures the namespace once `end` exists in it, on `inside` (a socket opened there):
   * eth0's address and default route, or (tap) the TAP joined to eth0, made through
   * `opened` (openInside's fd, closed here whatever happens).
   */
  configureInside(inside: RtnetlinkSocket, s: SandboxNetSpec, end: SandboxEnd, opened?: number): void;
  /**
   * Cuts the sandbox off at once on removal, before the reaper has ended what holds its
   * namespace (tap: the VMM keeps the namespace, and with it the link, until it is ended).
   * Optional: veth and macvlan sandboxes stop at their elements' removal.
   */
  cut?(host: RtnetlinkSocket, s: Pick<SandboxNetSpec, 'ip' | 'hostLink'>): void;
  /**
   * Removes host-side state that the namespace's destruction does not take with it.
   * Idempotent: what is gone already is fine.
   */
  removeHostSide(host: RtnetlinkSocket, s: Pick<SandboxNetSpec, 'ip' | 'hostLink'>): void;
  /** Whether the host side of a live sandbox is still there (gc: a reboot or crash took it). */
  present(host: RtnetlinkSocket, s: Pick<SandboxNetSpec, 'hostLink'>): boolean;
  /** The host side as the kernel sees it now (inspect). */
  describeHost(host: RtnetlinkSocket, s: Pick<SandboxNetSpec, 'ip' | 'hostLink'>): { host?: LinkInfo; hostRoutes: RouteInfo[] };
}
