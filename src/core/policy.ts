// The per-sandbox policy document: schema, defaults and merging. One zod schema is the
// contract for `create --policy`, the API and the config's `defaultPolicy`.
import { z } from 'zod';
import { ToastnetError } from '../errors.js';
import { EgressRule, parseEgressRule } from './egress-rule.js';
import { SANDBOX_NAME_RE } from './names.js';
import { parseBytes, parseRate } from './units.js';

/** A domain name or a wildcard over its subdomains: "pypi.org", "*.githubusercontent.com". */
export const DOMAIN_RE = /^(\*\.)?(?=.{1,253}$)([a-zA-Z0-9_](?:[a-zA-Z0-9_-]{0,61}[a-zA-Z0-9_])?\.)*[a-zA-Z0-9_](?:[a-zA-Z0-9_-]{0,61}[a-zA-Z0-9_])?\.?$/;

const entry = (where: string) => z.string().superRefine((s, ctx) => {
  try {
    parseEgressRule(s, where);
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: (err as Error).message.replace(/^[a-zA-Z.]+: /, '') });
  }
});

/** "8080", "8080/tcp", "9000-9100/udp": a port or range, optionally one protocol. */
export const PORT_SPEC_RE = /^(\d{1,5})(?:-(\d{1,5}))?(?:\/(tcp|udp))?$/;
const portSpec = z.union([z.number(), z.string()]).superRefine((p, ctx) => {
  try {
    parsePortSpec(p, 'port');
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: (err as Error).message.replace(/^port: /, '') });
  }
});
const rate = (field: string) => z.union([z.number(), z.string()]).superRefine((v, ctx) => {
  try {
    parseRate(v, field);
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: (err as Error).message.replace(/^[a-zA-Z.]+: /, '') });
  }
});
const bytes = (field: string) => z.union([z.number(), z.string()]).superRefine((v, ctx) => {
  try {
    parseBytes(v, field);
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: (err as Error).message.replace(/^[a-zA-Z.]+: /, '') });
  }
});
const count = (max: number) => z.number().int().min(1).max(max);

const groupName = z.string().regex(SANDBOX_NAME_RE, 'a group name is 1-63 of [A-Za-z0-9_.-], starting with a letter or digit');

