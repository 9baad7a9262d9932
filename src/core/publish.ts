// Published ports: a host port translated (DNAT) to a sandbox's port, the one inbound path
// from outside the host that a sandbox can have. The shape is CNI's `portMappings`
// capability entry ({hostPort, containerPort, protocol, hostIP}), field for field, so the
// CNI plugin hands its runtimeConfig.portMappings to `portMappingsFromCni` and the CLI's
// `--publish` and the API's `publish` end up in the same form.
//
// What this module decides: what is valid (no loopback host address: translating
// 127.0.0.0/8 needs route_localnet, which would expose every loopback-only service of the
// host to whatever can reach it; the host reaches a published port at its own non-loopback
// addresses instead), when two publishings overlap, and which host listener a publishing
// would shadow. Pure: the host's sockets are read by the kernel layer (kernel/listeners.ts).
import { ToastnetError } from '../errors.js';
import { formatIPv4, parseIPv4 } from './ipv4.js';

export type PublishProtocol = 'tcp' | 'udp';

/** One published port, as CNI's portMappings entry. `hostIP` absent: every address of the host. */
export interface PortMapping {
  hostPort: number;
  containerPort: number;
  protocol: PublishProtocol;
  hostIP?: string;
}

const fail = (where: string, msg: string): never => {
  throw new ToastnetError('invalid_argument', `${where}: ${msg}`);
};

function checkPort(p: unknown, where: string, field: string): number {
  if (typeof p !== 'number' || !Number.isInteger(p) || p < 1 || p > 65535) fail(where, `${field} ${JSON.stringify(p)} is not a port (1-65535)`);
  return p as number;
}

/** A host address to publish on: undefined for every address ("", "0.0.0.0"). */
function checkHostIP(ip: unknown, where: string): string | undefined {
  if (ip === undefined || ip === '' || ip === '0.0.0.0') return undefined;
  if (typeof ip !== 'string') return fail(where, `hostIP ${JSON.stringify(ip)} is not an IPv4 address`);
  if (ip.includes(':')) fail(where, `hostIP "${ip}": only IPv4 is published (sandboxes have no IPv6)`);
  let n = 0;
  try {
    n = parseIPv4(ip);
  } catch {
    fail(where, `hostIP "${ip}" is not an IPv4 address`);
  }
  if (n >>> 24 === 127) fail(where, `hostIP "${ip}" is loopback: publishing there needs route_localnet, which toastnet does not open (publish on a non-loopback address; the host reaches it there)`);
  if (n >>> 24 === 0 || n >>> 28 >= 14) fail(where, `hostIP "${ip}" is not a unicast address`);
  return formatIPv4(n);
}

function checkProtocol(p: unknown, where: string): PublishProtocol {
  if (p === undefined || p === '') return 'tcp';
  const s = typeof p === 'string' ? p.toLowerCase() : p;
  if (s !== 'tcp' && s !== 'udp') fail(where, `protocol ${JSON.stringify(p)}: want tcp or udp`);
  return s as PublishProtocol;
}

/** One entry in the API's or CNI's form, checked and normalised (protocol lower case, tcp by default; no hostIP for "any"). */
export function checkPortMapping(e: unknown, where = 'publish'): PortMapping {
  if (typeof e !== 'object' || e === null || Array.isArray(e)) return fail(where, 'want {hostPort, containerPort, protocol?, hostIP?}');
  const o = e as Record<string, unknown>;
  const unknownKeys = Object.keys(o).filter((k) => !['hostPort', 'containerPort', 'protocol', 'hostIP'].includes(k));
  if (unknownKeys.length > 0) fail(where, `unknown field ${unknownKeys.map((k) => `"${k}"`).join(', ')}`);
  const hostIP = checkHostIP(o.hostIP, where);
  return {
    hostPort: checkPort(o.hostPort, where, 'hostPort'),
    containerPort: checkPort(o.containerPort, where, 'containerPort'),
    protocol: checkProtocol(o.protocol, where),
    ...(hostIP !== undefined ? { hostIP } : {}),
  };
}

/** Whether two publishings claim some host address and port in common. */
export function overlaps(a: PortMapping, b: PortMapping): boolean {
  return a.protocol === b.protocol && a.hostPort === b.hostPort && (a.hostIP === undefined || b.hostIP === undefined || a.hostIP === b.hostIP);
}

/**
 * A list of entries (API body, stored row, CNI runtimeConfig), each checked; two entries of
 * the list that overlap are refused too (the kernel could translate a host port one way only).
 */
export function checkPortMappings(list: unknown, where = 'publish'): PortMapping[] {
  if (list === undefined || list === null) return [];
  if (!Array.isArray(list)) return fail(where, 'want a list of {hostPort, containerPort, protocol?, hostIP?}');
  const out = list.map((e, i) => checkPortMapping(e, `${where}[${i}]`));
  for (let i = 0; i < out.length; i++) {
    for (let j = 0; j < i; j++) if (overlaps(out[i], out[j])) fail(where, `${formatPortMapping(out[i])} and ${formatPortMapping(out[j])} claim the same host port`);
  }
  return out;
}

