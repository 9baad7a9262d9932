// Bandwidth limits as queues (shaping) rather than drops (policing): what the kernel layer
// sets up for a sandbox with limits.egressRate / ingressRate, as pure numbers.
//
// Why shaping: a policer drops what exceeds the rate, and TCP answers drops with
// retransmissions and a sawtooth; nftables' byte-mode `limit` also keeps a bucket of one
// whole second of the rate plus the burst (nft_limit.c: tokens_max = unit * (rate + burst)
// / rate, unit >= 1 s), so a 20 Mbit/s cap let 51 Mbit/s through in the first second and
// 24-25 Mbit/s over 4 s. An HTB class holds exactly `burst` bytes of tokens and queues the
// rest, so a transfer averages the rate from its first byte (plus burst / duration).
//
// Where the queues live, always on the host side (root inside a sandbox can change any
// qdisc of its own namespace, so none is put there):
//   - traffic into a sandbox: the egress of a host-side device it arrives through; a veth
//     (or tap) sandbox's own host end (one HTB class, the default), macvlan sandboxes' shared
//     gateway link (one class each, picked by destination address);
//   - traffic out of a sandbox: a veth (or tap) host end receives it, and a device's receive
//     side has no queue, so a filter there redirects its packets (those with the sandbox's
//     own source address) to the instance's ifb, whose egress has one class per sandbox
//     (picked by source address); the ifb hands them back to the host end's receive path,
//     where the filter sees them as before. The sender's socket still owns a packet queued
//     there, so TCP small queues hold the sender back (no drops). macvlan sandboxes send
//     through the shared parent link's egress: one class each, picked by source MAC and address.
// Shared devices pick the class with a u32 hash table keyed by the address's low byte, so a
// packet costs one hash and a few comparisons whatever the number of limited sandboxes.
import { ToastnetError } from '../errors.js';
import type { Cidr } from './ipv4.js';
import { parseIPv4 } from './ipv4.js';
import type { SandboxSpec } from './sandbox-spec.js';

/** One direction's shaping: an HTB class of `rate` bytes/s holding `burst` bytes of tokens, and its queue. */
export interface ShapeDirection {
  rate: number;
  burst: number;
  /** Bytes the class's FIFO holds before it drops. */
  queue: number;
  /** HTB's quantum (bytes per round among classes that may send). */
  quantum: number;
}

/** A sandbox's shaping: its class minor on the shared devices, its address's u32 slot, and each direction. */
export interface SandboxShaping {
  ip: string;
  /** HTB class minor (the major is SHAPER_MAJOR), from the address's offset in the subnet. */
  minor: number;
  /** u32 bucket (the address's low byte) and node within it. */
  bucket: number;
  node: number;
  egress?: ShapeDirection;
  ingress?: ShapeDirection;
}

/** The HTB root's major on every device toastnet shapes ("1:"). */
export const SHAPER_MAJOR = 1;
/** A single-sandbox device's (veth host end) one class. */
export const OWN_CLASS_MINOR = 1;
/** The u32 hash table of the shared devices ("1:"), with a bucket per value of the address's low byte. */
export const SHAPER_TABLE = 1;
export const SHAPER_BUCKETS = 256;
/** Priority of the shaping filters. */
export const SHAPER_PRIO = 1;

/**
 * Queue per class. Traffic out of a sandbox is held back at its sender by TCP small queues
 * (the queued packets are still its socket's), so its queue is mostly empty and only needs
 * room for many flows at once; traffic into it comes from senders elsewhere that only slow
 * down on loss or delay, so its queue is what absorbs their bursts: 200 ms of the rate
 * (at least 256 KiB) keeps TCP's losses to a few per transfer at tens of Mbit/s.
 */
export function queueBytes(rate: number, dir: 'egress' | 'ingress'): number {
  return dir === 'egress' ? Math.max(4 * 1024 * 1024, Math.round(rate / 2)) : Math.max(256 * 1024, Math.round(rate / 5));
}

/** HTB's quantum: a tenth of a second's worth, within what HTB accepts without complaint (1,000-200,000). */
export function quantumBytes(rate: number): number {
  return Math.min(200_000, Math.max(1514, Math.round(rate / 10)));
}

/** The largest class minor (HTB's minors are 16 bits; 0 and 0xffff are not class ids). */
const MAX_MINOR = 0xfffe;

/**
 * The class minor of a sandbox address: its offset in the subnet. Unique among live
 * sandboxes for any subnet up to /16 (the default); in a larger one, addresses past the
 * first 65,534 cannot carry a bandwidth limit (refused, never shared).
 */
export function shapingMinor(ip: string, subnet: Cidr): number {
  const offset = parseIPv4(ip) - subnet.network;
  if (offset < 1 || offset > MAX_MINOR) {
    throw new ToastnetError('invalid_argument', `limits.egressRate/ingressRate: address ${ip} is past the first 65,534 of the subnet, which bandwidth limits need (use a subnet of /16 or smaller)`);
  }
  return offset;
}

/**
 * Where an address's filter sits in a shared device's u32 table: the bucket of its low byte,
 * and a node from the byte above (offsets up to 0xfffe lie within one /16, so unique per bucket).
 */
export function shapingSlot(ipNum: number): { bucket: number; node: number } {
  return { bucket: ipNum & 0xff, node: ((ipNum >>> 8) & 0xff) + 1 };
}

/** The sandbox's shaping, or undefined when it has no bandwidth limit. */
export function sandboxShaping(s: Pick<SandboxSpec, 'ip' | 'policy'>, subnet: Cidr): SandboxShaping | undefined {
  const l = s.policy.limits;
  if (!l.egressRate && !l.ingressRate) return undefined;
  const dir = (rate: number, burst: number, d: 'egress' | 'ingress'): ShapeDirection => ({ rate, burst, queue: queueBytes(rate, d), quantum: quantumBytes(rate) });
  return {
    ip: s.ip,
    minor: shapingMinor(s.ip, subnet),
    ...shapingSlot(parseIPv4(s.ip)),
    ...(l.egressRate ? { egress: dir(l.egressRate, l.egressBurst!, 'egress') } : {}),
    ...(l.ingressRate ? { ingress: dir(l.ingressRate, l.ingressBurst!, 'ingress') } : {}),
  };
}

/**
 * What a transfer of `seconds` from its first byte can average under a class of `rate` and
 * `burst` (the bucket starts full): the rate plus the burst spread over the transfer.
 */
export function shapedAverage(rate: number, burst: number, seconds: number): number {
  return rate + burst / seconds;
}

/**
 * The same under nftables' byte-mode `limit` (per second), the policer toastnet used before:
 * its bucket is one second of the rate plus the burst, full at the start.
 */
export function policedAverage(rate: number, burst: number, seconds: number): number {
  return rate + (rate + burst) / seconds;
}
