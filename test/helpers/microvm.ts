// A real guest for TAP sandbox tests and the bench: Debian's QEMU (-M microvm, under TCG)
// booting Debian's cloud kernel with a busybox-static initramfs whose /init runs probes
// (guest-init.sh) and prints MARK lines. Nobody here wrote the VMM or the kernel.
//
// The kernel package is fetched with `apt-get download` and unpacked with `dpkg -x` into a
// cache dir (TOASTNET_MICROVM_DIR, default /var/tmp/toastnet-microvm), never installed.
// Traps found on these machines (../shared/tools/microvm/README.md):
// - /dev/kvm is nested (kvm_pvm): `-cpu host` fails on MSR 0x10a and a stock guest hangs, so TCG.
// - microvm has no HPET/PM timer: the guest is told the TSC rate (tsc_early_khz) or a busy
//   host can hang its calibration.
import fs from 'node:fs';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/** The guest's /init: a busybox sh script beside this file's source (read from there by the compiled dist/test/helpers/microvm.js). */
const GUEST_INIT = fs.readFileSync(path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../test/helpers/guest-init.sh'), 'utf8');

export const MICROVM_DIR = process.env.TOASTNET_MICROVM_DIR ?? '/var/tmp/toastnet-microvm';
const MODULES = ['virtio/virtio_ring', 'virtio/virtio', 'virtio/virtio_mmio', 'net/net_failover', 'net/virtio_net'];

export interface GuestImage {
  kernel: string;
  initrd: string;
}

/** Why a guest cannot boot here (a missing tool), or undefined when it can. */
export function microvmUnavailable(): string | undefined {
  for (const [cmd, pkg] of [['qemu-system-x86_64', 'qemu-system-x86'], ['cpio', 'cpio'], ['dpkg', 'dpkg'], ['apt-get', 'apt']]) {
    if (spawnSync('sh', ['-c', `command -v ${cmd}`]).status !== 0) return `${cmd} missing (install ${pkg}: scripts/install-deps.sh)`;
  }
  const bb = busybox();
  if (!bb) return 'a static busybox is missing (install busybox-static)';
  return undefined;
}

/** busybox-static's binary (Debian installs it as /bin/busybox, replacing the dynamic one). */
function busybox(): string | undefined {
  for (const p of ['/bin/busybox', '/usr/bin/busybox']) {
    if (!fs.existsSync(p)) continue;
    // A static ELF has no program interpreter (PT_INTERP): look for the loader's path in its head.
    const head = fs.readFileSync(p).subarray(0, 4096).toString('latin1');
    if (!head.includes('/lib64/ld-linux') && !head.includes('/lib/ld-linux')) return p;
  }
  return undefined;
}

/** The cloud kernel's package name (the versioned dependency of linux-image-cloud-amd64). */
function kernelPackage(): string {
  const find = () => /Depends: (linux-image-\d\S*)/.exec(spawnSync('apt-cache', ['depends', 'linux-image-cloud-amd64'], { encoding: 'utf8' }).stdout ?? '')?.[1];
  let pkg = find();
  if (!pkg) {
    execFileSync('apt-get', ['update', '-qq'], { stdio: 'ignore' });
    pkg = find();
  }
  if (!pkg) throw new Error('linux-image-cloud-amd64 has no versioned dependency in the apt lists');
  return pkg;
}

/** Kernel and initramfs, made once and cached (the initramfs again when /init changes). */
export function prepareGuest(dir = MICROVM_DIR): GuestImage {
  const why = microvmUnavailable();
  if (why) throw new Error(why);
  fs.mkdirSync(dir, { recursive: true });
  const kernel = path.join(dir, 'vmlinuz');
  const tree = path.join(dir, 'k');
  if (!fs.existsSync(kernel) || !fs.existsSync(tree)) {
    const pkg = kernelPackage();
    execFileSync('apt-get', ['download', '-q', pkg], { cwd: dir, stdio: 'ignore' });
    const deb = fs.readdirSync(dir).find((f) => f.startsWith(`${pkg}_`) && f.endsWith('.deb'));
    if (!deb) throw new Error(`apt-get download ${pkg} left no .deb in ${dir}`);
    // Unpacked and copied under per-process names, then renamed: a run preparing at the
    // same time sees a whole tree and kernel or none.
    const mine = `${tree}.${process.pid}`;
    fs.rmSync(mine, { recursive: true, force: true });
    execFileSync('dpkg', ['-x', path.join(dir, deb), mine]);
    const vmlinuz = fs.readdirSync(path.join(mine, 'boot')).find((f) => f.startsWith('vmlinuz-'));
    if (!vmlinuz) throw new Error(`${deb} has no boot/vmlinuz-*`);
    fs.rmSync(tree, { recursive: true, force: true });
    fs.renameSync(mine, tree);
    fs.copyFileSync(path.join(tree, 'boot', vmlinuz), `${kernel}.${process.pid}`);
    fs.renameSync(`${kernel}.${process.pid}`, kernel);
  }
  const bb = busybox()!;
  const tag = createHash('sha256').update(GUEST_INIT).update(String(fs.statSync(bb).size)).digest('hex').slice(0, 12);
  const initrd = path.join(dir, `initrd-${tag}.gz`);
  if (!fs.existsSync(initrd)) buildInitrd(tree, bb, initrd);
  return { kernel, initrd };
}

function buildInitrd(tree: string, bb: string, out: string): void {
  const root = fs.mkdtempSync(path.join(path.dirname(out), 'root-'));
  try {
    for (const d of ['bin', 'dev', 'proc', 'sys', 'etc', 'lib/modules']) fs.mkdirSync(path.join(root, d), { recursive: true });
    fs.copyFileSync(bb, path.join(root, 'bin/busybox'));
    fs.chmodSync(path.join(root, 'bin/busybox'), 0o755);
    const modRoot = path.join(tree, 'lib/modules');
    const version = fs.readdirSync(modRoot)[0];
    const drivers = path.join(modRoot, version, 'kernel');
    const copies = [...MODULES.map((m) => path.join(drivers, 'drivers', `${m}.ko`)), path.join(drivers, 'net/core/failover.ko')];
    for (const m of copies) {
      // Modules may ship compressed (.ko.xz); the initramfs' insmod wants them plain.
      if (fs.existsSync(m)) fs.copyFileSync(m, path.join(root, 'lib/modules', path.basename(m)));
      else if (fs.existsSync(`${m}.xz`)) fs.writeFileSync(path.join(root, 'lib/modules', path.basename(m)), execFileSync('xz', ['-dc', `${m}.xz`], { maxBuffer: 64 << 20 }));
      else if (!m.endsWith('failover.ko')) throw new Error(`kernel module missing: ${m}`);
    }
    fs.writeFileSync(path.join(root, 'init'), GUEST_INIT, { mode: 0o755 });
    const tmp = `${out}.${process.pid}.tmp`; // two runs building at once each rename a whole file
    execFileSync('sh', ['-c', `cd "${root}" && find . | cpio -o -H newc --quiet | gzip -1 > "${tmp}"`]);
    fs.renameSync(tmp, out);
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
}

export interface BootOptions {
  /** Network namespace to start QEMU in (a TAP sandbox's `tap.netns`). */
  netns: string;
  /** The TAP's name there. */
  tap: string;
  mac: string;
  /** The kernel's ip= argument. */
  kernelIp: string;
  probes: string[];
  /** QEMU is killed after this long (default 120 s). */
  timeoutMs?: number;
  /** Extra -netdev tap options, e.g. "vhost=off,queues=2". */
  netdevExtra?: string;
}

export interface Mark {
  /** The MARK line's words after MARK. */
  words: string[];
  /** ms since QEMU was spawned, when the line arrived. */
  atMs: number;
}

/** A booting guest: its MARK lines as they come, and its end. */
export class Guest {
  readonly marks: Mark[] = [];
  log = '';
  /** When QEMU was spawned (performance.now()); Mark.atMs counts from here. */
  readonly startedAt = performance.now();
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private waiters: (() => void)[] = [];

  constructor(readonly proc: ChildProcess) {
    let partial = '';
    proc.stdout!.on('data', (d: Buffer) => {
      const s = d.toString('latin1');
      this.log += s;
      partial += s;
      const lines = partial.split(/\r?\n/);
      partial = lines.pop()!;
      for (const l of lines) {
        const i = l.indexOf('MARK ');
        if (i < 0) continue;
        this.marks.push({ words: l.slice(i + 5).trim().split(/\s+/), atMs: performance.now() - this.startedAt });
        for (const w of this.waiters.splice(0)) w();
      }
    });
    proc.stderr!.on('data', (d: Buffer) => (this.log += d.toString('latin1')));
    this.exited = new Promise((resolve) => proc.on('exit', (code, signal) => {
      resolve({ code, signal });
      for (const w of this.waiters.splice(0)) w();
    }));
  }

  get pid(): number {
    return this.proc.pid!;
  }

  /** The first MARK line whose words start with `prefix`, waiting for it (rejects when the guest ends first). */
  async mark(prefix: string[], timeoutMs = 60_000): Promise<Mark> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const m = this.marks.find((x) => prefix.every((p, i) => x.words[i] === p));
      if (m) return m;
      if (this.proc.exitCode !== null || this.proc.signalCode !== null) throw new Error(`guest ended without MARK ${prefix.join(' ')}:\n${this.log.slice(-3000)}`);
      if (performance.now() > deadline) throw new Error(`no MARK ${prefix.join(' ')} in ${timeoutMs} ms:\n${this.log.slice(-3000)}`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, 200);
        this.waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  }

  /** Waits for the guest to power off (or be killed); returns its MARK lines. */
  async done(): Promise<Mark[]> {
    await this.exited;
    return this.marks;
  }

  kill(): void {
    try {
      this.proc.kill('SIGKILL');
    } catch {
      // gone
    }
  }
}

/** The host's TSC rate in kHz, for the guest's tsc_early_khz (microvm has no timer to calibrate it against). */
function tscKhz(): number {
  const mhz = /cpu MHz\s*:\s*([\d.]+)/.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'))?.[1];
  return Math.round(Number(mhz ?? 2000) * 1000);
}

/** Boots the guest with QEMU inside `o.netns` on its TAP. */
export function bootGuest(img: GuestImage, o: BootOptions): Guest {
  const append = ['console=ttyS0', 'reboot=t', 'panic=-1', 'quiet', `tsc_early_khz=${tscKhz()}`, o.kernelIp, `tn.probe=${o.probes.join('|')}`].join(' ');
  if (append.length > 2000) throw new Error('probes too long for the kernel command line');
  const qemu = [
    'qemu-system-x86_64', '-M', 'microvm', '-accel', 'tcg', '-cpu', 'max', '-m', '256', '-smp', '1',
    '-nodefaults', '-no-user-config', '-nographic', '-no-reboot', '-serial', 'stdio',
    '-kernel', img.kernel, '-initrd', img.initrd, '-append', append,
    '-netdev', `tap,id=n0,ifname=${o.tap},script=no,downscript=no${o.netdevExtra ? `,${o.netdevExtra}` : ''}`,
    '-device', `virtio-net-device,netdev=n0,mac=${o.mac}`,
  ];
  const p = spawn('nsenter', [`--net=${o.netns}`, '--', 'timeout', '-s', 'KILL', String(Math.ceil((o.timeoutMs ?? 120_000) / 1000)), ...qemu], { stdio: ['ignore', 'pipe', 'pipe'] });
  return new Guest(p);
}

/** MARK lines' words by their first word and second (e.g. "get http://…"), the last one kept. */
export function marksBy(marks: Mark[]): Map<string, string[]> {
  return new Map(marks.map((m) => [`${m.words[0]} ${m.words[1] ?? ''}`, m.words.slice(2)]));
}