export const PolicySchema = z.strictObject({
  mode: z.enum(['enforce', 'report']).optional()
    .describe('enforce (default): block; report: block nothing, log what would have been blocked and by which rule'),
  egress: z.strictObject({
    internet: z.boolean().optional().describe('public internet allowed (default true)'),
    allow: z.array(entry('egress.allow')).optional().describe('CIDR[:port[-port]][/tcp|udp|icmp] opened for this sandbox, also in private space'),
    deny: z.array(entry('egress.deny')).optional().describe('CIDR[:port[-port]][/tcp|udp|icmp] closed for this sandbox'),
    domains: z.array(z.string().regex(DOMAIN_RE, 'want a name like pypi.org or *.githubusercontent.com')).optional()
      .describe('when set, the internet only at addresses the sandbox\'s DNS answers gave for these names (wildcards: *.example.com)'),
    verifyNames: z.boolean().optional()
      .describe('with domains (default true): a TCP connection to an admitted address must name an allowed domain in what it sends first (TLS SNI, HTTP Host), else it is reset; UDP there is refused (QUIC falls back to TCP). Without domains (default false): a TCP connection to the internet must name what the sandbox\'s own DNS answers gave its address for; UDP to the internet is refused'),
    unnamedPorts: z.array(portSpec).optional()
      .describe('with verifyNames: ports where a checked connection may name nothing (SSH: 22; UDP ports such as "123/udp"); TLS and HTTP there are still checked'),
  }).optional(),
  dns: z.strictObject({
    qps: z.number().positive().max(100000).optional().describe('queries per second (token bucket rate)'),
    burst: z.number().int().positive().max(100000).optional().describe('queries allowed at once'),
    maxFailuresPerMinute: z.number().int().min(1).max(100000).optional().describe('NXDOMAIN/REFUSED answers per minute before further queries are refused'),
    maxNameLength: z.number().int().min(1).max(253).optional().describe('longest name that may be asked (default 253)'),
    maxLabelLength: z.number().int().min(1).max(63).optional().describe('longest label that may be asked (default 63); shorter limits slow DNS exfiltration'),
  }).optional(),
  group: z.union([
    groupName,
    z.strictObject({ name: groupName, ports: z.array(portSpec).optional() }),
  ]).optional().describe('sandboxes of one group may reach each other (on the listed ports, or all)'),
  limits: z.strictObject({
    egressRate: rate('limits.egressRate').optional().describe('upload bandwidth: "10mbit", "5MB/s" or bytes per second'),
    egressBurst: bytes('limits.egressBurst').optional().describe('upload burst in bytes (default: 100 ms of the rate, at least 64 KiB)'),
    ingressRate: rate('limits.ingressRate').optional().describe('download bandwidth'),
    ingressBurst: bytes('limits.ingressBurst').optional().describe('download burst in bytes'),
    newConnsPerSecond: count(1_000_000).optional().describe('new connections per second: a flow\'s first packet (a TCP SYN, a UDP flow\'s first datagram); at most the instance\'s newConnsPerSecond'),
    newConnsBurst: count(1_000_000).optional().describe('new connections allowed at once (default: one second\'s worth)'),
    maxConnections: count(1_000_000).optional().describe('concurrent connections (conntrack entries) from the sandbox'),
    packetsPerSecond: count(100_000_000).optional().describe('packets per second from the sandbox'),
    packetsBurst: count(100_000_000).optional().describe('packets allowed at once (default: a tenth of a second\'s worth, at least 100)'),
    egressBytes: bytes('limits.egressBytes').optional().describe('upload quota over the sandbox\'s lifetime: "10GB"; then its traffic out is blocked'),
    ingressBytes: bytes('limits.ingressBytes').optional().describe('download quota over the sandbox\'s lifetime'),
  }).optional(),
  inbound: z.strictObject({
    enabled: z.boolean().optional().describe('whether the host may open connections into the sandbox (default true)'),
    ports: z.array(portSpec).optional().describe('only these ports (default: all)'),
  }).optional(),
});

export type PolicyInput = z.input<typeof PolicySchema>;

export interface PortRange {
  from: number;
  to: number;
  /** undefined = tcp and udp */
  proto?: 'tcp' | 'udp';
}

/** A policy with every default applied: what compiles to kernel state. */
export interface Policy {
  mode: 'enforce' | 'report';
  internet: boolean;
  allow: EgressRule[];
  deny: EgressRule[];
  group?: { name: string; ports?: PortRange[] };
  inbound: { enabled: boolean; ports?: PortRange[] };
  /** Allowed names (lower case, no trailing dot); undefined = no domain allow-list. */
  domains?: string[];
  /**
   * Name checks on the first flight (core/name-check.ts). With domains: connections to
   * admitted addresses must name an allowed domain. Without: connections to the internet
   * must name what the sandbox's DNS answers gave their address for.
   */
  verifyNames?: boolean;
  /** Ports where such a connection may name nothing (see verifyNames). */
  unnamedPorts?: PortRange[];
  dns: { qps: number; burst: number; maxFailuresPerMinute: number; maxNameLength: number; maxLabelLength: number };
  limits: Limits;
}

/** Resolved limits: rates in bytes (or packets, connections) per second, sizes in bytes; absent = unlimited. */
export interface Limits {
  egressRate?: number;
  egressBurst?: number;
  ingressRate?: number;
  ingressBurst?: number;
  newConnsPerSecond?: number;
  newConnsBurst?: number;
  maxConnections?: number;
  packetsPerSecond?: number;
  packetsBurst?: number;
  egressBytes?: number;
  ingressBytes?: number;
}

/** A bandwidth burst that lets TCP reach the rate through a policer: 100 ms of it, at least 64 KiB. */
export const defaultBurst = (rate: number): number => Math.max(64 * 1024, Math.round(rate / 10));

/** Each rate and the burst that belongs to it. */
const BURST_OF = { egressRate: 'egressBurst', ingressRate: 'ingressBurst', newConnsPerSecond: 'newConnsBurst', packetsPerSecond: 'packetsBurst' } as const;

