// The API's wire shapes as zod schemas: what the routes validate requests with and what the
// OpenAPI document (openapi.ts) describes responses with. api/types.ts keeps the TypeScript
// interfaces a client compiles against (with their comments); the assertions at the end of
// this file fail the build when a schema and its interface disagree, so the document cannot
// drift from what the code produces. Pure: zod and the core's schemas, no I/O.
import { z } from 'zod';
import { ERROR_CODES } from '../errors.js';
import { LINK_MODES, type SandboxMode } from '../core/link-modes.js';
import { PolicySchema } from '../core/policy.js';
import { LabelsSchema } from '../core/labels.js';
import { DAEMON_REASONS, DENY_REASONS, type EventReason } from '../core/deny-reasons.js';
import { QUERY_OUTCOMES } from '../dns/query-outcomes.js';
import type * as T from './types.js';
import type { CniRequestBody } from '../core/cni.js';

const modes = Object.keys(LINK_MODES) as [SandboxMode, ...SandboxMode[]];
const count = () => z.number().int().min(0);
const isoTime = () => z.string().describe('ISO 8601 time, UTC');

/**
 * Body of POST /v1/sandboxes as the route checks it: the policy is any JSON here, checked by
 * the engine (whose message names the field at fault). The document shows the policy schema.
 */
/** tap mode: the device's options (core/tap.ts TapOptions; ranges checked by the engine). */
export const TapOptionsSchema = z.strictObject({
  vnetHdr: z.boolean().optional().describe('IFF_VNET_HDR (virtio-net offloads; default true)'),
  queues: z.number().int().optional().describe('queues the VMM opens; >1: IFF_MULTI_QUEUE (default 1)'),
  owner: z.number().int().optional().describe('uid that may open the TAP without CAP_NET_ADMIN'),
  group: z.number().int().optional().describe('gid that may open the TAP without CAP_NET_ADMIN'),
});

/** tap mode: what a VMM is pointed at (core/tap.ts TapInfo). */
export const TapInfoSchema = z.object({
  device: z.string().describe('the device inside netns: Firecracker host_dev_name, Cloud Hypervisor tap=, QEMU ifname='),
  netns: z.string().describe('start the VMM in this network namespace'),
  guestMac: z.string().describe('the MAC the guest\'s NIC must have'),
  ip: z.string(),
  prefixLength: z.number().int(),
  gateway: z.string(),
  dns: z.string(),
  kernelIp: z.string().describe('a ready ip= kernel argument'),
  vnetHdr: z.boolean(),
  queues: z.number().int(),
  owner: z.number().int().optional(),
  group: z.number().int().optional(),
});

export const CreateSandboxRequest = z.strictObject({
  name: z.string().optional().describe('Sandbox name (default sbx-<id>)'),
  mode: z.enum(modes).optional().describe('how the sandbox is attached: veth, macvlan or tap (default: the instance\'s defaultMode)'),
  tap: TapOptionsSchema.optional().describe('tap mode: the device\'s options (range checks by the engine)'),
  policy: z.unknown().optional().describe('The sandbox\'s policy document (validated by the engine)'),
  publish: z.unknown().optional().describe('Ports to publish: [{hostPort, containerPort, protocol?, hostIP?}] (validated by the engine)'),
  labels: z.unknown().optional().describe('key: value metadata (validated by the engine)'),
});

const port = () => z.number().int().min(1).max(65535);
const hostIP = () => z.string().describe('an IPv4 address of the host, not loopback; absent, "" or 0.0.0.0: every address');

/** A published port as the engine answers it (core/publish.ts PortMapping: CNI's portMappings entry). */
export const PortMappingSchema = z.object({ hostPort: port(), containerPort: port(), protocol: z.enum(['tcp', 'udp']), hostIP: hostIP().optional() });

/** The same body as documented: the policy with its schema. */
export const CreateSandboxBodySchema = CreateSandboxRequest.extend({
  policy: PolicySchema.optional().describe('The sandbox\'s own policy document; instance defaults fill what it leaves out'),
  publish: z.array(z.strictObject({ hostPort: port(), containerPort: port(), protocol: z.enum(['tcp', 'udp']).optional().describe('tcp (default) or udp'), hostIP: hostIP().optional() }))
    .optional().describe('host ports translated to the sandbox\'s ports (CNI\'s portMappings entries)'),
  labels: LabelsSchema.optional(),
});

