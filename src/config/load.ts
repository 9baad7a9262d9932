// Resolves the configuration: flags > environment (TOASTNET_*) > config file > defaults.
// Each source is validated on its own first, so an error names the source and the key.
import fs from 'node:fs';
import { createHash } from 'node:crypto';
import { z } from 'zod';
import { ToastnetError } from '../errors.js';
import { cidrContains, cidrLast, formatIPv4, parseCidr, parseIPv4 } from '../core/ipv4.js';
import { aboveConnCeiling } from '../core/policy.js';
import { Config, ConfigInput, ConfigSchema } from './schema.js';

export const DEFAULT_CONFIG_FILE = '/etc/toastnet/config.json';

/** Environment variable for each key; list-valued keys take comma-separated values. */
const ENV_KEYS: Record<string, keyof ConfigInput> = {
  TOASTNET_INSTANCE: 'instance',
  TOASTNET_SUBNET: 'subnet',
  TOASTNET_GATEWAY: 'gateway',
  TOASTNET_DNS_UPSTREAMS: 'dnsUpstreams',
  TOASTNET_DNS_TIMEOUT_MS: 'dnsTimeoutMs',
  TOASTNET_DNS_CACHE_SIZE: 'dnsCacheSize',
  TOASTNET_ALLOW_CIDRS: 'allowCidrs',
  TOASTNET_DENY_CIDRS: 'denyCidrs',
  TOASTNET_STATE_DIR: 'stateDir',
  TOASTNET_METRICS_LISTEN: 'metricsListen',
  TOASTNET_POOL_SIZE: 'poolSize',
  TOASTNET_DEFAULT_MODE: 'defaultMode',
  TOASTNET_RUN_DIR: 'runDir',
  TOASTNET_LOG_LEVEL: 'logLevel',
};
const LIST_KEYS = new Set(['dnsUpstreams', 'allowCidrs', 'denyCidrs']);
const NUMBER_KEYS = new Set(['dnsTimeoutMs', 'dnsCacheSize', 'poolSize']);
/** TOASTNET_* variables that are not config keys but are still ours. */
const OTHER_ENV = new Set(['TOASTNET_CONFIG']);

function describeIssues(source: string, err: z.ZodError): ToastnetError {
  const i = err.issues[0];
  const key = i.path.join('.');
  let msg: string;
  if (i.code === 'unrecognized_keys') msg = `unknown key ${i.keys.map((k) => `"${k}"`).join(', ')}`;
  else msg = `key "${key}": ${i.message}`;
  return new ToastnetError('invalid_argument', `${source}: ${msg}`);
}

function validatePartial(source: string, obj: unknown): Partial<ConfigInput> {
  const r = ConfigSchema.partial().safeParse(obj);
  if (!r.success) throw describeIssues(source, r.error);
  // Only keys actually given: partial() fills no defaults, but keep the input as given.
  return obj as Partial<ConfigInput>;
}

export function fromEnv(env: NodeJS.ProcessEnv): Partial<ConfigInput> {
  const out: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(env)) {
    if (!name.startsWith('TOASTNET_') || value === undefined) continue;
    const key = ENV_KEYS[name];
    if (!key) {
      if (OTHER_ENV.has(name)) continue;
      throw new ToastnetError('invalid_argument', `environment: unknown variable ${name} (known: ${[...Object.keys(ENV_KEYS), ...OTHER_ENV].join(', ')})`);
    }
    if (LIST_KEYS.has(key)) out[key] = value.split(',').map((s) => s.trim()).filter(Boolean);
    else if (NUMBER_KEYS.has(key)) out[key] = Number(value);
    else out[key] = value;
  }
  return validatePartial('environment', out);
}

export function fromFile(path: string, mustExist: boolean): Partial<ConfigInput> {
  let text: string;
  try {
    text = fs.readFileSync(path, 'utf8');
  } catch (err) {
    if (!mustExist && (err as NodeJS.ErrnoException).code === 'ENOENT') return {};
    throw new ToastnetError('invalid_argument', `config file ${path}: ${(err as Error).message}`);
  }
  let obj: unknown;
  try {
    obj = JSON.parse(text);
  } catch (err) {
    throw new ToastnetError('invalid_argument', `config file ${path}: not valid JSON (${(err as Error).message})`);
  }
  return validatePartial(`config file ${path}`, obj);
}

/**
 * The host's resolvers for sandboxes. A loopback stub (systemd-resolved's 127.0.0.53) is
 * unreachable from a sandbox, so its real upstreams are read from
 * /run/systemd/resolve/resolv.conf instead: the trap the reference note fell into.
 */
export function defaultUpstreams(files = ['/etc/resolv.conf', '/run/systemd/resolve/resolv.conf']): string[] {
  for (const f of files) {
    let text: string;
    try {
      text = fs.readFileSync(f, 'utf8');
    } catch {
      continue;
    }
    const servers = [...text.matchAll(/^\s*nameserver\s+(\d{1,3}(?:\.\d{1,3}){3})\s*$/gm)]
      .map((m) => m[1])
      .filter((ip) => !ip.startsWith('127.') && ip !== '0.0.0.0');
    if (servers.length > 0) return servers;
  }
  return [];
}

