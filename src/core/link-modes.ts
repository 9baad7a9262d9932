// The pure half of each way a sandbox can be attached (its kernel half is a link driver,
// kernel/links/): the admission element the filter checks its packets against, and whether
// it has a host end of its own. Adding a mode is one entry here and one driver there.
import type { SandboxMode, SandboxSpec } from './sandbox-spec.js';

export type { SandboxMode };

interface LinkMode {
  /** Whether the sandbox has a host-side link of its own (named by sandboxLinkName). */
  hostLink: boolean;
  /** What identifies its packets at the host: the set element the source check looks up. */
  admission(s: SandboxSpec): { set: 'veth_src' | 'macvlan_src'; elem: unknown };
}

export const LINK_MODES = {
  // Its own host link, its MAC and address: nothing inside can forge the link.
  veth: { hostLink: true, admission: (s) => ({ set: 'veth_src', elem: { concat: [s.hostLink, s.mac, s.ip] } }) },
  // One shared host link: its (unguessable) MAC and address.
  macvlan: { hostLink: false, admission: (s) => ({ set: 'macvlan_src', elem: { concat: [s.mac, s.ip] } }) },
  // A TAP for a microVM inside the sandbox's namespace, joined to the host by a veth whose
  // host end is the sandbox's own link (core/tap.ts): the guest's frames reach the host
  // unchanged, so they are checked exactly as a veth sandbox's, by link, guest MAC and address.
  tap: { hostLink: true, admission: (s) => ({ set: 'veth_src', elem: { concat: [s.hostLink, s.mac, s.ip] } }) },
} satisfies Record<SandboxMode, LinkMode>;

export function isSandboxMode(m: unknown): m is SandboxMode {
  return typeof m === 'string' && Object.prototype.hasOwnProperty.call(LINK_MODES, m);
}

/** The mode the warm pool holds when creates default to `defaultMode`: it holds no macvlan (a macvlan member would need the parent at acquisition anyway). */
export function poolModeOf(defaultMode: SandboxMode): SandboxMode {
  return defaultMode === 'macvlan' ? 'veth' : defaultMode;
}