export const ErrorBodySchema = z.object({
  error: z.object({
    code: z.enum(Object.keys(ERROR_CODES) as [keyof typeof ERROR_CODES, ...(keyof typeof ERROR_CODES)[]]),
    message: z.string(),
  }),
});

/** A container runtime's namespace attached through CNI (core/cni.ts RuntimeAttachment). */
export const AttachmentSchema = z.object({
  network: z.string(),
  containerId: z.string(),
  ifname: z.string(),
  netns: z.string().describe('the runtime\'s namespace (never removed by toastnet)'),
  netnsInode: z.number().int().optional(),
  cniVersion: z.string(),
  podName: z.string().optional(),
  podNamespace: z.string().optional(),
}).describe('a runtime\'s container attached through CNI');

/** POST /v1/cni: one CNI call as the toastnet-cni shim forwards it (core/cni.ts CniRequestBody). */
export const CniRequestSchema = z.object({
  command: z.string().describe('CNI_COMMAND: ADD, DEL, CHECK, GC, STATUS, VERSION'),
  containerId: z.string().optional(),
  netns: z.string().optional(),
  ifname: z.string().optional(),
  args: z.string().optional().describe('CNI_ARGS, KEY=VALUE;...'),
  path: z.string().optional(),
  config: z.string().describe('the network configuration, verbatim (JSON text)'),
});

/** A CNI result, shaped for the call's cniVersion: kept open (the spec's versions differ). */
export const CniResultSchema = z.looseObject({ cniVersion: z.string().optional() }).describe('the CNI result the shim prints');

/** The CNI spec's error object (400, or 503 when the caller should try again). */
export const CniErrorSchema = z.object({ cniVersion: z.string(), code: z.number().int(), msg: z.string(), details: z.string().optional() });

export const SandboxInfoSchema = z.object({
  name: z.string(),
  id: z.number().int(),
  ip: z.string(),
  gateway: z.string(),
  prefixLength: z.number().int(),
  netns: z.string().describe('namespace name: /run/netns/<netns>, for nsenter --net= or setns(2)'),
  mac: z.string(),
  mode: z.enum(modes),
  resolvConf: z.string().describe('a file to bind-mount as /etc/resolv.conf'),
  hostLink: z.string().optional().describe('the host end of its link (veth only)'),
  createdAt: isoTime(),
  state: z.string(),
  publish: z.array(PortMappingSchema).optional().describe('its published ports (absent: none)'),
  tap: TapInfoSchema.optional().describe('tap mode: what a VMM is pointed at'),
  attachment: AttachmentSchema.optional(),
  labels: LabelsSchema,
});

export const SandboxListSchema = z.object({ sandboxes: z.array(SandboxInfoSchema) });

export const SandboxInspectionSchema = SandboxInfoSchema.extend({
  kernel: z.unknown().describe('both ends of its link, addresses, routes, counters: for diagnosis; the shape follows the kernel layer and is not kept stable'),
});

const TrafficSchema = z.object({ packets: count(), bytes: count() });
const QuotaSchema = z.object({ bytes: count(), used: count() });
const LimitsSchema = z.object({
  egressRate: z.number().optional(),
  egressBurst: z.number().optional(),
  ingressRate: z.number().optional(),
  ingressBurst: z.number().optional(),
  newConnsPerSecond: z.number().optional(),
  newConnsBurst: z.number().optional(),
  maxConnections: z.number().optional(),
  packetsPerSecond: z.number().optional(),
  packetsBurst: z.number().optional(),
  egressBytes: z.number().optional(),
  ingressBytes: z.number().optional(),
}).describe('resolved limits: rates in bytes (or packets, connections) per second, sizes in bytes; absent = unlimited');

const ShapedCountsSchema = z.object({ bytes: count(), packets: count(), dropped: count(), backlog: count() });