export interface LoadOptions {
  flags?: Partial<ConfigInput>;
  env?: NodeJS.ProcessEnv;
  /** Explicit --config file: must exist. Otherwise TOASTNET_CONFIG, then the default file if present. */
  configFile?: string;
  resolvConfFiles?: string[];
}

export function loadConfig(o: LoadOptions = {}): Config {
  const env = o.env ?? process.env;
  const explicit = o.configFile ?? env.TOASTNET_CONFIG;
  const file = fromFile(explicit ?? DEFAULT_CONFIG_FILE, explicit !== undefined);
  const envPart = fromEnv(env);
  const flags = validatePartial('flags', Object.fromEntries(Object.entries(o.flags ?? {}).filter(([, v]) => v !== undefined)));
  const given = { ...file, ...envPart, ...flags };
  const merged = ConfigSchema.safeParse(given);
  if (!merged.success) throw describeIssues('config', merged.error);
  return { ...resolve(merged.data, o.resolvConfFiles), given };
}

/** Fills derived defaults and checks relations between keys. */
export function resolve(c: z.output<typeof ConfigSchema>, resolvConfFiles?: string[]): Config {
  const subnet = parseCidr(c.subnet, 'subnet');
  const gateway = c.gateway ?? formatIPv4(subnet.network + 1);
  const gw = parseIPv4(gateway, 'gateway');
  if (!cidrContains(subnet, gw) || gw === subnet.network || gw === cidrLast(subnet)) {
    throw new ToastnetError('invalid_argument', `config: key "gateway": ${gateway} is not a usable address of subnet ${c.subnet}`);
  }
  if (c.dnsMinTtl > c.dnsMaxTtl) {
    throw new ToastnetError('invalid_argument', `config: key "dnsMinTtl": ${c.dnsMinTtl} is above dnsMaxTtl ${c.dnsMaxTtl}`);
  }
  const above = aboveConnCeiling(c.defaultPolicy.limits, c.newConnsPerSecond);
  if (above) throw new ToastnetError('invalid_argument', `config: key "defaultPolicy": ${above.field} ${above.value} is above the ceiling newConnsPerSecond ${c.newConnsPerSecond}`);
  return {
    instance: c.instance,
    subnet: c.subnet,
    gateway,
    dnsUpstreams: c.dnsUpstreams ?? defaultUpstreams(resolvConfFiles),
    dnsTimeoutMs: c.dnsTimeoutMs,
    dnsMinTtl: c.dnsMinTtl,
    dnsMaxTtl: c.dnsMaxTtl,
    dnsRefuseWith: c.dnsRefuseWith,
    dnsCacheSize: c.dnsCacheSize,
    dnsPacketsPerSecond: c.dnsPacketsPerSecond,
    newConnsPerSecond: c.newConnsPerSecond,
    allowCidrs: c.allowCidrs,
    denyCidrs: c.denyCidrs,
    defaultPolicy: c.defaultPolicy,
    allowMetadata: c.allowMetadata,
    denyAction: c.denyAction,
    defaultMode: c.defaultMode,
    logGroup: c.logGroup ?? defaultLogGroup(c.instance),
    ...(c.metricsListen !== undefined ? { metrics: parseListen(c.metricsListen) } : {}),
    metricsMaxSandboxes: c.metricsMaxSandboxes,
    metricsLabels: c.metricsLabels,
    flowRetention: c.flowRetention,
    logLevel: c.logLevel,
    pool: { size: c.poolSize, refillBelow: Math.min(c.poolRefillBelow ?? c.poolSize, c.poolSize) },
    stateDir: c.stateDir ?? `/var/lib/toastnet/${c.instance}`,
    runDir: c.runDir ?? `/run/toastnet/${c.instance}`,
  };
}

/** "9464" -> loopback:9464; "0.0.0.0:9464" as given. */
function parseListen(s: string): { host: string; port: number } {
  const i = s.lastIndexOf(':');
  const host = i < 0 ? '127.0.0.1' : s.slice(0, i);
  const port = Number(i < 0 ? s : s.slice(i + 1));
  parseIPv4(host, 'metricsListen');
  if (port < 1 || port > 65535) throw new ToastnetError('invalid_argument', `config: key "metricsListen": port ${port} is out of range`);
  return { host, port };
}

/** NFLOG groups are per network namespace: give each instance its own, 1000-60999. */
export function defaultLogGroup(instance: string): number {
  return 1000 + (parseInt(createHash('sha256').update(instance).digest('hex').slice(0, 8), 16) % 60000);
}

/** Hash of what shapes kernel state; a change while sandboxes live needs `down` first. */
export function kernelConfigHash(c: Config): string {
  return createHash('sha256').update(JSON.stringify({ subnet: c.subnet, gateway: c.gateway, instance: c.instance })).digest('hex').slice(0, 16);
}
