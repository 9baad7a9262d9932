// Rates and sizes as people write them: "10mbit" (bits per second, like tc), "5MB/s"
// (bytes per second), "1GiB"; a plain number is bytes (per second). SI prefixes are powers
// of 1000, binary ones (Ki, Mi, Gi) powers of 1024.
import { ToastnetError } from '../errors.js';

const SI: Record<string, number> = { '': 1, k: 1e3, m: 1e6, g: 1e9, t: 1e12 };
const BINARY: Record<string, number> = { ki: 1024, mi: 1024 ** 2, gi: 1024 ** 3, ti: 1024 ** 4 };

function prefixFactor(p: string): number | undefined {
  const l = p.toLowerCase();
  return SI[l] ?? BINARY[l];
}

/** Bytes per second from "10mbit", "800kbit", "5MB/s", "64KiB/s" or a number of bytes per second. */
export function parseRate(v: number | string, where = 'rate'): number {
  if (typeof v === 'number') return checkPositive(v, where, v);
  const s = v.trim();
  // tc's "bps" means bytes per second, which most readers take for bits: refuse the guess.
  if (/^[\d.]+\s*[kmgt]?bps$/i.test(s)) throw new ToastnetError('invalid_argument', `${where}: "${v}" is ambiguous: write bits as "10mbit" or bytes as "10MB/s"`);
  let m = /^(\d+(?:\.\d+)?)\s*([kmgt]i?)?bit(?:\/s)?$/i.exec(s);
  if (m) return checkPositive((Number(m[1]) * prefixFactor(m[2] ?? '')!) / 8, where, v);
  m = /^(\d+(?:\.\d+)?)\s*([kmgt]i?)?b\/s$/i.exec(s);
  if (m && /B\/s$/.test(s)) return checkPositive(Number(m[1]) * prefixFactor(m[2] ?? '')!, where, v);
  throw new ToastnetError('invalid_argument', `${where}: "${v}" is not a rate like "10mbit", "5MB/s" or a number of bytes per second`);
}

/** Bytes from "10MB", "1GiB", "500kB", "1500B" or a number. */
export function parseBytes(v: number | string, where = 'size'): number {
  if (typeof v === 'number') return checkPositive(v, where, v);
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]i?)?B$/i.exec(v.trim());
  if (!m || !/B$/.test(v.trim())) throw new ToastnetError('invalid_argument', `${where}: "${v}" is not a size like "10MB", "1GiB" or a number of bytes`);
  return checkPositive(Number(m[1]) * prefixFactor(m[2] ?? '')!, where, v);
}

function checkPositive(n: number, where: string, original: unknown): number {
  const r = Math.round(n);
  if (!Number.isFinite(n) || r < 1 || r > Number.MAX_SAFE_INTEGER) throw new ToastnetError('invalid_argument', `${where}: ${JSON.stringify(original)} is not a positive amount`);
  return r;
}

/** "12.5 Mbit/s" for a rate in bytes per second (for people reading stats). */
export function formatRate(bytesPerSecond: number): string {
  const bits = bytesPerSecond * 8;
  for (const [p, f] of [['T', 1e12], ['G', 1e9], ['M', 1e6], ['k', 1e3]] as const) if (bits >= f) return `${(bits / f).toFixed(1)} ${p}bit/s`;
  return `${bits.toFixed(0)} bit/s`;
}

/** "1.5 MB" for a number of bytes. */
export function formatBytes(bytes: number): string {
  for (const [p, f] of [['T', 1e12], ['G', 1e9], ['M', 1e6], ['k', 1e3]] as const) if (bytes >= f) return `${(bytes / f).toFixed(1)} ${p}B`;
  return `${bytes} B`;
}
