// The link drivers by mode.
import type { SandboxMode } from '../../core/link-modes.js';
import type { LinkDriver } from './driver.js';
import { macvlanDriver } from './macvlan.js';
import { tapDriver } from './tap.js';
import { vethDriver } from './veth.js';

export type { LinkDriver, SandboxEnd, SandboxNetSpec } from './driver.js';

const DRIVERS: Record<SandboxMode, LinkDriver> = { veth: vethDriver, macvlan: macvlanDriver, tap: tapDriver };

export function linkDriver(mode: SandboxMode): LinkDriver {
  return DRIVERS[mode];
}
