// The CNI specification's side of toastnet's plugin, as pure data: a call as the shim
// forwards it (CNI_* environment and the network config), the versions answered, the
// result in each version's form, CNI_ARGS, the runtime's bandwidth capability in toastnet's
// units, and what CHECK compares. The daemon's handler (service/cni.ts) does the work.
// Spec: https://github.com/containernetworking/cni/blob/main/SPEC.md (1.1.0).
import { validatePolicy, mergePolicy, type PolicyInput } from './policy.js';
import { isSandboxMode, type SandboxMode } from './link-modes.js';
import { portMappingsFromCni, type PortMapping } from './publish.js';

/**
 * Versions answered, each in its own form. A 1.0.0 config gets a 1.0.0 result: the libcni
 * 1.1.2 in Debian's containerd and podman rejects a 1.1.0 result ("unsupported CNI result
 * version"), so answering with the newest would break them.
 */
export const CNI_VERSIONS = ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] as const;
export type CniVersion = (typeof CNI_VERSIONS)[number];
export const CNI_COMMANDS = ['ADD', 'DEL', 'CHECK', 'GC', 'STATUS', 'VERSION'] as const;
export type CniCommand = (typeof CNI_COMMANDS)[number];

/** The spec's well-known error codes, and ours (100 and up are the plugin's). */
export const CNI_ERRORS = {
  incompatibleVersion: 1,
  unsupportedField: 2,
  unknownContainer: 3,
  invalidEnvironment: 4,
  io: 5,
  decode: 6,
  invalidConfig: 7,
  tryAgainLater: 11,
  notAvailable: 50,
  limitedConnectivity: 51,
  /** CHECK found the attachment other than its result says. */
  checkFailed: 100,
  /** toastnet refused (bad policy, no address left, the kernel said no). */
  refused: 101,
} as const;

export class CniError extends Error {
  constructor(readonly code: number, message: string, readonly details?: string) {
    super(message);
    this.name = 'CniError';
  }
}

/** The spec's error object (stdout of a failed call). */
export function cniErrorBody(version: string, e: CniError): Record<string, unknown> {
  return { cniVersion: version, code: e.code, msg: e.message, ...(e.details ? { details: e.details } : {}) };
}

/** What the shim sends on POST /v1/cni: the CNI_* variables it found and the config verbatim. */
export interface CniRequestBody {
  command: string;
  containerId?: string;
  netns?: string;
  ifname?: string;
  args?: string;
  path?: string;
  config: string;
}

export interface BandwidthCapability {
  /** bits per second, bits (CNI's bandwidth plugin units). */
  ingressRate?: number;
  ingressBurst?: number;
  egressRate?: number;
  egressBurst?: number;
}

/** A network config's keys toastnet reads (the rest of the config is passed over). */
export interface CniNetConf {
  cniVersion: CniVersion;
  name: string;
  /** Which toastnet instance serves this network (the shim finds its socket by it). */
  instance?: string;
  runDir?: string;
  /** Must be the instance's subnet when given: a conflist that names another is a mistake. */
  subnet?: string;
  mode: SandboxMode;
  /** The network's policy for its attachments, over the instance's defaults. */
  policy?: unknown;
  prevResult?: CniResult;
  runtimeConfig?: { bandwidth?: BandwidthCapability; portMappings?: unknown[]; podAnnotations?: Record<string, string> };
  /** Per-call arguments a runtime puts in the config (CONVENTIONS.md "args"). */
  args?: { cni?: { policy?: unknown } };
  validAttachments?: { containerID: string; ifname: string }[];
}

export interface CniCall {
  command: CniCommand;
  containerId: string;
  netns: string;
  ifname: string;
  /** CNI_ARGS as key/value pairs. */
  args: Record<string, string>;
  conf: CniNetConf;
}