function resolveLimits(l: PolicyInput['limits'] = {}): Limits {
  for (const [rate, burst] of Object.entries(BURST_OF)) {
    if (l[burst] !== undefined && l[rate as keyof typeof BURST_OF] === undefined) {
      throw new ToastnetError('invalid_argument', `policy: field "limits.${burst}" needs limits.${rate}`);
    }
  }
  const out: Limits = {};
  if (l.egressRate !== undefined) {
    out.egressRate = parseRate(l.egressRate, 'limits.egressRate');
    out.egressBurst = l.egressBurst !== undefined ? parseBytes(l.egressBurst, 'limits.egressBurst') : defaultBurst(out.egressRate);
  }
  if (l.ingressRate !== undefined) {
    out.ingressRate = parseRate(l.ingressRate, 'limits.ingressRate');
    out.ingressBurst = l.ingressBurst !== undefined ? parseBytes(l.ingressBurst, 'limits.ingressBurst') : defaultBurst(out.ingressRate);
  }
  if (l.newConnsPerSecond !== undefined) {
    out.newConnsPerSecond = l.newConnsPerSecond;
    out.newConnsBurst = l.newConnsBurst ?? l.newConnsPerSecond;
  }
  if (l.maxConnections !== undefined) out.maxConnections = l.maxConnections;
  if (l.packetsPerSecond !== undefined) {
    out.packetsPerSecond = l.packetsPerSecond;
    out.packetsBurst = l.packetsBurst ?? Math.max(100, Math.round(l.packetsPerSecond / 10));
  }
  if (l.egressBytes !== undefined) out.egressBytes = parseBytes(l.egressBytes, 'limits.egressBytes');
  if (l.ingressBytes !== undefined) out.ingressBytes = parseBytes(l.ingressBytes, 'limits.ingressBytes');
  return out;
}

/**
 * A new-connection limit above the instance's ceiling (config newConnsPerSecond), which holds
 * every sandbox whatever its policy: such a setting would do nothing. Names the first one
 * and its value, undefined if none.
 */
export function aboveConnCeiling(l: Pick<Limits, 'newConnsPerSecond' | 'newConnsBurst'> | undefined, ceiling: number): { field: string; value: number } | undefined {
  for (const field of ['newConnsPerSecond', 'newConnsBurst'] as const) {
    const value = l?.[field];
    if (value !== undefined && value > ceiling) return { field: `limits.${field}`, value };
  }
  return undefined;
}

/** Defaults for the per-sandbox DNS limits when neither the sandbox nor the instance sets them. */
export const DNS_LIMIT_DEFAULTS = { qps: 50, burst: 100, maxFailuresPerMinute: 120, maxNameLength: 253, maxLabelLength: 63 };

/** Whether `name` is covered by the allow-list (exact names, or "*.x" for names under x). */
export function domainAllowed(domains: string[], name: string): boolean {
  const n = name.toLowerCase().replace(/\.$/, '');
  return domains.some((d) => (d.startsWith('*.') ? n.endsWith(d.slice(1)) && n.length > d.length - 1 : n === d));
}

/** Group names follow the sandbox name rules. */
export const GROUP_NAME_RE = SANDBOX_NAME_RE;

export function parsePortSpec(p: number | string, where: string): PortRange {
  if (typeof p === 'number') {
    if (!Number.isInteger(p) || p < 1 || p > 65535) throw new ToastnetError('invalid_argument', `${where}: ${p} is not a port (1-65535)`);
    return { from: p, to: p };
  }
  const m = PORT_SPEC_RE.exec(p);
  if (!m) throw new ToastnetError('invalid_argument', `${where}: "${p}" is not PORT[-PORT][/tcp|udp]`);
  const from = Number(m[1]);
  const to = m[2] ? Number(m[2]) : from;
  if (from < 1 || to > 65535 || from > to) throw new ToastnetError('invalid_argument', `${where}: "${p}" has a bad port range`);
  return { from, to, ...(m[3] ? { proto: m[3] as 'tcp' | 'udp' } : {}) };
}

