// How `status` and `ls` look on a terminal: fixed-width text, one fact per line or one
// sandbox per row. (`--json` prints the API's objects as they are.)
import type { SandboxInfo, Status } from '../api/types.js';
import { publishColumn } from './publish-flags.js';
import { describeAttachment } from './stats-view.js';

/** `mine`: this command's version; the daemon answers with its own, after an upgrade the old one until restarted. */
export function formatStatus(s: Status, mine: string): string {
  return [
    `version     ${s.version}${s.version === mine ? '' : ` (this command is ${mine}: restart the daemon to run it)`}`,
    `instance    ${s.instance} (${s.up ? 'up' : 'down'})`,
    `subnet      ${s.subnet}, gateway ${s.gateway} on ${s.gatewayLink}`,
    `nftables    table ${s.table}`,
    `forwarding  ${s.forwarding ? 'on' : 'off'}`,
    `sandboxes   ${s.sandboxes}${s.pool.idle ? ` (and ${s.pool.idle} ready in the warm pool)` : ''}`,
    `addresses   ${s.addresses.free} free of ${s.addresses.capacity}${s.addresses.releasing ? ` (${s.addresses.releasing} held until processes left in removed sandboxes end)` : ''}`,
    `dns         ${s.dnsUpstreams.join(', ') || '(no upstreams)'}`,
    `daemon      ${s.daemon ? `pid ${s.daemon.pid}, ${s.socket}` : 'not running'}`,
    ...(s.dns ? [`resolver    ${s.dns.queries} queries, ${s.dns.cached} answered from the cache (${s.dns.cacheEntries} kept), ${s.dns.upstreamTimeouts} upstream timeouts`] : []),
  ].join('\n');
}

/** A sandbox's labels as k=v,k2=v2, sorted by key (their syntax keeps them terminal-safe). */
export const labelText = (s: Pick<SandboxInfo, 'labels'>) => Object.entries(s.labels ?? {}).sort(([a], [b]) => a.localeCompare(b)).map(([k, v]) => `${k}=${v}`).join(',');

/**
 * The `ls` table. CONTAINER only when a runtime's container is attached through CNI (its
 * ids, its pod); LABELS only when a sandbox has labels: the common table stays as it was.
 */
export function formatSandboxes(list: SandboxInfo[]): string {
  const attached = list.some((s) => s.attachment);
  const withLabels = list.some((s) => labelText(s) !== '');
  const rows = [
    ['NAME', 'IP', 'MODE', 'NETNS', 'CREATED', 'PUBLISH', ...(attached ? ['CONTAINER'] : []), ...(withLabels ? ['LABELS'] : [])],
    ...list.map((s) => [
      s.name, s.ip, s.mode, s.netns, s.createdAt, publishColumn(s.publish),
      ...(attached ? [s.attachment ? describeAttachment(s.attachment) : ''] : []),
      ...(withLabels ? [labelText(s)] : []),
    ]),
  ];
  const w = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(w[i])).join('  ').trimEnd()).join('\n');
}
