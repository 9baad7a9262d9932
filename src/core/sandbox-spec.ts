// One sandbox in the kernel's terms: what its set elements, objects and flow decisions are
// derived from (sandbox-elements.ts, sandbox-limits.ts, flow-decision.ts).
import type { Policy } from './policy.js';
import type { PortMapping } from './publish.js';

/** How a sandbox is attached to the host: each has an entry in link-modes.ts and a kernel driver (kernel/links/). */
export type SandboxMode = 'veth' | 'macvlan' | 'tap';

export interface SandboxSpec {
  ip: string;
  mac: string;
  mode: SandboxMode;
  /** Host end of its link, for modes that have one (veth, tap). */
  hostLink: string;
  policy: Policy;
  /** Host ports translated to its ports (absent: none). */
  publish?: PortMapping[];
}