/** Validates a policy document; errors name the field. */
export function validatePolicy(doc: unknown, source = 'policy'): PolicyInput {
  const r = PolicySchema.safeParse(doc ?? {});
  if (!r.success) {
    const i = r.error.issues[0];
    const where = i.path.join('.');
    const msg = i.code === 'unrecognized_keys' ? `unknown field ${i.keys.map((k) => `"${where ? `${where}.` : ''}${k}"`).join(', ')}` : `field "${where}": ${i.message}`;
    throw new ToastnetError('invalid_argument', `${source}: ${msg}`);
  }
  return r.data;
}

/**
 * A sandbox's policy over the instance's defaults: each field the sandbox sets replaces the
 * default's (lists are replaced, not appended, so a sandbox can narrow a default).
 */
export function mergePolicy(defaults: PolicyInput, own: PolicyInput): PolicyInput {
  return {
    mode: own.mode ?? defaults.mode,
    egress: { ...defaults.egress, ...own.egress },
    dns: { ...defaults.dns, ...own.dns },
    limits: mergeLimits(defaults.limits, own.limits),
    group: own.group ?? defaults.group,
    inbound: { ...defaults.inbound, ...own.inbound },
  };
}

/** Field-wise, but a rate the sandbox sets comes with its own burst, never the default's. */
function mergeLimits(defaults: PolicyInput['limits'] = {}, own: PolicyInput['limits'] = {}): PolicyInput['limits'] {
  const out = { ...defaults, ...own };
  for (const [rate, burst] of Object.entries(BURST_OF)) {
    if (own[rate as keyof typeof BURST_OF] !== undefined && own[burst] === undefined) delete out[burst];
  }
  return out;
}

export function resolvePolicy(p: PolicyInput): Policy {
  const g = p.group === undefined ? undefined : typeof p.group === 'string' ? { name: p.group } : p.group;
  if (g && !GROUP_NAME_RE.test(g.name)) throw new ToastnetError('invalid_argument', `policy: field "group": "${g.name}" is not a valid group name`);
  // Name checks: on by default with a domain allow-list, asked for without one.
  const verifyNames = p.egress?.verifyNames ?? p.egress?.domains !== undefined;
  if (!verifyNames && p.egress?.unnamedPorts) {
    throw new ToastnetError('invalid_argument', 'policy: field "egress.unnamedPorts" needs name checks (egress.domains, or egress.verifyNames true)');
  }
  return {
    mode: p.mode ?? 'enforce',
    internet: p.egress?.internet ?? true,
    allow: (p.egress?.allow ?? []).map((s, i) => parseEgressRule(s, `egress.allow[${i}]`)),
    deny: (p.egress?.deny ?? []).map((s, i) => parseEgressRule(s, `egress.deny[${i}]`)),
    ...(g ? { group: { name: g.name, ...(g.ports ? { ports: g.ports.map((x, i) => parsePortSpec(x, `group.ports[${i}]`)) } : {}) } } : {}),
    inbound: {
      enabled: p.inbound?.enabled ?? true,
      ...(p.inbound?.ports ? { ports: p.inbound.ports.map((x, i) => parsePortSpec(x, `inbound.ports[${i}]`)) } : {}),
    },
    ...(p.egress?.domains ? { domains: p.egress.domains.map((d) => d.toLowerCase().replace(/\.$/, '')) } : {}),
    ...(verifyNames ? {
      verifyNames: true,
      unnamedPorts: (p.egress?.unnamedPorts ?? []).map((x, i) => parsePortSpec(x, `egress.unnamedPorts[${i}]`)),
    } : {}),
    dns: {
      qps: p.dns?.qps ?? DNS_LIMIT_DEFAULTS.qps,
      burst: p.dns?.burst ?? DNS_LIMIT_DEFAULTS.burst,
      maxFailuresPerMinute: p.dns?.maxFailuresPerMinute ?? DNS_LIMIT_DEFAULTS.maxFailuresPerMinute,
      maxNameLength: p.dns?.maxNameLength ?? DNS_LIMIT_DEFAULTS.maxNameLength,
      maxLabelLength: p.dns?.maxLabelLength ?? DNS_LIMIT_DEFAULTS.maxLabelLength,
    },
    limits: resolveLimits(p.limits),
  };
}