export const SandboxStatsSchema = z.object({
  name: z.string(),
  ip: z.string(),
  sent: TrafficSchema,
  received: TrafficSchema,
  blocked: z.object({
    packets: count().describe('dropped or rejected by policy or limits (kernel counter: exact)'),
    logged: z.record(z.string(), count()).describe('logged denials by reason (at most 20/s per reason: a sample)'),
  }),
  quota: z.object({ egress: QuotaSchema.optional(), ingress: QuotaSchema.optional() }),
  limits: LimitsSchema,
  shaped: z.object({ egress: ShapedCountsSchema.optional(), ingress: ShapedCountsSchema.optional() }).optional()
    .describe('the bandwidth shaper\'s own counts, each way the sandbox has a rate limit: passed on, dropped for want of queue room, waiting now'),
  published: z.object({ connections: count() }).optional().describe('connections let in through its published ports (absent when it publishes none)'),
  dns: z.object({ queries: count(), refused: count(), limited: count(), stripped: count() }).optional().describe('the resolver\'s per-sandbox counts (daemon only)'),
  nameChecks: z.object({ allowed: count(), mismatched: count(), unjudged: count() }).optional()
    .describe('connections whose first flight was judged (egress.verifyNames): named what they may (an allowed domain, or without egress.domains what the sandbox\'s DNS answered with their address), or not (reset, or reported in report mode); and packets dropped with no verdict (the daemon down or its queue full); daemon only'),
  attachment: AttachmentSchema.optional(),
});

export const StatsListSchema = z.object({ sandboxes: z.array(SandboxStatsSchema) });

export const DenialEventSchema = z.object({
  id: z.number().int(),
  time: isoTime(),
  sandbox: z.string(),
  reason: z.enum([...Object.keys(DENY_REASONS), ...Object.keys(DAEMON_REASONS)] as [EventReason, ...EventReason[]]),
  rule: z.string().describe('the rule that decided, e.g. "egress.deny 203.0.113.0/24"'),
  action: z.enum(['blocked', 'reported']),
  src: z.string(),
  dst: z.string(),
  proto: z.string(),
  dport: z.number().int().optional(),
  name: z.string().optional().describe('name_mismatch: the name the connection sent first (TLS SNI, HTTP Host), absent when it named none'),
  packets: count().optional().describe('name_unjudged: how many packets the record stands for (other records stand for one)'),
});

export const EventListSchema = z.object({ events: z.array(DenialEventSchema) });

const FlowCountsPair = () => z.object({ packets: count(), bytes: count() });

export const FlowRecordSchema = z.object({
  id: z.number().int(),
  time: isoTime().describe('when this record was written'),
  sandbox: z.string().describe('the sandbox that had the source address when the flow was opened'),
  state: z.enum(['open', 'closed']).describe('open: the kernel confirmed the flow; closed: its conntrack entry went (final counters)'),
  start: isoTime(),
  end: isoTime().optional().describe('closed records: when the entry went (TCP: after TIME_WAIT)'),
  proto: z.string(),
  src: z.string(),
  sport: z.number().int(),
  dst: z.string(),
  dport: z.number().int(),
  sent: FlowCountsPair().optional().describe('what the sandbox sent (IP headers included); absent without nf_conntrack_acct'),
  received: FlowCountsPair().optional().describe('what came back'),
  name: z.string().optional().describe('the name the flow was opened for, where known: a name check\'s (TLS SNI, HTTP Host), else the resolver\'s answer'),
  conntrackId: z.number().int().describe('pairs the open and closed records of one flow'),
});

export const FlowCountsSchema = z.object({
  recorded: count(),
  dropped: z.object({
    kernel: count().describe('events the kernel dropped because the event socket\'s buffer was full (its drop count: exact)'),
    daemon: count().describe('events read whose write failed (the database refused the batch)'),
  }),
  unattributed: count().describe('events from subnet addresses no sandbox had'),
}).describe('since the daemon started');

export const FlowListSchema = z.object({
  flows: z.array(FlowRecordSchema),
  counts: FlowCountsSchema.optional().describe('the daemon\'s counts (absent without a daemon)'),
});

export const DnsQueryRecordSchema = z.object({
  id: z.number().int(),
  time: isoTime(),
  sandbox: z.string(),
  name: z.string(),
  type: z.string(),
  verdict: z.enum(['answered', 'refused', 'limited', 'stripped']),
  answer: z.array(z.string()),
  reason: z.string().optional(),
  count: z.number().int().min(2).optional().describe('how many identical queries (same sandbox, name, type, verdict, answer) within 100 ms the record stands for; absent: one'),
});

