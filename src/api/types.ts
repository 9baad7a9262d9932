// The API's request and response types: what the daemon's routes, the client and the
// in-process CLI exchange. Plain data; the engine produces them, nothing here depends on it.
// The client package (src/client.ts) exports them, so this module imports only types, and
// only from pure modules: a consumer compiles against them without toastnet's native
// dependencies or their type packages.
import type { SandboxMode } from '../core/link-modes.js';
import type { TapInfo, TapOptions } from '../core/tap.js';

export type { TapInfo, TapOptions };
import type { Limits, PolicyInput } from '../core/policy.js';
import type { DenyReason, EventReason } from '../core/deny-reasons.js';
import type { PortMapping } from '../core/publish.js';
import type { QueryOutcomeCounts } from '../dns/query-outcomes.js';
import type { RuntimeAttachment } from '../core/cni.js';

export type { RuntimeAttachment };

export interface SandboxInfo {
  name: string;
  id: number;
  ip: string;
  gateway: string;
  prefixLength: number;
  netns: string;
  mac: string;
  mode: SandboxMode;
  resolvConf: string;
  hostLink?: string;
  createdAt: string;
  state: string;
  /** Its published ports (absent: none). */
  publish?: PortMapping[];
  /** A container runtime's namespace attached through CNI: its container, interface and pod. */
  attachment?: RuntimeAttachment;
  /** tap mode: what a VMM is pointed at (the device, the namespace to start it in, the guest's MAC and addresses, an `ip=` kernel argument). */
  tap?: TapInfo;
  /** Given at create; `{}` when none. */
  labels: Record<string, string>;
}

/** Body of POST /v1/sandboxes (ToastnetClient.create). */
export interface CreateSandboxBody {
  /** Default sbx-<id>. */
  name?: string;
  /** How the sandbox is attached: veth, macvlan or tap (default: the instance's defaultMode, veth unless configured). */
  mode?: SandboxMode;
  /** tap mode: the device's options (vnetHdr, queues, owner, group). */
  tap?: TapOptions;
  /** The sandbox's own policy document; instance defaults fill what it leaves out. */
  policy?: PolicyInput;
  /**
   * Host ports translated to the sandbox's ports: the one way in from outside the host.
   * CNI's portMappings entries, field for field; `hostIP` absent: every host address.
   */
  publish?: PortMapping[];
  /** key: value metadata, Kubernetes label syntax (at most 64). */
  labels?: Record<string, string>;
}

/** GET /v1/sandboxes/{name}/inspect: the sandbox and its network as the kernel reports it now. */
export interface SandboxInspection extends SandboxInfo {
  /** Both ends of its link, addresses, routes: for diagnosis; the shape follows the kernel layer and is not kept stable. */
  kernel: unknown;
}

export interface Traffic {
  packets: number;
  bytes: number;
}

/** One sandbox's accounting (GET /v1/sandboxes/{name}/stats, GET /v1/stats). */
export interface SandboxStats {
  name: string;
  ip: string;
  /** Everything the sandbox sent (before policy and the nftables limits judged it; with a bandwidth limit, once its shaper let it go) and received. */
  sent: Traffic;
  received: Traffic;
  blocked: {
    /** Packets dropped or rejected by policy or limits (kernel counter: exact). */
    packets: number;
    /** Logged denials by reason (the kernel logs at most 20/s per reason: a sample). */
    logged: Record<string, number>;
  };
  quota: { egress?: { bytes: number; used: number }; ingress?: { bytes: number; used: number } };
  /**
   * The bandwidth shaper's own counts, each way the sandbox has a rate limit (since its
   * class was made: `up` makes it again): bytes and packets it passed on, packets it
   * dropped for want of queue room (not counted in `blocked`, which is policy's and the
   * nftables limits'), bytes waiting now. `sent` counts what left the shaper.
   */
  shaped?: { egress?: ShapedCounts; ingress?: ShapedCounts };
  limits: Limits;
  /**
   * Connections let in through its published ports (each flow's first packet; absent when
   * it publishes none). Counted since the table was last rebuilt (`up`).
   */
  published?: { connections: number };
  /** The resolver's per-sandbox counts (daemon only). */
  dns?: { queries: number; refused: number; limited: number; stripped: number };
  /** Connections judged by name checks (egress.verifyNames); daemon only. */
  nameChecks?: { allowed: number; mismatched: number; unjudged: number };
  /** A runtime's container attached through CNI. */
  attachment?: RuntimeAttachment;
}

