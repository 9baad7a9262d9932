// podman (Debian's 4.3.1) with its CNI backend as a real CNI client for the tests: a private
// CONTAINERS_CONF (network_backend "cni", the test's plugin and config directories, runc,
// cgroupfs, no default ulimits: these VMs lack CAP_SYS_RESOURCE), private root and runroot
// with the vfs driver, started with nsenter --net in the testbed's host namespace. Nothing
// global is left (its blob-info cache under /var/lib/containers is removed after). Image: the busybox image containerd.ts builds, loaded from its archive.
import fs from 'node:fs';
import path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import type { Testbed } from '../testbed/testbed.js';

export function podmanAvailable(): boolean {
  return spawnSync('sh', ['-c', 'command -v podman && command -v runc && command -v conmon']).status === 0 && fs.existsSync('/bin/busybox');
}

export function podmanVersion(): string {
  return spawnSync('podman', ['--version'], { encoding: 'utf8' }).stdout.trim();
}

export class Podman {
  readonly dir: string;
  private readonly conf: string;
  /** podman keeps a blob-info cache there whatever its root: removed after if it made it. */
  private readonly madeVarLib = !fs.existsSync('/var/lib/containers');

  constructor(private readonly tb: Testbed, confDir: string, pluginDir: string) {
    this.dir = path.join(tb.dir, 'podman');
    fs.mkdirSync(this.dir, { recursive: true });
    this.conf = path.join(this.dir, 'containers.conf');
    fs.writeFileSync(this.conf, [
      '[containers]', 'default_ulimits = []', 'log_driver = "k8s-file"',
      '[network]', 'network_backend = "cni"', `cni_plugin_dirs = ["${pluginDir}"]`, `network_config_dir = "${confDir}"`,
      '[engine]', 'cgroup_manager = "cgroupfs"', 'events_logger = "file"', `events_logfile_path = "${this.dir}/events.log"`, 'runtime = "runc"',
      `tmp_dir = "${this.dir}/tmp"`, `volume_path = "${this.dir}/volumes"`, '',
    ].join('\n'));
  }

  private args(rest: string[]): string[] {
    return [`--net=/run/netns/${this.tb.hostNs}`, '--', 'podman', '--root', `${this.dir}/root`, '--runroot', `${this.dir}/run`, '--storage-driver', 'vfs', ...rest];
  }

  private env(): NodeJS.ProcessEnv {
    return { ...process.env, CONTAINERS_CONF: this.conf, CONTAINERS_REGISTRIES_CONF: path.join(this.dir, 'registries.conf'), XDG_RUNTIME_DIR: path.join(this.dir, 'xdg') };
  }

  sync(rest: string[], timeoutMs = 60_000): { code: number; stdout: string; stderr: string } {
    fs.writeFileSync(path.join(this.dir, 'registries.conf'), '');
    fs.mkdirSync(path.join(this.dir, 'xdg'), { recursive: true, mode: 0o700 });
    const r = spawnSync('nsenter', this.args(rest), { encoding: 'utf8', env: this.env(), timeout: timeoutMs });
    return { code: r.status ?? 128, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
  }

  run(rest: string[], timeoutMs = 60_000): Promise<{ code: number; stdout: string; stderr: string }> {
    const p = spawn('nsenter', this.args(rest), { env: this.env(), stdio: ['ignore', 'pipe', 'pipe'] });
    return new Promise((resolve) => {
      let stdout = '';
      let stderr = '';
      p.stdout.on('data', (d) => (stdout += d));
      p.stderr.on('data', (d) => (stderr += d));
      const timer = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
      p.on('close', (code) => {
        clearTimeout(timer);
        resolve({ code: code ?? 128, stdout, stderr });
      });
    });
  }

  /** Loads an OCI archive as `name`. */
  load(archive: string, name: string): void {
    const r = this.sync(['load', '-q', '-i', archive]);
    if (r.code !== 0) throw new Error(`podman load: ${r.stderr}`);
    const id = /([0-9a-f]{64}|sha256:[0-9a-f]+|[\w./:-]+)\s*$/.exec(r.stdout.trim())?.[1];
    if (id && id !== name) this.sync(['tag', id.replace(/^Loaded image:\s*/, ''), name]);
  }

  stop(): void {
    this.sync(['rm', '-af', '-t', '0']);
    const mounts = fs.readFileSync('/proc/mounts', 'utf8').split('\n').map((l) => l.split(' ')[1]).filter((m) => m?.startsWith(this.dir)).sort().reverse();
    for (const m of mounts) spawnSync('umount', ['-l', m]);
    if (this.madeVarLib) fs.rmSync('/var/lib/containers', { recursive: true, force: true });
  }
}