export const DnsQueryListSchema = z.object({ queries: z.array(DnsQueryRecordSchema) });

export const PolicyViewSchema = z.object({
  name: z.string(),
  policy: PolicySchema.describe('as given for this sandbox'),
  effective: PolicySchema.describe('with the instance\'s defaults merged in: what is enforced'),
  cut: count().optional().describe('connections cut because the new policy forbids them (policy set only)'),
});

export const DownReportSchema = z.object({ sandboxes: count() });

export const GcReportSchema = z.object({
  sandboxes: z.array(z.string()),
  namespaces: z.array(z.string()),
  links: z.array(z.string()),
  files: z.array(z.string()),
});

const outcomeCounts = Object.fromEntries(QUERY_OUTCOMES.map((o) => [o, count()])) as Record<(typeof QUERY_OUTCOMES)[number], ReturnType<typeof count>>;

export const ResolverCountersSchema = z.object({
  ...outcomeCounts,
  queries: count().describe('the sum of the outcomes'),
  upstreamTimeouts: count(),
  cacheEntries: count(),
});

export const StatusSchema = z.object({
  version: z.string().describe('the version of toastnet that answered: the daemon\'s when one runs'),
  instance: z.string(),
  up: z.boolean(),
  subnet: z.string(),
  gateway: z.string(),
  table: z.string(),
  gatewayLink: z.string(),
  forwarding: z.boolean(),
  sandboxes: count(),
  addresses: z.object({ capacity: count(), used: count(), free: count(), releasing: count() }),
  dnsUpstreams: z.array(z.string()),
  stateFile: z.string(),
  socket: z.string(),
  daemon: z.object({ pid: z.number().int() }).nullable(),
  pool: z.object({ idle: count(), acquired: count().optional(), missed: count().optional() }),
  dns: ResolverCountersSchema.optional(),
  nameChecks: z.object({ queue: count(), packets: count(), judged: count(), mismatched: count(), busyMs: z.number(), unjudged: count() }).optional()
    .describe('the name gate\'s reader: packets given a verdict, connections judged (and not allowed), time spent on them; packets dropped with no verdict (the daemon down or the queue full), reported since the daemon started'),
  latency: z.record(z.string(), z.object({ count: count(), p50: z.number(), p99: z.number() })).optional(),
});

// Compile-time agreement of each schema with its interface in api/types.ts, both ways: a
// field added to one and not the other fails `tsc`.
// (The strict form of type equality: mutual assignability would miss an optional field.)
type Same<A, B> = (<X>() => X extends A ? 1 : 2) extends (<X>() => X extends B ? 1 : 2) ? true : false;
const agree = <_ extends true>() => undefined;
agree<Same<z.output<typeof SandboxInfoSchema>, T.SandboxInfo>>();
agree<Same<z.output<typeof SandboxStatsSchema>, T.SandboxStats>>();
agree<Same<z.output<typeof CniRequestSchema>, CniRequestBody>>();
agree<Same<z.output<typeof DenialEventSchema>, T.DenialEvent>>();
agree<Same<z.output<typeof DnsQueryRecordSchema>, T.DnsQueryRecord>>();
agree<Same<z.output<typeof FlowRecordSchema>, T.FlowRecord>>();
agree<Same<z.output<typeof FlowListSchema>, T.FlowList>>();
agree<Same<z.output<typeof DownReportSchema>, T.DownReport>>();
agree<Same<z.output<typeof GcReportSchema>, T.GcReport>>();
agree<Same<z.output<typeof StatusSchema>, T.Status>>();
agree<Same<z.output<typeof PolicyViewSchema>, T.PolicyView>>();
// A publish entry may leave out its protocol (tcp), as CNI's may: looser than the PortMapping type.
agree<Same<Omit<z.input<typeof CreateSandboxBodySchema>, 'publish'>, Omit<T.CreateSandboxBody, 'publish'>>>();
agree<Same<z.output<typeof PortMappingSchema>, NonNullable<T.CreateSandboxBody['publish']>[number]>>();