export interface CniInterface { name: string; mac?: string; sandbox?: string }
export interface CniIp { address: string; gateway?: string; interface?: number; version?: string }
export interface CniResult {
  cniVersion?: string;
  interfaces?: CniInterface[];
  ips?: CniIp[];
  routes?: { dst: string; gw?: string }[];
  dns?: { nameservers?: string[]; domain?: string; search?: string[]; options?: string[] };
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** `A=1;B=2` (CNI_ARGS) as pairs; a pair without `=` is a malformed environment. */
export function parseCniArgs(s: string | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const pair of (s ?? '').split(';')) {
    if (pair === '') continue;
    const i = pair.indexOf('=');
    if (i <= 0) throw new CniError(CNI_ERRORS.invalidEnvironment, `CNI_ARGS: "${pair}" is not KEY=VALUE`);
    out[pair.slice(0, i)] = pair.slice(i + 1);
  }
  return out;
}

/** The config's version, for error answers when the rest of it cannot be read. */
export function versionOf(config: string): string {
  try {
    const v = (JSON.parse(config) as { cniVersion?: unknown }).cniVersion;
    return typeof v === 'string' ? v : '1.0.0';
  } catch {
    return '1.0.0';
  }
}

function str(o: Record<string, unknown>, key: string): string | undefined {
  const v = o[key];
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw new CniError(CNI_ERRORS.invalidConfig, `network config: key "${key}" must be a string`);
  return v;
}

function parseConf(text: string): CniNetConf {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new CniError(CNI_ERRORS.decode, `network config is not valid JSON: ${(err as Error).message}`);
  }
  if (!isObject(raw)) throw new CniError(CNI_ERRORS.decode, 'network config is not a JSON object');
  const version = str(raw, 'cniVersion') ?? '';
  if (!(CNI_VERSIONS as readonly string[]).includes(version)) {
    throw new CniError(CNI_ERRORS.incompatibleVersion, `cniVersion "${version}" is not supported (supported: ${CNI_VERSIONS.join(', ')})`);
  }
  const name = str(raw, 'name');
  if (!name) throw new CniError(CNI_ERRORS.invalidConfig, 'network config: key "name" is missing');
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(name)) throw new CniError(CNI_ERRORS.invalidConfig, `network config: name "${name}": want letters, digits, _ . - (the spec's network name)`);
  const mode = str(raw, 'mode') ?? 'veth';
  if (!isSandboxMode(mode)) throw new CniError(CNI_ERRORS.invalidConfig, `network config: key "mode": "${mode}" is not a toastnet mode`);
  // A TAP is for a VMM toastnet starts in its own namespace; a runtime's namespace gets a link.
  if (mode === 'tap') throw new CniError(CNI_ERRORS.invalidConfig, 'network config: key "mode": "tap" is for microVMs (toastnet create --mode tap); a container gets veth or macvlan');
  const rc = raw.runtimeConfig;
  if (rc !== undefined && !isObject(rc)) throw new CniError(CNI_ERRORS.invalidConfig, 'network config: key "runtimeConfig" must be an object');
  const bw = rc?.bandwidth;
  if (bw !== undefined && !isObject(bw)) throw new CniError(CNI_ERRORS.invalidConfig, 'runtimeConfig.bandwidth must be an object');
  for (const k of Object.keys(bw ?? {})) {
    const v = (bw as Record<string, unknown>)[k];
    if (!['ingressRate', 'ingressBurst', 'egressRate', 'egressBurst'].includes(k)) throw new CniError(CNI_ERRORS.unsupportedField, `runtimeConfig.bandwidth: unknown key "${k}"`);
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) throw new CniError(CNI_ERRORS.invalidConfig, `runtimeConfig.bandwidth.${k} must be a number of bits (per second) >= 0`);
  }
  const pm = rc?.portMappings;
  if (pm !== undefined && !Array.isArray(pm)) throw new CniError(CNI_ERRORS.invalidConfig, 'runtimeConfig.portMappings must be a list');
  // containerd's and CRI-O's capability for the pod's annotations (declared by the conflist).
  const annotations = rc?.[POD_ANNOTATIONS_CAPABILITY];
  if (annotations !== undefined && (!isObject(annotations) || !Object.values(annotations).every((v) => typeof v === 'string'))) {
    throw new CniError(CNI_ERRORS.invalidConfig, `runtimeConfig["${POD_ANNOTATIONS_CAPABILITY}"] must map names to strings`);
  }
  const valid = raw['cni.dev/valid-attachments'];
  if (valid !== undefined && (!Array.isArray(valid) || !valid.every((a) => isObject(a) && typeof a.containerID === 'string' && typeof a.ifname === 'string'))) {
    throw new CniError(CNI_ERRORS.invalidConfig, 'cni.dev/valid-attachments must be a list of {containerID, ifname}');
  }
  const prev = raw.prevResult;
  if (prev !== undefined && !isObject(prev)) throw new CniError(CNI_ERRORS.invalidConfig, 'prevResult must be an object');
  const args = raw.args;
  return {
    cniVersion: version as CniVersion,
    name,
    instance: str(raw, 'instance'),
    runDir: str(raw, 'runDir'),
    subnet: str(raw, 'subnet'),
    mode,
    policy: raw.policy,
    prevResult: prev as CniResult | undefined,
    runtimeConfig: rc ? { bandwidth: bw as BandwidthCapability | undefined, portMappings: pm as unknown[] | undefined, podAnnotations: annotations as Record<string, string> | undefined } : undefined,
    args: isObject(args) && isObject(args.cni) ? { cni: { policy: args.cni.policy } } : undefined,
    validAttachments: valid as CniNetConf['validAttachments'],
  };
}

