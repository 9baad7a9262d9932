// The daemon's half of the CNI plugin: one call the shim (cni/toastnet-cni.c) forwarded,
// done with the engine, answered as the spec wants it (the result or an error object; HTTP
// 200 means the shim exits 0). An attachment is keyed by (network, container, interface)
// and is an ordinary sandbox named cni-<hash of the key>: policy, limits, accounting,
// events, gc and ls/inspect/stats apply to it as to any, except that its namespace is the
// runtime's and is never removed by toastnet.
import { createHash } from 'node:crypto';
import {
  Attached, CNI_ERRORS, CNI_VERSIONS, CniCall, CniError, CniRequestBody, LiveEnd, RuntimeAttachment, attachmentPolicy, buildResult, checkProblems,
  cniErrorBody, parseCniCall, attachmentPublish, versionOf,
} from '../core/cni.js';
import { ToastnetError } from '../errors.js';
import type { ApiResponse } from '../api/routes.js';
import type { SandboxInfo } from '../api/types.js';
import type { SandboxRow } from '../store/store.js';
import type { Engine } from './engine.js';
import { ownedNetns } from './attached-sandboxes.js';

/** A sandbox's name for an attachment: stable, derived from the spec's key, a valid name. */
export function attachmentName(network: string, containerId: string, ifname: string): string {
  return `cni-${createHash('sha256').update(`${network}\0${containerId}\0${ifname}`).digest('hex').slice(0, 12)}`;
}

/** The metrics operation a call is timed as (STATUS and VERSION are not). */
export function cniOperation(body: unknown): 'cni_add' | 'cni_del' | 'cni_check' | 'cni_gc' | undefined {
  const c = (body as { command?: unknown } | undefined)?.command;
  return c === 'ADD' ? 'cni_add' : c === 'DEL' ? 'cni_del' : c === 'CHECK' ? 'cni_check' : c === 'GC' ? 'cni_gc' : undefined;
}

export interface CniHooks {
  /** A sandbox went (DEL, GC): the daemon drops its resolver state. */
  removed?: (id: number) => void;
}

/** Answers one forwarded call; never throws (every failure is the spec's error object). */
export function handleCni(engine: Engine, body: unknown, hooks: CniHooks = {}): ApiResponse {
  const b = body as Partial<CniRequestBody> | undefined;
  const version = typeof b?.config === 'string' ? versionOf(b.config) : '1.0.0';
  try {
    if (!b || typeof b.command !== 'string' || typeof b.config !== 'string') throw new CniError(CNI_ERRORS.decode, 'POST /v1/cni wants {command, config, ...} as the toastnet-cni shim sends it');
    const call = parseCniCall(b as CniRequestBody);
    const result = dispatch(engine, call, hooks);
    // 204 for an answer without output (DEL, CHECK, GC, STATUS): the shim prints nothing.
    return result === undefined ? { status: 204 } : { status: 200, body: result };
  } catch (err) {
    const e = asCniError(err);
    return { status: e.code === CNI_ERRORS.tryAgainLater || e.code === CNI_ERRORS.notAvailable ? 503 : 400, body: cniErrorBody(version, e) };
  }
}

function asCniError(err: unknown): CniError {
  if (err instanceof CniError) return err;
  if (err instanceof ToastnetError) {
    const code = err.code === 'not_ready' ? CNI_ERRORS.tryAgainLater : err.code === 'invalid_argument' ? CNI_ERRORS.invalidConfig : CNI_ERRORS.refused;
    return new CniError(code, err.message, err.code);
  }
  return new CniError(CNI_ERRORS.refused, err instanceof Error ? err.message : String(err), 'internal');
}

function dispatch(engine: Engine, call: CniCall, hooks: CniHooks): unknown {
  switch (call.command) {
    case 'VERSION':
      return { cniVersion: call.conf.cniVersion, supportedVersions: CNI_VERSIONS };
    case 'STATUS':
      if (!engine.isUp()) throw new CniError(CNI_ERRORS.notAvailable, `toastnet instance "${engine.config.instance}" has no host network: run \`toastnet up\``);
      return undefined;
    case 'ADD':
      return add(engine, call, hooks);
    case 'DEL':
      del(engine, call, hooks);
      return undefined;
    case 'CHECK':
      check(engine, call);
      return undefined;
    case 'GC':
      gc(engine, call, hooks);
      return undefined;
  }
}

function checkNetwork(engine: Engine, call: CniCall): void {
  const c = engine.config;
  if (call.conf.instance !== undefined && call.conf.instance !== c.instance) {
    throw new CniError(CNI_ERRORS.invalidConfig, `network ${call.conf.name} names instance "${call.conf.instance}", but this daemon serves "${c.instance}" (check runDir)`);
  }
  if (call.conf.subnet !== undefined && call.conf.subnet !== c.subnet) {
    throw new CniError(CNI_ERRORS.invalidConfig, `network ${call.conf.name} says subnet ${call.conf.subnet}, but instance "${c.instance}" has ${c.subnet}`);
  }
  // No host network (no `up` yet): the attach says not_ready, answered as 11 (asCniError).
}