/** CNI's runtimeConfig.portMappings (the `portMappings` capability) as toastnet publishes it. */
export function portMappingsFromCni(portMappings: unknown): PortMapping[] {
  return checkPortMappings(portMappings, 'runtimeConfig.portMappings');
}

/** `[HOSTIP:]HOSTPORT:SANDBOXPORT[/tcp|udp]`, as `--publish` takes it (docker's -p form). */
export function parsePublish(spec: string, where = '--publish'): PortMapping {
  const m = /^(?:([^:/]*):)?(\d{1,5}):(\d{1,5})(?:\/([A-Za-z]+))?$/.exec(spec);
  if (!m) return fail(`${where} ${spec}`, 'want [HOSTIP:]HOSTPORT:SANDBOXPORT[/tcp|udp]');
  return checkPortMapping(
    { hostPort: Number(m[2]), containerPort: Number(m[3]), ...(m[4] !== undefined ? { protocol: m[4] } : {}), ...(m[1] !== undefined ? { hostIP: m[1] === '' ? fail(`${where} ${spec}`, 'empty HOSTIP') : m[1] } : {}) },
    `${where} ${spec}`,
  );
}

/** "203.0.113.1:8080->80/tcp", or "8080->80/tcp" on every address (ls, errors). */
export function formatPortMapping(m: PortMapping): string {
  return `${m.hostIP !== undefined ? `${m.hostIP}:` : ''}${m.hostPort}->${m.containerPort}/${m.protocol}`;
}

/** The first of `wanted` that overlaps a publishing of another sandbox, as a one-line reason. */
export function publishConflict(wanted: PortMapping[], others: Iterable<{ name: string; publish?: PortMapping[] }>): string | undefined {
  for (const o of others) {
    for (const theirs of o.publish ?? []) {
      const mine = wanted.find((w) => overlaps(w, theirs));
      if (mine) return `publish ${formatPortMapping(mine)}: host port ${theirs.hostPort}/${theirs.protocol} is already published by sandbox "${o.name}" (${formatPortMapping(theirs)})`;
    }
  }
  return undefined;
}

/** A socket of the host waiting for connections (TCP listen, UDP bound and unconnected); `address` undefined when bound to every address. */
export interface HostListener {
  protocol: PublishProtocol;
  address?: string;
  port: number;
}

/**
 * The first of `wanted` whose host port a host socket is bound to on an address it would
 * translate: the socket would never see those connections again. A socket on loopback only
 * conflicts with a publishing on every address too: simpler to explain than the exception,
 * and the port is the host's in use.
 */
export function listenerConflict(wanted: PortMapping[], listeners: Iterable<HostListener>): string | undefined {
  for (const l of listeners) {
    const mine = wanted.find((w) => w.protocol === l.protocol && w.hostPort === l.port && (w.hostIP === undefined || l.address === undefined || l.address === w.hostIP));
    if (mine) return `publish ${formatPortMapping(mine)}: a host socket listens on ${l.address ?? '*'}:${l.port}/${l.protocol}`;
  }
  return undefined;
}

/**
 * What another instance's table publishes, from its `publish_addr` map as libnftables lists
 * it (`[{concat: [address | every address, protocol, port]}, sandbox]`): two instances on one
 * host share its ports, and the first translation of a flow would win. Entries of another
 * shape are skipped.
 */
export function publishedInMap(elems: readonly unknown[]): HostListener[] {
  const out: HostListener[] = [];
  for (const e of elems) {
    const key = (Array.isArray(e) ? e[0] : undefined) as { concat?: unknown[] } | undefined;
    const [addr, proto, port] = key?.concat ?? [];
    const protocol = proto === 'tcp' || proto === 6 ? 'tcp' : proto === 'udp' || proto === 17 ? 'udp' : undefined;
    if (!protocol || typeof port !== 'number') continue;
    out.push({ protocol, port, ...(typeof addr === 'string' ? { address: addr } : {}) });
  }
  return out;
}

/** The first of `wanted` another instance (its table `table`) publishes already. */
export function instanceConflict(wanted: PortMapping[], table: string, theirs: Iterable<HostListener>): string | undefined {
  for (const t of theirs) {
    const mine = wanted.find((w) => w.protocol === t.protocol && w.hostPort === t.port && (w.hostIP === undefined || t.address === undefined || t.address === w.hostIP));
    if (mine) return `publish ${formatPortMapping(mine)}: host port ${t.port}/${t.protocol} is already published by toastnet instance "${table}" (${t.address ?? '*'}:${t.port})`;
  }
  return undefined;
}