/** The call as the spec defines its inputs, each checked for the command that needs it. */
export function parseCniCall(b: CniRequestBody): CniCall {
  const conf = parseConf(b.config);
  const command = b.command as CniCommand;
  if (!(CNI_COMMANDS as readonly string[]).includes(command)) throw new CniError(CNI_ERRORS.invalidEnvironment, `CNI_COMMAND "${b.command}" is not one of ${CNI_COMMANDS.join(', ')}`);
  const need = (v: string | undefined, name: string): string => {
    if (!v) throw new CniError(CNI_ERRORS.invalidEnvironment, `${name} is required for ${command}`);
    return v;
  };
  const perCall = command === 'ADD' || command === 'DEL' || command === 'CHECK';
  const containerId = perCall ? need(b.containerId, 'CNI_CONTAINERID') : b.containerId ?? '';
  const ifname = perCall ? need(b.ifname, 'CNI_IFNAME') : b.ifname ?? '';
  // DEL may come after the namespace is gone (containerd sends an empty CNI_NETNS then).
  const netns = command === 'ADD' || command === 'CHECK' ? need(b.netns, 'CNI_NETNS') : b.netns ?? '';
  if (perCall && !/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(containerId)) throw new CniError(CNI_ERRORS.invalidEnvironment, `CNI_CONTAINERID "${containerId}": want letters, digits, _ . -`);
  if (perCall && (ifname.length > 15 || !/^[^\s/:]+$/.test(ifname) || ifname === '.' || ifname === '..')) {
    throw new CniError(CNI_ERRORS.invalidEnvironment, `CNI_IFNAME "${ifname}" is not a valid interface name`);
  }
  if (command === 'CHECK') {
    if (versionBefore(conf.cniVersion, '0.4.0')) throw new CniError(CNI_ERRORS.incompatibleVersion, `CHECK needs cniVersion 0.4.0 or later (config says ${conf.cniVersion})`);
    if (!conf.prevResult) throw new CniError(CNI_ERRORS.invalidConfig, 'CHECK needs prevResult');
  }
  return { command, containerId, netns, ifname, args: parseCniArgs(b.args), conf };
}

export function versionBefore(v: string, than: string): boolean {
  const n = (s: string) => s.split('.').map(Number);
  const [a, b] = [n(v), n(than)];
  for (let i = 0; i < 3; i++) if (a[i] !== b[i]) return a[i] < b[i];
  return false;
}

/** Bits to bytes, never rounded down to nothing. */
const bitsToBytes = (bits: number): number => Math.max(1, Math.ceil(bits / 8));

