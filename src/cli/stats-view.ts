// How `toastnet stats` and `toastnet top` show accounting to people: pure formatting of
// SandboxStats (and of two readings' difference, for rates).
import type { SandboxStats } from '../service/accounting.js';
import { formatBytes, formatRate } from '../core/units.js';
import type { RuntimeAttachment } from '../core/cni.js';

/** "ctr-a eth0 (pod team/web-0)": a CNI attachment by the runtime's names. */
export function describeAttachment(a: RuntimeAttachment): string {
  const pod = a.podName ? ` (pod ${a.podNamespace ? `${a.podNamespace}/` : ''}${a.podName})` : '';
  return `${a.containerId} ${a.ifname}${pod}`;
}

/** One sandbox in detail. */
export function formatStats(s: SandboxStats): string {
  const lines = [
    `${s.name} (${s.ip})`,
    ...(s.attachment ? [`  container  ${describeAttachment(s.attachment)}`] : []),
    `  sent       ${formatBytes(s.sent.bytes)} in ${s.sent.packets} packets`,
    `  received   ${formatBytes(s.received.bytes)} in ${s.received.packets} packets`,
    `  blocked    ${s.blocked.packets} packets${Object.keys(s.blocked.logged).length ? `; logged by reason: ${Object.entries(s.blocked.logged).map(([r, n]) => `${r} ${n}`).join(', ')}` : ''}`,
  ];
  if (s.quota.egress) lines.push(`  quota out  ${formatBytes(s.quota.egress.used)} of ${formatBytes(s.quota.egress.bytes)} used`);
  if (s.quota.ingress) lines.push(`  quota in   ${formatBytes(s.quota.ingress.used)} of ${formatBytes(s.quota.ingress.bytes)} used`);
  const l = s.limits;
  const set = [
    l.egressRate && `egress ${formatRate(l.egressRate)}`,
    l.ingressRate && `ingress ${formatRate(l.ingressRate)}`,
    l.packetsPerSecond && `${l.packetsPerSecond} packets/s`,
    l.newConnsPerSecond && `${l.newConnsPerSecond} new connections/s`,
    l.maxConnections && `${l.maxConnections} connections`,
  ].filter(Boolean);
  lines.push(`  limits     ${set.length ? set.join(', ') : 'none'}`);
  if (s.published) lines.push(`  published  ${s.published.connections} connections in`);
  for (const [way, c] of [['out', s.shaped?.egress], ['in', s.shaped?.ingress]] as const) {
    if (c) lines.push(`  shaped ${way.padEnd(3)} ${formatBytes(c.bytes)} passed, ${c.dropped} packets dropped (queue full), ${formatBytes(c.backlog)} waiting`);
  }
  if (s.dns) lines.push(`  dns        ${s.dns.queries} queries, ${s.dns.refused} refused, ${s.dns.limited} limited, ${s.dns.stripped} stripped`);
  return lines.join('\n');
}

export interface TopRow {
  name: string;
  ip: string;
  /** Bytes per second since the previous reading. */
  outRate: number;
  inRate: number;
  /** Blocked packets per second since the previous reading. */
  blockedRate: number;
  sent: number;
  received: number;
  blocked: number;
}

/** Rates between two readings `seconds` apart, busiest first (sandboxes new in `now` count from zero). */
export function topRows(before: SandboxStats[], now: SandboxStats[], seconds: number): TopRow[] {
  const prev = new Map(before.map((s) => [s.name, s]));
  const rate = (a: number, b: number | undefined) => Math.max(0, (a - (b ?? 0)) / seconds);
  return now.map((s) => {
    const p = prev.get(s.name);
    return {
      name: s.name,
      ip: s.ip,
      outRate: rate(s.sent.bytes, p?.sent.bytes),
      inRate: rate(s.received.bytes, p?.received.bytes),
      blockedRate: rate(s.blocked.packets, p?.blocked.packets),
      sent: s.sent.bytes,
      received: s.received.bytes,
      blocked: s.blocked.packets,
    };
  }).sort((a, b) => b.outRate + b.inRate - (a.outRate + a.inRate) || b.blockedRate - a.blockedRate || a.name.localeCompare(b.name));
}

export function formatTop(rows: TopRow[], max = 40): string {
  const head = `${'SANDBOX'.padEnd(20)} ${'ADDRESS'.padEnd(15)} ${'OUT/s'.padStart(14)} ${'IN/s'.padStart(14)} ${'BLOCKED/s'.padStart(9)} ${'SENT'.padStart(10)} ${'RECEIVED'.padStart(10)} ${'BLOCKED'.padStart(8)}`;
  const body = rows.slice(0, max).map((r) => `${r.name.slice(0, 20).padEnd(20)} ${r.ip.padEnd(15)} ${formatRate(r.outRate).padStart(14)} ${formatRate(r.inRate).padStart(14)} ${r.blockedRate.toFixed(0).padStart(9)} ${formatBytes(r.sent).padStart(10)} ${formatBytes(r.received).padStart(10)} ${String(r.blocked).padStart(8)}`);
  const more = rows.length > max ? [`... and ${rows.length - max} more`] : [];
  return [head, ...body, ...more].join('\n');
}
