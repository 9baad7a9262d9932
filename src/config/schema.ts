// The configuration contract: one zod schema is the single source for validation,
// defaults and the documentation of each key.
import { z } from 'zod';
import { parseEgressRule } from '../core/egress-rule.js';
import { parseCidr, parseIPv4 } from '../core/ipv4.js';
import { PolicyInput, PolicySchema } from '../core/policy.js';
import { LABEL_KEY_RE, metricLabelName } from '../core/labels.js';

const validates = (fn: (s: string) => unknown) => (s: string, ctx: z.RefinementCtx) => {
  try {
    fn(s);
  } catch (err) {
    // The key is named by the caller: drop the parser's own "key: " prefix.
    ctx.addIssue({ code: 'custom', message: (err as Error).message.replace(/^[a-zA-Z]+: /, '') });
  }
};

export const INSTANCE_RE = /^[a-z][a-z0-9_]{0,23}$/;

/** The daemon's log levels (pino's), least severe first; `silent` logs nothing. */
export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export const ConfigSchema = z.strictObject({
  instance: z.string().regex(INSTANCE_RE, 'lowercase letters, digits and _, starting with a letter, at most 24 characters')
    .default('toastnet')
    .describe('Owner of every kernel object toastnet makes: nft table "inet <instance>", netns "<instance>-<name>", links "tn<hash>…", state and socket'),
  subnet: z.string().superRefine(validates((s) => {
    const c = parseCidr(s, 'subnet');
    if (c.prefix < 8 || c.prefix > 29) throw new Error(`subnet: prefix length must be between /8 and /29, got /${c.prefix}`);
  })).default('10.166.0.0/16').describe('IPv4 subnet sandboxes get their addresses from'),
  gateway: z.string().superRefine(validates((s) => parseIPv4(s, 'gateway'))).optional()
    .describe('Gateway address on the host (default: first address of the subnet); also the sandboxes\' DNS server'),
  dnsUpstreams: z.array(z.string().superRefine(validates((s) => parseUpstream(s)))).min(1).optional()
    .describe('Upstream DNS servers as ip or ip:port (default: the host\'s resolvers, skipping local stubs)'),
  dnsTimeoutMs: z.number().int().min(50).max(30000).default(2000).describe('How long to wait for one upstream before trying the next'),
  dnsMinTtl: z.number().int().min(1).max(86400).default(5).describe('Floor of how long an allowed name\'s addresses stay open after the answer (s); with verifyNames alone, how long a name stays answered with them'),
  dnsMaxTtl: z.number().int().min(1).max(604800).default(3600).describe('Cap of how long an allowed name\'s addresses stay open (s); with verifyNames alone, of how long a name stays answered with them (and what a restarted daemon takes back from the query log)'),
  dnsRefuseWith: z.enum(['refused', 'nxdomain']).default('refused').describe('Answer to a query for a name not on the sandbox\'s allow-list'),
  dnsPacketsPerSecond: z.number().int().min(10).max(1_000_000).default(1000)
    .describe('DNS packets per second (burst: one second\'s worth) each sandbox may send to the gateway; the kernel drops the rest before the resolver\'s sockets, so one sandbox cannot flood out the others\' queries. Keep it above any policy\'s dns.qps'),
  newConnsPerSecond: z.number().int().min(1).max(10_000_000).default(1000)
    .describe('New connections (a flow\'s first packet: a TCP SYN, a UDP flow\'s first datagram) per second, burst one second\'s worth, each sandbox may open through the host, metered in the kernel: one sandbox flooding new connections cannot take the machine, the NAT\'s ports or the name gate from the others. A ceiling: a policy asking for a higher limits.newConnsPerSecond (or newConnsBurst) is refused'),
  dnsCacheSize: z.number().int().min(0).max(1_000_000).default(10_000).describe('Answers the resolver keeps, shared by all sandboxes (policy still applies per sandbox); 0 turns the cache off'),
  allowCidrs: z.array(z.string().superRefine(validates((s) => parseEgressRule(s, 'allowCidrs')))).default([])
    .describe('Destinations opened to every sandbox despite the default deny: CIDR[:port[-port]][/tcp|udp|icmp]'),
  denyCidrs: z.array(z.string().superRefine(validates((s) => parseEgressRule(s, 'denyCidrs')))).default([])
    .describe('Destinations closed to every sandbox; wins over allowCidrs'),
  defaultPolicy: PolicySchema.default({}).describe('Instance-wide policy defaults; each field a sandbox sets replaces the default\'s'),
  allowMetadata: z.boolean().default(false).describe('Let a sandbox policy open the cloud metadata address 169.254.169.254 (otherwise it stays closed whatever the policy says)'),
  denyAction: z.enum(['reject', 'drop']).default('reject').describe('reject: TCP reset / ICMP unreachable (rate-limited), so clients fail fast; drop: silently'),
  logGroup: z.number().int().min(1).max(65535).optional().describe('NFLOG group for denial events (default: derived from the instance name)'),
  defaultMode: z.enum(['veth', 'macvlan', 'tap']).default('veth').describe('How a sandbox is attached when a create names no mode: veth, macvlan, or tap (a TAP for a microVM); the warm pool holds sandboxes of this mode (veth if macvlan)'),
  poolSize: z.number().int().min(0).max(10_000).default(0).describe('Sandbox networks the daemon keeps ready (warm pool) so a create only acquires one; 0: off'),
  poolRefillBelow: z.number().int().min(1).max(10_000).optional().describe('Refill the pool when fewer idle networks remain (default: poolSize, always topped up)'),
  metricsListen: z.string().regex(/^(?:(\d{1,3}(?:\.\d{1,3}){3}):)?(\d{1,5})$/, 'want PORT or IPV4:PORT').optional()
    .describe('Serve Prometheus metrics on GET /metrics at this address (PORT alone: 127.0.0.1:PORT); off unless set'),
  metricsMaxSandboxes: z.number().int().min(0).max(100_000).default(200).describe('Sandboxes with their own label in per-sandbox metrics (the busiest); the rest are summed in the gauge toastnet_sandboxes_unlabelled'),
  metricsLabels: z.array(z.string().regex(LABEL_KEY_RE, 'want a label key (NAME or PREFIX/NAME)')).max(10).default([])
    .superRefine((keys, ctx) => {
      // Two keys that would make one Prometheus label name (a.b and a_b) would mix their values.
      const seen = new Map<string, string>();
      for (const k of keys) {
        const m = metricLabelName(k);
        if (seen.has(m)) ctx.addIssue({ code: 'custom', message: `"${seen.get(m)}" and "${k}" both become the metric label ${m}` });
        seen.set(m, k);
      }
    })
    .describe('Sandbox label keys that become labels (label_<key>) of the per-sandbox metric series; other labels stay out of Prometheus'),
  flowRetention: z.number().int().min(0).max(100_000_000).default(1_000_000)
    .describe('Flow records (GET /v1/flows, `events --flows`) kept in the state database, the oldest deleted first; 0 turns the flow log off'),
  logLevel: z.enum(LOG_LEVELS).default('info').describe('The daemon\'s log level: trace, debug (every API request), info (changes, start and stop), warn, error, fatal, silent'),
  stateDir: z.string().optional().describe('Where the state database lives (default /var/lib/toastnet/<instance>)'),
  runDir: z.string().optional().describe('Where the API socket and lock live (default /run/toastnet/<instance>)'),
});