function attachedOf(info: SandboxInfo, a: RuntimeAttachment): Attached {
  return { ifname: a.ifname, mac: info.mac, netns: a.netns, hostLink: info.hostLink, ip: info.ip, prefixLength: info.prefixLength, gateway: info.gateway };
}

function rowOf(engine: Engine, call: CniCall): SandboxRow | undefined {
  return engine.store.getByAttachment(call.conf.name, call.containerId, call.ifname);
}

function add(engine: Engine, call: CniCall, hooks: CniHooks): unknown {
  checkNetwork(engine, call);
  const own = attachmentPolicy(call);
  // The runtime's portMappings: the attachment's published ports, as create's --publish.
  const publish = attachmentPublish(call.conf.runtimeConfig?.portMappings);
  const existing = rowOf(engine, call);
  if (existing?.attachment) {
    // The same ADD again (a runtime retrying): the same answer, if it is still what it was.
    const a = existing.attachment;
    if (a.netns === call.netns && ownedNetns(a) !== undefined && existing.state === 'ready') {
      return buildResult(call.conf.cniVersion, attachedOf(engine.info(existing), a), call.conf.prevResult);
    }
    engine.remove(existing.name);
    hooks.removed?.(existing.id);
  }
  const a: RuntimeAttachment = {
    network: call.conf.name,
    containerId: call.containerId,
    ifname: call.ifname,
    netns: call.netns,
    cniVersion: call.conf.cniVersion,
    ...(call.args.K8S_POD_NAME ? { podName: call.args.K8S_POD_NAME } : {}),
    ...(call.args.K8S_POD_NAMESPACE ? { podNamespace: call.args.K8S_POD_NAMESPACE } : {}),
  };
  let info: SandboxInfo;
  try {
    info = engine.attach(attachmentName(a.network, a.containerId, a.ifname), call.conf.mode, own, a, publish);
  } catch (err) {
    if (err instanceof ToastnetError && err.code === 'invalid_argument' && /^namespace /.test(err.message)) {
      throw new CniError(CNI_ERRORS.invalidEnvironment, `CNI_NETNS: ${err.message}`);
    }
    throw err;
  }
  return buildResult(call.conf.cniVersion, attachedOf(info, info.attachment!), call.conf.prevResult);
}

/** DEL: whatever is left of the attachment goes; nothing left (or no namespace) is success. */
function del(engine: Engine, call: CniCall, hooks: CniHooks): void {
  const row = rowOf(engine, call);
  if (!row) return;
  engine.remove(row.name);
  hooks.removed?.(row.id);
}

function check(engine: Engine, call: CniCall): void {
  checkNetwork(engine, call);
  const row = rowOf(engine, call);
  if (!row?.attachment) throw new CniError(CNI_ERRORS.unknownContainer, `no attachment of container ${call.containerId} (${call.ifname}) on network ${call.conf.name}`);
  const info = engine.inspect(row.name);
  const want = attachedOf(info, row.attachment);
  const problems = checkProblems(call.conf.prevResult!, want, liveEnd(info, row.attachment.ifname));
  if (call.netns !== row.attachment.netns) problems.unshift(`attached in ${row.attachment.netns}, not ${call.netns}`);
  if (problems.length > 0) throw new CniError(CNI_ERRORS.checkFailed, `CHECK failed: ${problems.join('; ')}`);
}

function liveEnd(info: ReturnType<Engine['inspect']>, ifname: string): LiveEnd | undefined {
  const k = info.kernel;
  const link = k.sandbox?.links.find((l) => l.name === ifname);
  if (!k.sandbox || !link) return undefined;
  return {
    linkUp: link.up,
    addresses: k.sandbox.addresses.filter((x) => x.index === link.index && x.family === 2).map((x) => `${x.address}/${x.prefixLength}`),
    defaultVia: k.sandbox.routes.find((r) => r.dstLen === 0 && r.oif === link.index)?.gateway,
    hostLinkPresent: info.hostLink === undefined || k.host !== undefined,
  };
}

/** GC: attachments of this network that the runtime no longer lists go (only those made through CNI). */
function gc(engine: Engine, call: CniCall, hooks: CniHooks): void {
  const valid = call.conf.validAttachments;
  if (!valid) return; // nothing said: nothing to collect
  const keep = new Set(valid.map((v) => `${v.containerID}/${v.ifname}`));
  for (const row of engine.store.list()) {
    const a = row.attachment;
    if (!a || a.network !== call.conf.name || keep.has(`${a.containerId}/${a.ifname}`)) continue;
    engine.remove(row.name);
    hooks.removed?.(row.id);
  }
}
