// IPv4 addresses and prefixes as unsigned 32-bit numbers: what IPAM and the ruleset
// builder compute with. Parsing is ipaddr.js's (strict four-part decimal only).
import ipaddr from 'ipaddr.js';
import { ToastnetError } from '../errors.js';

export interface Cidr {
  /** Network address as uint32. */
  network: number;
  prefix: number;
}

export function parseIPv4(s: string, what = 'address'): number {
  if (typeof s !== 'string' || !ipaddr.IPv4.isValidFourPartDecimal(s)) {
    throw new ToastnetError('invalid_argument', `${what}: "${s}" is not an IPv4 address`);
  }
  const b = ipaddr.IPv4.parse(s).octets;
  return ((b[0] << 24) | (b[1] << 16) | (b[2] << 8) | b[3]) >>> 0;
}

export function formatIPv4(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

export function maskOf(prefix: number): number {
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
}

/** Parses "a.b.c.d/n" (or a bare address as /32); host bits must be zero. */
export function parseCidr(s: string, what = 'CIDR'): Cidr {
  const m = /^(\d{1,3}(?:\.\d{1,3}){3})(?:\/(\d{1,2}))?$/.exec(String(s));
  if (!m || !ipaddr.IPv4.isValidFourPartDecimal(m[1])) throw new ToastnetError('invalid_argument', `${what}: "${s}" is not a CIDR (want a.b.c.d/n)`);
  const addr = parseIPv4(m[1], what);
  const prefix = m[2] === undefined ? 32 : Number(m[2]);
  if (prefix > 32) throw new ToastnetError('invalid_argument', `${what}: "${s}" has prefix length ${prefix} > 32`);
  const network = (addr & maskOf(prefix)) >>> 0;
  if (network !== addr) {
    throw new ToastnetError('invalid_argument', `${what}: "${s}" has host bits set (did you mean ${formatIPv4(network)}/${prefix}?)`);
  }
  return { network, prefix };
}

export function formatCidr(c: Cidr): string {
  return `${formatIPv4(c.network)}/${c.prefix}`;
}

export function cidrContains(c: Cidr, ip: number): boolean {
  return ((ip & maskOf(c.prefix)) >>> 0) === c.network;
}

export function cidrSize(c: Cidr): number {
  return 2 ** (32 - c.prefix);
}

/** Last address of the prefix (the broadcast address for a LAN). */
export function cidrLast(c: Cidr): number {
  return (c.network + cidrSize(c) - 1) >>> 0;
}

export function cidrsOverlap(a: Cidr, b: Cidr): boolean {
  return cidrContains(a, b.network) || cidrContains(b, a.network);
}