export interface ShapedCounts {
  bytes: number;
  packets: number;
  dropped: number;
  backlog: number;
}

/** A denial the kernel logged, attributed to its sandbox and rule (GET /v1/events). */
export interface DenialEvent {
  id: number;
  time: string;
  sandbox: string;
  reason: EventReason;
  /** The rule that decided, e.g. "egress.deny 203.0.113.0/24" or "private, metadata, ...". */
  rule: string;
  /** blocked, or reported (report mode: logged, let through). */
  action: 'blocked' | 'reported';
  src: string;
  dst: string;
  proto: string;
  dport?: number;
  /** name_mismatch: the name the connection sent first (TLS SNI, HTTP Host), absent when it named none. */
  name?: string;
  /** name_unjudged: how many packets the record stands for (other records stand for one). */
  packets?: number;
}

/**
 * One record of the flow audit log (GET /v1/flows): a flow a sandbox opened, as conntrack
 * reported it. Each flow gives two records, paired by conntrackId: `open` when the kernel
 * confirmed it, `closed` when its entry went (with its final counters and end).
 */
export interface FlowRecord {
  id: number;
  /** When this record was written. */
  time: string;
  /** The sandbox that had the source address when the flow was opened. */
  sandbox: string;
  state: 'open' | 'closed';
  start: string;
  /** closed records: when the kernel dropped the entry (a TCP flow: after TIME_WAIT). */
  end?: string;
  proto: string;
  src: string;
  sport: number;
  dst: string;
  dport: number;
  /** Packets and bytes (IP headers included) the sandbox sent, and received back; absent when the kernel kept no counters (nf_conntrack_acct off when the flow began). */
  sent?: { packets: number; bytes: number };
  received?: { packets: number; bytes: number };
  /** The name the flow was opened for, where known: the one a name check saw (TLS SNI, HTTP Host), else the one the resolver answered the sandbox with this address for. */
  name?: string;
  /** The kernel's conntrack id: pairs the open and closed records of one flow. */
  conntrackId: number;
}

/** The flow log's counts since the daemon started. */
export interface FlowCounts {
  /** Records written. */
  recorded: number;
  /**
   * Events lost, never silently, both exact: `kernel` the events the kernel dropped
   * because the event socket's buffer was full (the socket's drop count, after ENOBUFS;
   * while the database writer is behind, the reader leaves events there), `daemon` the
   * events read whose write failed (the database refused the batch).
   */
  dropped: { kernel: number; daemon: number };
  /** Events from the subnet no sandbox had the address of (an idle pool member, a removed sandbox). */
  unattributed: number;
}

/** GET /v1/flows. */
export interface FlowList {
  flows: FlowRecord[];
  /** The daemon's counts (absent without a daemon, when nothing reads the kernel's events). */
  counts?: FlowCounts;
}

export type FlowQuery = EventQuery;

/** One query the resolver judged for a sandbox, as its query log keeps it. */
export interface QueryLogEntry {
  sandbox: string;
  name: string;
  type: string;
  verdict: 'answered' | 'refused' | 'limited' | 'stripped';
  answer: string[];
  reason?: string;
}

/** A query log entry as the API answers it (GET /v1/dns-queries). */
export interface DnsQueryRecord extends QueryLogEntry {
  id: number;
  /** When the first of its queries came. */
  time: string;
  /** How many identical queries (same sandbox, name, type, verdict, answer) within 100 ms the record stands for; absent: one. */
  count?: number;
}

export interface CreateOptions {
  name?: string;
  mode?: SandboxMode;
  /** tap mode: the device's options. */
  tap?: TapOptions;
  /** The sandbox's own policy document; instance defaults fill what it leaves out. */
  policy?: unknown;
  /** Ports to publish (CreateSandboxBody.publish), checked by the engine. */
  publish?: unknown;
  /** Checked by the engine (core/labels.ts). */
  labels?: unknown;
}

