// Derivable names for every kernel object toastnet makes, so that ownership is decided by
// name (never by parsing rule text) and gc can tell ours from everyone else's.
import { createHash, createHmac } from 'node:crypto';
import { ToastnetError } from '../errors.js';

export const SANDBOX_NAME_RE = /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$/;

export function validateSandboxName(name: string): void {
  if (typeof name !== 'string' || !SANDBOX_NAME_RE.test(name)) {
    throw new ToastnetError('invalid_argument', `sandbox name "${name}": use 1-63 of [A-Za-z0-9_.-], starting with a letter or digit`);
  }
}

/**
 * Interface names are limited to 15 bytes, too short for instance + sandbox names, so an
 * instance's links share a 6-character prefix "tn" + 4 hex digits of the instance's hash.
 */
export function linkPrefix(instance: string): string {
  return 'tn' + createHash('sha256').update(instance).digest('hex').slice(0, 4);
}

export interface InstanceNames {
  /** nftables table (family inet). */
  table: string;
  /** Prefix every link of the instance starts with (nft wildcard `${prefix}*`). */
  linkPrefix: string;
  /** Host end of the gateway veth: carries the gateway address. */
  gatewayLink: string;
  /** Other end of the gateway veth: parent of macvlan sandboxes. */
  macvlanParent: string;
  /** Prefix of the host ends of sandbox veths. */
  sandboxLinkPrefix: string;
  /** The ifb where what sandboxes send waits for its bandwidth limit (see core/shaping.ts). */
  shaperLink: string;
  /** Prefix of the instance's network namespaces under /run/netns. */
  netnsPrefix: string;
}

export function instanceNames(instance: string): InstanceNames {
  const p = linkPrefix(instance);
  return {
    table: instance,
    linkPrefix: p,
    gatewayLink: `${p}g`,
    macvlanParent: `${p}m`,
    sandboxLinkPrefix: `${p}s`,
    shaperLink: `${p}q`,
    netnsPrefix: `${instance}-`,
  };
}

/**
 * Host end of a sandbox's veth. Sandbox ids are never reused, so neither is this name:
 * the kernel reaps a deleted namespace's veth asynchronously (40-125 ms), and a reused
 * name would collide with one still being reaped.
 */
export function sandboxLinkName(n: InstanceNames, id: number): string {
  return `${n.sandboxLinkPrefix}${id.toString(36)}`;
}

export function sandboxIdFromLink(n: InstanceNames, link: string): number | undefined {
  if (!link.startsWith(n.sandboxLinkPrefix)) return undefined;
  const rest = link.slice(n.sandboxLinkPrefix.length);
  if (!/^[0-9a-z]+$/.test(rest)) return undefined;
  const id = parseInt(rest, 36);
  return id.toString(36) === rest ? id : undefined; // only names sandboxLinkName would make
}

export function netnsName(n: InstanceNames, sandbox: string): string {
  return `${n.netnsPrefix}${sandbox}`;
}

/**
 * A sandbox's MAC: a locally administered unicast address keyed by the instance's secret
 * `key` and the sandbox id (never reused), so 46 bits nobody outside the host can compute.
 * macvlan sandboxes share one host link, where the MAC . address pair is what tells them
 * apart: a MAC derived from the address (as before) let one sandbox compute another's pair
 * and send as it. Private mode keeps a sandbox from seeing another's frames, so it cannot
 * learn the MAC either.
 */
export function sandboxMac(key: string, id: number): string {
  const h = createHmac('sha256', key).update(`mac:${id}`).digest();
  h[0] = (h[0] & 0xfc) | 0x02;
  return [...h.subarray(0, 6)].map((b) => b.toString(16).padStart(2, '0')).join(':');
}

export function autoSandboxName(id: number): string {
  return `sbx-${id}`;
}

/**
 * Idle warm-pool members are named ".pool-<id>": never a sandbox name (those start with a
 * letter or digit), so no user can name, address or remove one.
 */
export const POOL_PREFIX = '.pool-';
export const poolMemberName = (id: number): string => `${POOL_PREFIX}${id}`;
export const isPoolMember = (name: string): boolean => name.startsWith(POOL_PREFIX);