/** The runtime's bandwidth capability as toastnet limits (bytes per second, bytes); 0 or absent = unlimited. */
export function bandwidthLimits(bw: BandwidthCapability | undefined): NonNullable<PolicyInput['limits']> {
  const out: NonNullable<PolicyInput['limits']> = {};
  if (bw?.ingressRate) {
    out.ingressRate = bitsToBytes(bw.ingressRate);
    if (bw.ingressBurst) out.ingressBurst = bitsToBytes(bw.ingressBurst);
  }
  if (bw?.egressRate) {
    out.egressRate = bitsToBytes(bw.egressRate);
    if (bw.egressBurst) out.egressBurst = bitsToBytes(bw.egressBurst);
  }
  return out;
}

/** The runtimeConfig key under which containerd and CRI-O pass a pod's annotations (when the conflist declares the capability). */
export const POD_ANNOTATIONS_CAPABILITY = 'io.kubernetes.cri.pod-annotations';
/** The pod annotation that holds a pod's toastnet policy (JSON). */
export const POLICY_ANNOTATION = 'toastnet.dev/policy';

/**
 * The attachment's own policy, each layer over the one before: the network config's
 * `policy`, the runtime's per-call `args.cni.policy`, CNI_ARGS `TOASTNET_POLICY` (base64 of
 * a JSON document: CNI_ARGS cannot carry `;`), the pod's annotation `toastnet.dev/policy`
 * (JSON, from the runtime's pod-annotations capability), then the bandwidth capability's limits. The
 * instance's defaults go under all of it as for any sandbox.
 */
export function attachmentPolicy(call: CniCall): PolicyInput {
  const annotated = call.conf.runtimeConfig?.podAnnotations?.[POLICY_ANNOTATION];
  const layers: [string, unknown][] = [['network config "policy"', call.conf.policy], ['args.cni.policy', call.conf.args?.cni?.policy]];
  const fromArgs = call.args.TOASTNET_POLICY;
  if (fromArgs !== undefined) {
    let doc: unknown;
    try {
      doc = JSON.parse(Buffer.from(fromArgs, 'base64').toString('utf8'));
    } catch {
      throw new CniError(CNI_ERRORS.invalidEnvironment, 'CNI_ARGS TOASTNET_POLICY: want base64 of a JSON policy document');
    }
    layers.push(['CNI_ARGS TOASTNET_POLICY', doc]);
  }
  if (annotated !== undefined) {
    let doc: unknown;
    try {
      doc = JSON.parse(annotated);
    } catch {
      throw new CniError(CNI_ERRORS.invalidConfig, `pod annotation ${POLICY_ANNOTATION}: not a JSON policy document`);
    }
    layers.push([`pod annotation ${POLICY_ANNOTATION}`, doc]);
  }
  let own: PolicyInput = {};
  for (const [where, doc] of layers) {
    if (doc === undefined) continue;
    try {
      own = mergePolicy(own, validatePolicy(doc, where));
    } catch (err) {
      throw new CniError(CNI_ERRORS.invalidConfig, (err as Error).message);
    }
  }
  const bw = bandwidthLimits(call.conf.runtimeConfig?.bandwidth);
  if (Object.keys(bw).length > 0) own = mergePolicy(own, { limits: bw });
  return JSON.parse(JSON.stringify(own)) as PolicyInput; // without the merge's undefined fields
}

/**
 * The runtime's `portMappings` capability (`[{hostPort, containerPort, protocol, hostIP}]`)
 * as the sandbox's published ports (core/publish.ts checks them as for `create --publish`).
 * Entries for an IPv6 host address are left out: sandboxes have no IPv6, and runtimes send
 * a v6 twin of a mapping on dual-stack hosts. A bad entry is the spec's invalid-config error.
 */
export function attachmentPublish(pm: unknown[] | undefined): PortMapping[] {
  const v4 = (pm ?? []).filter((m) => !(isObject(m) && typeof m.hostIP === 'string' && m.hostIP.includes(':')));
  try {
    return portMappingsFromCni(v4);
  } catch (err) {
    throw new CniError(CNI_ERRORS.invalidConfig, (err as Error).message);
  }
}

