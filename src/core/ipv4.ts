// IPv4 addresses and prefixes as unsigned 32-bit numbers: what IPAM and the ruleset
// builder compute with. Parsing accepts what ipaddr.js's isValidFourPartDecimal accepts
// (strict four-part decimal only), written out: the resolver parses an address per query
// and per answer record, and ipaddr.js's regular expressions cost ~3 us each time.
import ipaddr from 'ipaddr.js';
import { ToastnetError } from '../errors.js';

export interface Cidr {
  /** Network address as uint32. */
  network: number;
  prefix: number;
}

/**
 * `s` as a uint32, or -1 unless it is four decimal parts of 0-255 joined by dots, without
 * leading zeros (ipaddr.js's isValidFourPartDecimal: "010.0.0.1" and "1.2.3" are not addresses).
 */
export function ipv4OrNegative(s: string): number {
  const len = s.length;
  if (len < 7 || len > 15) return -1;
  let n = 0;
  let part = 0;
  let digits = 0;
  let parts = 0;
  for (let i = 0; i <= len; i++) {
    const c = i < len ? s.charCodeAt(i) : 0x2e;
    if (c === 0x2e) {
      if (digits === 0 || part > 255) return -1;
      n = n * 256 + part;
      parts++;
      part = 0;
      digits = 0;
    } else if (c >= 0x30 && c <= 0x39) {
      if (digits > 0 && part === 0) return -1; // a leading zero
      part = part * 10 + (c - 0x30);
      if (++digits > 3) return -1;
    } else {
      return -1;
    }
  }
  return parts === 4 ? n : -1;
}

export function parseIPv4(s: string, what = 'address'): number {
  const n = typeof s === 'string' ? ipv4OrNegative(s) : -1;
  if (n < 0) throw new ToastnetError('invalid_argument', `${what}: "${s}" is not an IPv4 address`);
  return n;
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
