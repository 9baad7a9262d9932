// Which sandbox a logged denial belongs to, and the rule that decided it, for events.
import { INBOUND_REASONS, LIMIT_REASONS, type DenyReason } from '../core/deny-reasons.js';
import type { FlowJudge } from '../core/flow-decision.js';
import type { Limits } from '../core/policy.js';
import { formatBytes } from '../core/units.js';
import type { LoggedPacket } from '../kernel/nflog-codec.js';
import type { Attribution } from './events.js';
import type { LiveSandboxes } from './live-sandboxes.js';

export function attributeDenial(live: LiveSandboxes, judge: FlowJudge, p: LoggedPacket, reason: DenyReason): Attribution | undefined {
  const found = live.at(INBOUND_REASONS.includes(reason) ? p.dst : p.src);
  if (!found) return undefined;
  const { name, spec } = found;
  let rule: string;
  if (reason === 'host') rule = 'host services (only DNS on the gateway is open)';
  else if (reason === 'inbound') rule = spec.policy.inbound.enabled ? 'inbound port not listed' : 'inbound closed';
  else if (LIMIT_REASONS.includes(reason)) rule = limitRule(reason, spec.policy.limits);
  else rule = judge.decide(spec, live.peersOf(name, spec), { daddr: p.dst, proto: p.proto, dport: p.dport ?? 0 }).by;
  return { sandbox: name, rule, action: spec.policy.mode === 'report' ? 'reported' : 'blocked' };
}

/** The limit behind a limit denial, with its setting. */
function limitRule(reason: DenyReason, l: Limits): string {
  switch (reason) {
    case 'packets': return `limits.packetsPerSecond ${l.packetsPerSecond ?? '?'}`;
    case 'connrate': return `limits.newConnsPerSecond ${l.newConnsPerSecond ?? '?'}`;
    case 'connections': return `limits.maxConnections ${l.maxConnections ?? '?'}`;
    case 'quota_out': return `limits.egressBytes ${l.egressBytes ? formatBytes(l.egressBytes) : '?'} spent`;
    case 'quota_in': return `limits.ingressBytes ${l.ingressBytes ? formatBytes(l.ingressBytes) : '?'} spent`;
    case 'conn_flood': return 'newConnsPerSecond, the instance\'s ceiling of new connections per sandbox';
    default: return reason;
  }
}
