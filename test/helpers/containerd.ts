// containerd (Debian's 1.6, with runc) as a real CNI client for the tests: a private
// containerd (its own root, state and socket in the testbed's directory) running in the
// testbed's host namespace, an image made offline from busybox-static, and `ctr run --cni`,
// which executes the CNI plugins itself from /etc/cni/net.d and /opt/cni/bin. Those two are
// bind-mounted from the test's directories in a private mount namespace, so nothing global
// changes (the two mount points are made if missing and removed again).
import fs from 'node:fs';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import type { Testbed } from '../testbed/testbed.js';
import { waitFor } from './wait.js';

export const IMAGE = 'docker.io/library/tnbb:latest';
const NAMESPACE = 'tn';
const MOUNT_POINTS = ['/etc/cni/net.d', '/opt/cni/bin'];

export function containerdAvailable(): boolean {
  return ['containerd', 'ctr', 'runc'].every((b) => spawnSync('sh', ['-c', `command -v ${b}`]).status === 0) && fs.existsSync('/bin/busybox');
}

/** The client's versions, for the report. */
export function clientVersions(): string {
  const v = (cmd: string[]) => spawnSync(cmd[0], cmd.slice(1), { encoding: 'utf8' }).stdout.split('\n')[0].trim();
  return `${v(['containerd', '--version'])}; ${v(['runc', '--version'])}`;
}

function blob(dir: string, data: Buffer | string): { digest: string; size: number } {
  const buf = Buffer.isBuffer(data) ? data : Buffer.from(data);
  const hex = createHash('sha256').update(buf).digest('hex');
  fs.writeFileSync(path.join(dir, 'blobs/sha256', hex), buf);
  return { digest: `sha256:${hex}`, size: buf.length };
}

/**
 * busybox-static as a one-layer OCI image archive under `dir` (returns its path), with a
 * resolv.conf naming `nameserver` (ctr writes none from the result).
 */
export function buildBusyboxImage(dir: string, nameserver = '10.166.0.1'): string {
  const root = path.join(dir, 'rootfs');
  const oci = path.join(dir, 'oci');
  for (const d of ['bin', 'dev', 'etc', 'proc', 'sys', 'tmp', 'run']) fs.mkdirSync(path.join(root, d), { recursive: true });
  fs.mkdirSync(path.join(oci, 'blobs/sha256'), { recursive: true });
  fs.copyFileSync('/bin/busybox', path.join(root, 'bin/busybox'));
  for (const a of ['sh', 'cat', 'echo', 'ip', 'wget', 'nslookup', 'timeout', 'sleep', 'grep']) fs.symlinkSync('busybox', path.join(root, 'bin', a));
  fs.writeFileSync(path.join(root, 'etc/resolv.conf'), `nameserver ${nameserver}\n`);
  fs.writeFileSync(path.join(root, 'etc/hosts'), '127.0.0.1 localhost\n');
  const layer = execFileSync('tar', ['-C', root, '--numeric-owner', '--owner=0', '--group=0', '-cf', '-', '.'], { maxBuffer: 64 << 20 });
  const l = blob(oci, layer);
  const c = blob(oci, JSON.stringify({ architecture: 'amd64', os: 'linux', config: { Env: ['PATH=/bin'], Cmd: ['/bin/sh'] }, rootfs: { type: 'layers', diff_ids: [l.digest] } }));
  const m = blob(oci, JSON.stringify({
    schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...c },
    layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', ...l }],
  }));
  fs.writeFileSync(path.join(oci, 'index.json'), JSON.stringify({
    schemaVersion: 2,
    manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', ...m, platform: { architecture: 'amd64', os: 'linux' }, annotations: { 'io.containerd.image.name': IMAGE, 'org.opencontainers.image.ref.name': 'latest' } }],
  }));
  fs.writeFileSync(path.join(oci, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  const tar = path.join(dir, 'image.tar');
  execFileSync('tar', ['-C', oci, '-cf', tar, 'oci-layout', 'index.json', 'blobs']);
  return tar;
}


export class Containerd {
  readonly dir: string;
  readonly socket: string;
  private proc?: ChildProcess;
  private madeMountPoints: string[] = [];

  constructor(private readonly tb: Testbed) {
    this.dir = path.join(tb.dir, 'containerd');
    this.socket = path.join(this.dir, 'c.sock');
  }

  async start(): Promise<void> {
    fs.mkdirSync(this.dir, { recursive: true });
    const cfg = path.join(this.dir, 'config.toml');
    fs.writeFileSync(cfg, `version = 2\nroot = "${this.dir}/root"\nstate = "${this.dir}/state"\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n[grpc]\n  address = "${this.socket}"\n`);
    this.proc = this.tb.background(this.tb.hostNs, ['containerd', '--config', cfg]);
    await waitFor(() => spawnSync('ctr', ['-a', this.socket, 'version']).status === 0, 'containerd to answer', 20_000, 100);
    const tar = buildBusyboxImage(this.dir);
    execFileSync('ctr', ['-a', this.socket, '-n', NAMESPACE, 'image', 'import', tar], { stdio: 'ignore' });
    for (const m of MOUNT_POINTS) {
      if (fs.existsSync(m)) continue;
      fs.mkdirSync(m, { recursive: true });
      this.madeMountPoints.push(m);
    }
  }

  /**
   * `ctr run --rm --cni IMAGE id cmd...` with the CNI config dir and plugin dir given; what
   * the plugin receives as CNI_CONTAINERID is `<namespace>-<id>`.
   */
  run(confDir: string, pluginDir: string, id: string, cmd: string[], timeoutMs = 60_000): Promise<{ code: number; stdout: string; stderr: string }> {
    const script = 'mount --bind "$1" /etc/cni/net.d && mount --bind "$2" /opt/cni/bin && shift 2 && exec "$@"';
    const p = spawn('nsenter', [`--net=/run/netns/${this.tb.hostNs}`, '--', 'unshare', '-m', '--propagation', 'private', 'sh', '-c', script, '_',
      confDir, pluginDir, 'ctr', '-a', this.socket, '-n', NAMESPACE, 'run', '--rm', '--cni', IMAGE, id, ...cmd], { stdio: ['ignore', 'pipe', 'pipe'] });
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

  containerId(id: string): string {
    return `${NAMESPACE}-${id}`;
  }

  stop(): void {
    this.proc?.kill('SIGTERM');
    // containerd's own mounts (overlay snapshots, shm) under its root, deepest first.
    const mounts = fs.readFileSync('/proc/mounts', 'utf8').split('\n').map((l) => l.split(' ')[1]).filter((m) => m?.startsWith(this.dir)).sort().reverse();
    for (const m of mounts) spawnSync('umount', ['-l', m]);
    for (const m of this.madeMountPoints.reverse()) {
      try {
        fs.rmdirSync(m);
        fs.rmdirSync(path.dirname(m));
      } catch {
        // not empty (someone else's): left
      }
    }
  }
}