/** What an ADD made, for the result. */
export interface Attached {
  ifname: string;
  mac: string;
  netns: string;
  hostLink?: string;
  ip: string;
  prefixLength: number;
  gateway: string;
}

/**
 * The result in the config's version: our interfaces (the host end, then the container's
 * with `sandbox`), the address naming the container's interface by index, the default
 * route, and the gateway as nameserver. A prevResult (toastnet after other plugins) is
 * kept and ours appended to it.
 */
export function buildResult(version: CniVersion, a: Attached, prev?: CniResult): CniResult {
  const interfaces = [...(prev?.interfaces ?? [])];
  if (a.hostLink) interfaces.push({ name: a.hostLink });
  interfaces.push({ name: a.ifname, mac: a.mac, sandbox: a.netns });
  const ip: CniIp = { address: `${a.ip}/${a.prefixLength}`, gateway: a.gateway, interface: interfaces.length - 1 };
  if (versionBefore(version, '1.0.0')) ip.version = '4';
  const dns = prev?.dns?.nameservers?.length ? prev.dns : { ...prev?.dns, nameservers: [a.gateway] };
  return {
    cniVersion: version,
    interfaces,
    ips: [...(prev?.ips ?? []).map((p) => (versionBefore(version, '1.0.0') ? { version: '4', ...p } : p)), ip],
    routes: [...(prev?.routes ?? []), { dst: '0.0.0.0/0', gw: a.gateway }],
    dns,
  };
}

/** The container's end as the kernel shows it now (service/cni.ts reads it). */
export interface LiveEnd {
  linkUp: boolean;
  addresses: string[];
  defaultVia?: string;
  hostLinkPresent: boolean;
}

/**
 * CHECK: what is wrong with the attachment, comparing prevResult with what toastnet
 * recorded and with the live state; empty when all agrees.
 */
export function checkProblems(prev: CniResult, want: Attached, live: LiveEnd | undefined): string[] {
  const out: string[] = [];
  const cidr = `${want.ip}/${want.prefixLength}`;
  const idx = (prev.interfaces ?? []).findIndex((i) => i.name === want.ifname && (i.sandbox === undefined || i.sandbox === want.netns));
  if (idx < 0) out.push(`prevResult has no interface ${want.ifname} in ${want.netns}`);
  const ip = (prev.ips ?? []).find((i) => i.address === cidr);
  if (!ip) out.push(`prevResult has no address ${cidr}`);
  else if (idx >= 0 && ip.interface !== undefined && ip.interface !== idx) out.push(`prevResult puts ${cidr} on interface ${ip.interface}, not ${idx} (${want.ifname})`);
  if (!live) {
    out.push(`interface ${want.ifname} is missing in ${want.netns}`);
    return out;
  }
  if (!live.linkUp) out.push(`interface ${want.ifname} is down`);
  if (!live.addresses.includes(cidr)) out.push(`interface ${want.ifname} lacks ${cidr} (has ${live.addresses.join(', ') || 'none'})`);
  if (live.defaultVia !== want.gateway) out.push(`default route is ${live.defaultVia ? `via ${live.defaultVia}` : 'missing'}, not via ${want.gateway}`);
  if (!live.hostLinkPresent) out.push('the host side of the link is missing');
  return out;
}

/**
 * A sandbox attached to a runtime's namespace through CNI: what toastnet keeps about it (the
 * store's `attachment` column) and shows in ls/inspect/stats. Its key is (network,
 * containerId, ifname), as the spec keys an attachment.
 */
export interface RuntimeAttachment {
  network: string;
  containerId: string;
  ifname: string;
  /** The runtime's namespace (not toastnet's: never removed by toastnet). */
  netns: string;
  /** Its inode at ADD: a /proc/PID/ns/net path outlives its process's namespace under a new PID. */
  netnsInode?: number;
  cniVersion: string;
  podName?: string;
  podNamespace?: string;
}

export const attachmentKey = (network: string, containerId: string, ifname: string): string => `${network}/${containerId}/${ifname}`;