export type ConfigInput = z.input<typeof ConfigSchema>;

/** A fully resolved configuration: every optional key filled in. */
export interface Config {
  instance: string;
  subnet: string;
  gateway: string;
  dnsUpstreams: string[];
  dnsTimeoutMs: number;
  dnsMinTtl: number;
  dnsMaxTtl: number;
  dnsRefuseWith: 'refused' | 'nxdomain';
  dnsCacheSize: number;
  dnsPacketsPerSecond: number;
  newConnsPerSecond: number;
  allowCidrs: string[];
  denyCidrs: string[];
  defaultPolicy: PolicyInput;
  allowMetadata: boolean;
  denyAction: 'reject' | 'drop';
  defaultMode: 'veth' | 'macvlan' | 'tap';
  logGroup: number;
  /** host and port of the metrics listener, or undefined (off). */
  metrics?: { host: string; port: number };
  metricsMaxSandboxes: number;
  /** Sandbox label keys promoted to metric labels. */
  metricsLabels: string[];
  /** Flow records kept; 0: no flow log. */
  flowRetention: number;
  logLevel: LogLevel;
  pool: { size: number; refillBelow: number };
  stateDir: string;
  runDir: string;
  /**
   * What was configured (file, environment and flags merged, before defaults): what `up
   * --persist` writes, so that the unit resolves defaults (the host's DNS servers, say) at
   * each start instead of freezing them. Absent for configs built in code.
   */
  given?: Partial<ConfigInput>;
}

export function parseUpstream(s: string): { host: string; port: number } {
  const m = /^(\d{1,3}(?:\.\d{1,3}){3})(?::(\d{1,5}))?$/.exec(s);
  if (!m) throw new Error(`dnsUpstreams: "${s}" is not ip or ip:port (IPv4)`);
  parseIPv4(m[1], 'dnsUpstreams');
  const port = m[2] ? Number(m[2]) : 53;
  if (port < 1 || port > 65535) throw new Error(`dnsUpstreams: "${s}" has a bad port`);
  return { host: m[1], port };
}