export interface PolicyView {
  name: string;
  /** As given for this sandbox. */
  policy: PolicyInput;
  /** With the instance's defaults merged in: what is enforced. */
  effective: PolicyInput;
  /** Connections cut because the new policy forbids them (policy set only). */
  cut?: number;
}

/** POST /v1/down: how many sandboxes were removed. */
export interface DownReport {
  sandboxes: number;
}

export interface GcReport {
  sandboxes: string[];
  namespaces: string[];
  links: string[];
  files: string[];
}

export interface Status {
  /** The version of toastnet that answered: the daemon's when one runs. */
  version: string;
  instance: string;
  up: boolean;
  subnet: string;
  gateway: string;
  table: string;
  gatewayLink: string;
  forwarding: boolean;
  sandboxes: number;
  /** `releasing`: held by removed sandboxes until the processes left in them have ended. */
  addresses: { capacity: number; used: number; free: number; releasing: number };
  dnsUpstreams: string[];
  stateFile: string;
  socket: string;
  daemon: { pid: number } | null;
  /** Idle warm-pool members (they hold addresses: counted in addresses.used). */
  pool: { idle: number; acquired?: number; missed?: number };
  /** The daemon's resolver counters (absent without a daemon). */
  dns?: ResolverCounters;
  /** The name gate's reader (absent without a daemon). */
  nameChecks?: NameGateCounters;
  /** The daemon's operation latencies (count, and p50/p99 as histogram bucket bounds in seconds). */
  latency?: Record<string, { count: number; p50: number; p99: number }>;
}

/**
 * The name gate's reader: NFQUEUE queue number, packets it gave verdicts, connections it
 * judged (allowed and not), and the time it spent on them (its capacity is judged / busy).
 */
export interface NameGateCounters {
  queue: number;
  packets: number;
  judged: number;
  mismatched: number;
  busyMs: number;
  /** Packets of name-checked connections dropped with no verdict (the daemon down or the queue full), reported since the daemon started. */
  unjudged: number;
}

/**
 * The resolver's counters. Each query is counted once, under what became of it (the
 * outcomes, see dns/query-outcomes.ts), when that is known; `queries` is their sum, so a
 * query still upstream is in none. Upstream timeouts are attempts, not queries: one query
 * may have several (one per upstream tried), or none.
 */
export interface ResolverCounters extends QueryOutcomeCounts {
  queries: number;
  upstreamTimeouts: number;
  /** Answers held in the shared cache now. */
  cacheEntries: number;
}

/**
 * What an instance offers its CLI, whoever serves it: the daemon over its socket
 * (cli/instance.ts adapts ToastnetClient) or the engine in-process when no daemon runs
 * (service/local-backend.ts). Each command is written once against this.
 */
export interface InstanceBackend {
  status(): Promise<Status>;
  list(): Promise<SandboxInfo[]>;
  get(name: string): Promise<SandboxInfo>;
  inspect(name: string): Promise<unknown>;
  remove(name: string): Promise<void>;
  policyGet(name: string): Promise<PolicyView>;
  policySet(name: string, policy: PolicyInput): Promise<PolicyView>;
  /** One sandbox's accounting, or every sandbox's. */
  stats(name?: string): Promise<SandboxStats[]>;
  gc(): Promise<GcReport>;
  events(q: EventQuery): Promise<DenialEvent[]>;
  dnsQueries(q: EventQuery): Promise<DnsQueryRecord[]>;
  /** The flow audit log. */
  flows(q: EventQuery): Promise<FlowList>;
  /** `persist` writes boot files, which only a process that is not the daemon may do. */
  up(o?: { persist?: boolean; persistRoot?: string }): Promise<Status>;
  down(o?: { persistRoot?: string }): Promise<DownReport>;
}

export interface EventQuery {
  sandbox?: string;
  /** Only events with a larger id. */
  since?: number;
  limit?: number;
  /** Wait up to this many ms for new events when there are none (long polling). */
  waitMs?: number;
}
