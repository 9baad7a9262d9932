// Executes CNI plugins the way the spec says a runtime does: one process per call, the
// network config on stdin, CNI_* in the environment, the answer on stdout and the exit
// code. Used by the CNI integration tests and the CNI bench.
import path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
/** The built plugin (npm run build: dist/bin/toastnet-cni). */
export const TOASTNET_CNI = path.resolve(here, '../../bin/toastnet-cni');
export const CNI_BIN = '/usr/lib/cni';

export interface CniEnv {
  command: 'ADD' | 'DEL' | 'CHECK' | 'GC' | 'STATUS' | 'VERSION';
  containerId?: string;
  netns?: string;
  ifname?: string;
  args?: string;
}

export interface CniAnswer {
  code: number;
  /** stdout parsed (undefined when empty). */
  out: Record<string, unknown> | undefined;
  raw: string;
  stderr: string;
}

function envOf(e: CniEnv): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, CNI_COMMAND: e.command, CNI_PATH: CNI_BIN };
  if (e.containerId !== undefined) env.CNI_CONTAINERID = e.containerId;
  if (e.netns !== undefined) env.CNI_NETNS = e.netns;
  if (e.ifname !== undefined) env.CNI_IFNAME = e.ifname;
  if (e.args !== undefined) env.CNI_ARGS = e.args;
  return env;
}

function answer(code: number | null, stdout: string, stderr: string): CniAnswer {
  let out: Record<string, unknown> | undefined;
  const raw = stdout.trim();
  if (raw !== '') {
    try {
      out = JSON.parse(raw) as Record<string, unknown>;
    } catch {
      out = { unparsed: raw };
    }
  }
  return { code: code ?? 128, out, raw, stderr };
}

/**
 * Runs `plugin` once, in network namespace `hostNs` (where a runtime runs its plugins), with
 * `conf` on stdin.
 */
export function execPlugin(hostNs: string, plugin: string, conf: unknown, e: CniEnv): CniAnswer {
  const r = spawnSync('nsenter', [`--net=/run/netns/${hostNs}`, plugin], { input: JSON.stringify(conf), env: envOf(e), encoding: 'utf8', timeout: 60_000 });
  return answer(r.status, r.stdout ?? '', r.stderr ?? '');
}

/** The same, asynchronously (concurrent calls). */
export function execPluginAsync(hostNs: string, plugin: string, conf: unknown, e: CniEnv): Promise<CniAnswer> {
  return new Promise((resolve) => {
    const p = spawn('nsenter', [`--net=/run/netns/${hostNs}`, plugin], { env: envOf(e), stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    p.on('close', (code) => resolve(answer(code, stdout, stderr)));
    p.stdin.end(JSON.stringify(conf));
  });
}

/**
 * A conflist executed as libcni does: ADD through the plugins in order, each given the
 * previous result as prevResult; CHECK and DEL with the final result, DEL in reverse.
 */
export class CniList {
  /** `pluginPath`: where the runtime finds the executable of a plugin type (its plugin directory). */
  constructor(
    readonly hostNs: string,
    readonly list: { cniVersion: string; name: string; plugins: Record<string, unknown>[] },
    private readonly pluginPath: (type: string) => string = (type) => (type === 'toastnet-cni' ? TOASTNET_CNI : path.join(CNI_BIN, type)),
  ) {}

  private conf(p: Record<string, unknown>, prev?: unknown): Record<string, unknown> {
    return { cniVersion: this.list.cniVersion, name: this.list.name, ...p, ...(prev ? { prevResult: prev } : {}) };
  }

  add(e: Omit<CniEnv, 'command'>): { result?: Record<string, unknown>; failed?: CniAnswer } {
    let prev: Record<string, unknown> | undefined;
    for (const p of this.list.plugins) {
      const a = execPlugin(this.hostNs, this.pluginPath(p.type as string), this.conf(p, prev), { ...e, command: 'ADD' });
      if (a.code !== 0) return { failed: a };
      prev = a.out;
    }
    return { result: prev };
  }

  run(command: 'CHECK' | 'DEL', e: Omit<CniEnv, 'command'>, result?: unknown): CniAnswer[] {
    const plugins = command === 'DEL' ? [...this.list.plugins].reverse() : this.list.plugins;
    return plugins.map((p) => execPlugin(this.hostNs, this.pluginPath(p.type as string), this.conf(p, result), { ...e, command }));
  }
}
