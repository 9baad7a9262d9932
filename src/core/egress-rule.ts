// One allow/deny entry of the form CIDR[:port[-port]][/tcp|udp|icmp], e.g.
// "172.16.5.5:5432/tcp", "10.0.0.0/8", "198.51.100.0/24:8000-8999", "192.0.2.1/udp".
import { ToastnetError } from '../errors.js';
import { Cidr, formatCidr, parseCidr } from './ipv4.js';

export type Proto = 'tcp' | 'udp' | 'icmp';

export interface EgressRule {
  cidr: Cidr;
  /** Inclusive port range; absent = every port. */
  ports?: { from: number; to: number };
  /** Absent = every protocol (or tcp+udp when ports are given). */
  proto?: Proto;
  /** The entry as the operator wrote it, for messages and logs. */
  text: string;
}

const RE = /^(\d{1,3}(?:\.\d{1,3}){3}(?:\/\d{1,2})?)(?::(\d{1,5})(?:-(\d{1,5}))?)?(?:\/(tcp|udp|icmp))?$/;

export function parseEgressRule(text: string, what = 'rule'): EgressRule {
  const m = RE.exec(String(text).trim());
  if (!m) {
    throw new ToastnetError('invalid_argument', `${what}: "${text}" is not CIDR[:port[-port]][/tcp|udp|icmp]`);
  }
  const cidr = parseCidr(m[1], what);
  const rule: EgressRule = { cidr, text: String(text).trim() };
  if (m[2] !== undefined) {
    const from = Number(m[2]);
    const to = m[3] !== undefined ? Number(m[3]) : from;
    if (from < 1 || to > 65535 || from > to) {
      throw new ToastnetError('invalid_argument', `${what}: "${text}" has a bad port range (1-65535, low-high)`);
    }
    rule.ports = { from, to };
  }
  if (m[4] !== undefined) rule.proto = m[4] as Proto;
  if (rule.proto === 'icmp' && rule.ports) {
    throw new ToastnetError('invalid_argument', `${what}: "${text}": icmp has no ports`);
  }
  return rule;
}

export function formatEgressRule(r: EgressRule): string {
  let s = formatCidr(r.cidr);
  if (r.ports) s += r.ports.from === r.ports.to ? `:${r.ports.from}` : `:${r.ports.from}-${r.ports.to}`;
  if (r.proto) s += `/${r.proto}`;
  return s;
}
