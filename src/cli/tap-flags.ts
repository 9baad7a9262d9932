// `create --mode tap` flags -> the TAP options of the create request (checked by the engine).
import { ToastnetError } from '../errors.js';
import type { TapOptions } from '../core/tap.js';

export interface TapFlags {
  /** commander's --no-vnet-hdr: false when given, true otherwise. */
  vnetHdr?: boolean;
  queues?: string;
  tapOwner?: string;
  tapGroup?: string;
}

function integer(flag: string, v: string): number {
  if (!/^\d+$/.test(v)) throw new ToastnetError('invalid_argument', `${flag} ${v}: want a non-negative integer`);
  return Number(v);
}

/** The options the flags ask for, or undefined when none was given (a veth create stays free of them). */
export function tapFromFlags(o: TapFlags): TapOptions | undefined {
  const t: TapOptions = {};
  if (o.vnetHdr === false) t.vnetHdr = false;
  if (o.queues !== undefined) t.queues = integer('--queues', o.queues);
  if (o.tapOwner !== undefined) t.owner = integer('--tap-owner', o.tapOwner);
  if (o.tapGroup !== undefined) t.group = integer('--tap-group', o.tapGroup);
  return Object.keys(t).length > 0 ? t : undefined;
}
