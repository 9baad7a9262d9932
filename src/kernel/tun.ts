// TAP devices through /dev/net/tun (the kernel has no rtnetlink way to create one): open,
// TUNSETIFINDEX, TUNSETIFF with the flags, owner and group, TUNSETPERSIST, close. The device
// stays, empty, until a VMM attaches to it by name. In-process through koffi: `ip tuntap
// add` would cost a process start (~1.7 ms from Node) per sandbox.
//
// The device is made in the namespace the fd was opened in (tun_chr_open keeps the opener's
// namespace), not the caller's at TUNSETIFF: so the fd is opened while a new namespace is
// being made (sandbox-net.ts, already inside it) and the rest runs from home, without a
// second switch into the namespace.
import fs from 'node:fs';
import { check, lib } from './libc.js';
import type { TapDevice } from '../core/tap.js';

// include/uapi/linux/if_tun.h: _IOW('T', nr, int)
const TUNSETIFF = 0x400454ca;
const TUNSETPERSIST = 0x400454cb;
const TUNSETOWNER = 0x400454cc;
const TUNSETGROUP = 0x400454ce;
const TUNSETIFINDEX = 0x400454da;
const IFF_TAP = 0x0002;
const IFF_NO_PI = 0x1000;
const IFF_VNET_HDR = 0x4000;
const IFF_MULTI_QUEUE = 0x0100;
const IFNAMSIZ = 16;
const IFREQ_SIZE = 40;

/** The struct ifreq TUNSETIFF takes: name, then the flags (short) at the union. Pure, unit-tested. */
export function tapIfreq(name: string, d: Pick<TapDevice, 'vnetHdr' | 'queues'>): Buffer {
  const b = Buffer.alloc(IFREQ_SIZE);
  if (Buffer.byteLength(name) >= IFNAMSIZ) throw new RangeError(`interface name too long: ${name}`);
  b.write(name, 0, 'utf8');
  b.writeUInt16LE(IFF_TAP | IFF_NO_PI | (d.vnetHdr ? IFF_VNET_HDR : 0) | (d.queues > 1 ? IFF_MULTI_QUEUE : 0), IFNAMSIZ);
  return b;
}

/** An fd of /dev/net/tun: a TAP made through it belongs to the calling thread's namespace now. */
export function openTun(): number {
  return fs.openSync('/dev/net/tun', 'r+'); // libuv opens with O_CLOEXEC
}

/**
 * Makes a persistent TAP `name` with ifindex `index` (TUNSETIFINDEX: known up front, so no
 * lookup follows; a taken index fails the create) through `fd` (openTun), in the namespace
 * `fd` was opened in. The caller closes `fd`.
 */
export function createTap(fd: number, name: string, index: number, d: TapDevice): void {
  const c = lib();
  const idx = Buffer.alloc(4);
  idx.writeUInt32LE(index);
  check(c.ioctlPtr(fd, TUNSETIFINDEX, idx), `TUNSETIFINDEX ${index}`);
  check(c.ioctlPtr(fd, TUNSETIFF, tapIfreq(name, d)), `TUNSETIFF ${name}`);
  if (d.owner !== undefined) check(c.ioctlInt(fd, TUNSETOWNER, d.owner), `TUNSETOWNER ${name}`);
  if (d.group !== undefined) check(c.ioctlInt(fd, TUNSETGROUP, d.group), `TUNSETGROUP ${name}`);
  check(c.ioctlInt(fd, TUNSETPERSIST, 1), `TUNSETPERSIST ${name}`);
}
