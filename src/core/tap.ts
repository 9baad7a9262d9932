// TAP sandboxes for microVMs (Firecracker, Cloud Hypervisor, QEMU): the options a VMM needs
// on the device and what it must be told about it. Pure.
//
// Topology (docs/microvm.md has the reasoning): Firecracker's jailer pattern. The TAP lives
// inside the sandbox's own namespace, the VMM is started there, and the namespace is joined
// to the host by a veth exactly as a veth sandbox is. Inside, tc moves every frame between
// the TAP and the veth unchanged (u32 match-all + mirred redirect, both ways): no bridge, no
// address, nothing in the namespace answers or originates a packet. So the host end sees
// the guest's own MAC and address on the sandbox's own link, and every host-side rule of a
// veth sandbox applies to the guest unchanged, out of reach of root in the guest (and of the
// VMM, which could at most send what the guest could).
import { ToastnetError } from '../errors.js';
import { formatIPv4, maskOf } from './ipv4.js';

/** The TAP's name inside the sandbox's namespace: every sandbox has its own namespace, so one name serves all. */
export const TAP_DEVICE = 'tap0';
/** Most queues a multiqueue TAP is opened with here (the kernel allows 256; VMMs use one per vCPU). */
export const MAX_TAP_QUEUES = 64;

/** Options of the device, as a create asks for them. */
export interface TapOptions {
  /** IFF_VNET_HDR: virtio-net headers (checksum and segmentation offloads). Default true. */
  vnetHdr?: boolean;
  /** Queues the VMM will open; more than 1 makes the device IFF_MULTI_QUEUE. Default 1. */
  queues?: number;
  /** uid that may open the device without CAP_NET_ADMIN (a jailed VMM). */
  owner?: number;
  /** gid that may open the device without CAP_NET_ADMIN. */
  group?: number;
}

/** The options with their defaults filled in. */
export interface TapDevice {
  vnetHdr: boolean;
  queues: number;
  owner?: number;
  group?: number;
}

/** Checks and completes TAP options; throws invalid_argument naming the bad field. */
export function resolveTapOptions(o: TapOptions | undefined): TapDevice {
  const t = o ?? {};
  if (typeof t !== 'object' || Array.isArray(t)) throw new ToastnetError('invalid_argument', 'tap: want an object');
  for (const k of Object.keys(t)) {
    if (!['vnetHdr', 'queues', 'owner', 'group'].includes(k)) throw new ToastnetError('invalid_argument', `tap.${k}: unknown option (vnetHdr, queues, owner, group)`);
  }
  if (t.vnetHdr !== undefined && typeof t.vnetHdr !== 'boolean') throw new ToastnetError('invalid_argument', 'tap.vnetHdr: want true or false');
  const queues = t.queues ?? 1;
  if (!Number.isInteger(queues) || queues < 1 || queues > MAX_TAP_QUEUES) throw new ToastnetError('invalid_argument', `tap.queues: want an integer from 1 to ${MAX_TAP_QUEUES}, got ${String(t.queues)}`);
  for (const k of ['owner', 'group'] as const) {
    const v = t[k];
    if (v !== undefined && (!Number.isInteger(v) || v < 0 || v > 0xfffffffe)) throw new ToastnetError('invalid_argument', `tap.${k}: want a numeric ${k === 'owner' ? 'uid' : 'gid'}, got ${String(v)}`);
  }
  return { vnetHdr: t.vnetHdr ?? true, queues, ...(t.owner !== undefined ? { owner: t.owner } : {}), ...(t.group !== undefined ? { group: t.group } : {}) };
}

/** Whether a device with these options is what a pool member has (the defaults). */
export function isDefaultTap(d: TapDevice): boolean {
  return d.vnetHdr && d.queues === 1 && d.owner === undefined && d.group === undefined;
}

/**
 * The kernel's `ip=` argument for the guest: ADDR::GW:MASK::eth0:off:DNS (nfsroot.txt's
 * client:server:gw:netmask:hostname:device:autoconf:dns0). The gateway is also the DNS server.
 */
export function kernelIpArg(ip: string, gateway: string, prefixLength: number): string {
  return `ip=${ip}::${gateway}:${formatIPv4(maskOf(prefixLength))}::eth0:off:${gateway}`;
}

/** What a VMM is pointed at (in create --json and the API), for a TAP sandbox. */
export interface TapInfo {
  /** The device's name inside `netns`: Firecracker host_dev_name, Cloud Hypervisor tap=, QEMU ifname=. */
  device: string;
  /** Start the VMM in this network namespace (jailer --netns, nsenter --net=, setns). */
  netns: string;
  /** The MAC the guest's NIC must have: anything else is dropped at the host. */
  guestMac: string;
  ip: string;
  prefixLength: number;
  gateway: string;
  dns: string;
  /** Ready kernel command-line argument for guests that configure from it. */
  kernelIp: string;
  vnetHdr: boolean;
  queues: number;
  owner?: number;
  group?: number;
}

export function tapInfo(s: { ip: string; mac: string; gateway: string; prefixLength: number; netns: string }, d: TapDevice): TapInfo {
  return {
    device: TAP_DEVICE, netns: s.netns, guestMac: s.mac, ip: s.ip, prefixLength: s.prefixLength, gateway: s.gateway, dns: s.gateway,
    kernelIp: kernelIpArg(s.ip, s.gateway, s.prefixLength), ...d,
  };
}
