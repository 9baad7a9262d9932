// Small builders of libnftables JSON expressions, and the match of one egress rule: shared by
// the ruleset and what compiles policies into elements.
import { EgressRule } from './egress-rule.js';
import { formatIPv4, parseCidr } from './ipv4.js';

export type Expr = Record<string, unknown>;

export const meta = (key: string) => ({ meta: { key } });
export const payload = (protocol: string, field: string) => ({ payload: { protocol, field } });
export const match = (left: unknown, right: unknown, op = '=='): Expr => ({ match: { op, left, right } });
export const prefixValue = (cidr: string): unknown => {
  const c = parseCidr(cidr);
  return c.prefix === 32 ? formatIPv4(c.network) : { prefix: { addr: formatIPv4(c.network), len: c.prefix } };
};
export const ctState = (states: string[]): Expr => match({ ct: { key: 'state' } }, states, 'in');
/**
 * A flow's first packet: new, and its conntrack entry not yet confirmed (that happens as the
 * packet leaves the host). `ct state new` alone also matches every later packet of a flow
 * that has had no reply yet (one-way UDP), which is not a new connection.
 */
export const firstPacket = (): Expr[] => [ctState(['new']), match({ ct: { key: 'status' } }, 'confirmed', '!')];
/** An address of the packet's flow as conntrack recorded it (for a related packet: of the flow it relates to). */
export const ctAddr = (dir: 'original' | 'reply', field: 'saddr' | 'daddr'): Expr => ({ ct: { key: `ip ${field}`, dir } });

/** Matches for one allow/deny entry: destination prefix, protocol, ports. */
export function egressRuleMatch(r: EgressRule): Expr[] {
  const out: Expr[] = [match(payload('ip', 'daddr'), prefixValue(`${formatIPv4(r.cidr.network)}/${r.cidr.prefix}`))];
  if (r.proto) out.push(match(meta('l4proto'), r.proto));
  else if (r.ports) out.push(match(meta('l4proto'), { set: ['tcp', 'udp'] }));
  if (r.ports) {
    out.push(match(payload('th', 'dport'), r.ports.from === r.ports.to ? r.ports.from : { range: [r.ports.from, r.ports.to] }));
  }
  return out;
}
