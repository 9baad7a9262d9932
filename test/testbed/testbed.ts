// A throwaway network for integration tests, benches and the demo. All traffic stays in
// namespaces this object makes:
//
//   [sandboxes] --veth/macvlan-- [host ns: toastnet, a host service on :8080]
//        up0 192.0.2.2/24 ---- wan0 192.0.2.1/24 [wan ns: the "internet"]
//   wan ns addresses: 203.0.113.10 and .20 (HTTP "internet"), 203.0.113.53 and .54 (DNS),
//   169.254.169.254 (fake metadata), 172.16.5.5 (fake VPC db :5432 and web :80),
//   10.99.0.5, 192.168.77.5, 100.64.0.5 (other private space).
//
// Names are unique per run (two runs can coexist); destroy() removes every namespace,
// link, table, file and process the run made, and is safe to call after a failure.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ChildProcess, execFile, execFileSync, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { DAEMON_NODE_FLAGS } from '../../src/daemon/node-flags.js';

const here = path.dirname(fileURLToPath(import.meta.url));
export const CLI = path.resolve(here, '../../src/cli/main.js');
export const SERVERS = path.resolve(here, 'servers.js');
/** A DNS client that sends a message byte for byte (see dns-exchange.ts). */
export const DNS_EXCHANGE = path.resolve(here, 'dns-exchange.js');

export const WAN = {
  internet: '203.0.113.10',
  internet2: '203.0.113.20',
  dns: '203.0.113.53',
  dns2: '203.0.113.54',
  metadata: '169.254.169.254',
  vpc: '172.16.5.5',
  private10: '10.99.0.5',
  private192: '192.168.77.5',
  cgnat: '100.64.0.5',
  hostUplink: '192.0.2.2',
  wanUplink: '192.0.2.1',
};

/** Where serveTlsNames puts the plain HTTP virtual-host server (port 80 of WAN.internet2 answers a fixed body other tests read). */
export const VHOST_PORT = 8088;
/** The certificate a tls server (servers.ts) presents without SNI: its file name there, which no DNS name can take. */
const DEFAULT_CERT = '_default';

const execFileAsync = promisify(execFile);

export interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

const live = new Set<Testbed>();
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    for (const tb of live) tb.destroySync();
    process.exit(130);
  });
}

export class Testbed {
  readonly run: string;
  readonly hostNs: string;
  readonly wanNs: string;
  readonly dir: string;
  private readonly procs: ChildProcess[] = [];
  /** Instances used in this run (their sandbox namespaces are cleaned by name prefix). */
  readonly instances = new Set<string>();

  private constructor() {
    this.run = `tb${randomBytes(4).toString('hex')}`;
    this.hostNs = `${this.run}-host`;
    this.wanNs = `${this.run}-wan`;
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), `${this.run}-`));
  }

  static async create(o: { hostService?: boolean } = {}): Promise<Testbed> {
    if (process.getuid?.() !== 0) throw new Error('the testbed needs root (network namespaces)');
    const tb = new Testbed();
    live.add(tb);
    try {
      tb.build();
      await tb.startServers(tb.wanNs, [
        `http:${WAN.internet}:80:internet`,
        `http:${WAN.internet2}:80:internet2`,
        `hold:${WAN.internet2}:7000:tick`,
        `http:${WAN.metadata}:80:metadata`,
        `http:${WAN.vpc}:5432:private-db`,
        `http:${WAN.vpc}:80:private-web`,
        `http:${WAN.private10}:80:private10`,
        `http:${WAN.private192}:80:private192`,
        `http:${WAN.cgnat}:80:cgnat`,
        `dns:${WAN.dns}:53`,
        `dns:${WAN.dns2}:53`,
      ]);
      if (o.hostService !== false) await tb.startServers(tb.hostNs, ['http:0.0.0.0:8080:host-service', 'http:any6:8081:host-service6']);
    } catch (err) {
      tb.destroySync();
      throw err;
    }
    return tb;
  }

  private ip(args: string[]): void {
    execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  }

  private build(): void {
    this.ip(['netns', 'add', this.hostNs]);
    this.ip(['netns', 'add', this.wanNs]);
    const up = `${this.run}u`;
    this.ip(['link', 'add', up, 'netns', this.hostNs, 'type', 'veth', 'peer', 'name', 'wan0', 'netns', this.wanNs]);
    this.sh(this.hostNs, ['ip', 'link', 'set', up, 'name', 'up0']);
    this.sh(this.hostNs, ['ip', 'addr', 'add', `${WAN.hostUplink}/24`, 'dev', 'up0']);
    this.sh(this.hostNs, ['ip', 'link', 'set', 'up0', 'up']);
    this.sh(this.hostNs, ['ip', 'link', 'set', 'lo', 'up']);
    this.sh(this.hostNs, ['ip', 'route', 'add', 'default', 'via', WAN.wanUplink]);
    this.sh(this.wanNs, ['ip', 'addr', 'add', `${WAN.wanUplink}/24`, 'dev', 'wan0']);
    this.sh(this.wanNs, ['ip', 'link', 'set', 'wan0', 'up']);
    this.sh(this.wanNs, ['ip', 'link', 'set', 'lo', 'up']);
    for (const a of [WAN.internet, WAN.internet2, WAN.dns, WAN.dns2, WAN.metadata, WAN.vpc, WAN.private10, WAN.private192, WAN.cgnat]) {
      this.sh(this.wanNs, ['ip', 'addr', 'add', `${a}/32`, 'dev', 'lo']);
    }
  }

  private async startServers(ns: string, specs: string[]): Promise<void> {
    const p = spawn('nsenter', [`--net=/run/netns/${ns}`, process.execPath, SERVERS, ...specs], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.procs.push(p);
    await new Promise<void>((resolve, reject) => {
      let err = '';
      p.stderr!.on('data', (d) => (err += d));
      p.stdout!.on('data', (d) => String(d).includes('ready') && resolve());
      p.on('exit', (code, signal) => {
        reject(new Error(`servers in ${ns} exited ${code}: ${err}`));
        // After start-up too: a server that died mid-run says why (a SIGTERM is destroy's).
        if (signal !== 'SIGTERM' && signal !== 'SIGKILL') process.stderr.write(`testbed: servers ${specs.join(' ')} in ${ns} exited ${code ?? signal}: ${err.slice(-2000)}\n`);
      });
    });
  }

  /** Starts a long-running process in a namespace of this testbed; killed on destroy. */
  background(ns: string, cmd: string[]): ChildProcess {
    const p = spawn('nsenter', [`--net=/run/netns/${ns}`, ...cmd], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.procs.push(p);
    return p;
  }

  /** Starts more test servers (see servers.ts) in the wan namespace. */
  async serveWan(specs: string[]): Promise<void> {
    await this.startServers(this.wanNs, specs);
  }

  /** Starts more test servers (see servers.ts) in the host namespace: services sandboxes must not reach. */
  async serveHost(specs: string[]): Promise<void> {
    await this.startServers(this.hostNs, specs);
  }

  /**
   * A CA of this run and a certificate it signed for each name (SAN DNS:name) plus a default
   * one (for ClientHellos without SNI), made with the openssl CLI in a directory of this run's
   * (removed on destroy). The directory is what a `tls:` server (servers.ts) is given.
   */
  async tlsCerts(names: string[]): Promise<{ dir: string; caFile: string }> {
    for (const n of names) if (!/^[a-z0-9-]+(\.[a-z0-9-]+)*$/.test(n)) throw new Error(`tlsCerts: ${JSON.stringify(n)} is not a lowercase DNS name`);
    const dir = fs.mkdtempSync(path.join(this.dir, 'tls-'));
    const at = (f: string): string => path.join(dir, f);
    const openssl = (args: string[]): Promise<unknown> => execFileAsync('openssl', args, { cwd: dir });
    const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
    await openssl(['req', '-x509', ...ec, '-keyout', at('ca.key'), '-out', at('ca.crt'), '-days', '2', '-subj', `/CN=${this.run} test CA`,
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
    const leaf = async (file: string, dnsName: string): Promise<void> => {
      fs.writeFileSync(at(`${file}.ext`), `subjectAltName=DNS:${dnsName}\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n`);
      await openssl(['req', '-new', ...ec, '-keyout', at(`${file}.key`), '-out', at(`${file}.csr`), '-subj', `/CN=${dnsName}`]);
      await openssl(['x509', '-req', '-in', at(`${file}.csr`), '-CA', at('ca.crt'), '-CAkey', at('ca.key'), '-set_serial', `0x${randomBytes(8).toString('hex')}`,
        '-days', '2', '-extfile', at(`${file}.ext`), '-out', at(`${file}.crt`)]);
    };
    // Settled, not all: no openssl is left writing into the directory when this rejects.
    const made = await Promise.allSettled([...names.map((n) => leaf(n, n)), leaf(DEFAULT_CERT, 'default.invalid')]);
    const failed = made.find((m): m is PromiseRejectedResult => m.status === 'rejected');
    if (failed) throw new Error(`tlsCerts: openssl failed: ${(failed.reason as Error).message}`, { cause: failed.reason });
    return { dir, caFile: at('ca.crt') };
  }

  /**
   * HTTPS for `names` on one address (a certificate per name, chosen by SNI; see servers.ts
   * tls), and a plain HTTP virtual-host server on VHOST_PORT of that address. Resolves to the
   * CA file a client verifies them with (curl --cacert).
   */
  async serveTlsNames(names: string[], ip = WAN.internet2, port = 443): Promise<string> {
    const { dir, caFile } = await this.tlsCerts(names);
    await this.serveWan([`tls:${ip}:${port}:${dir}`, `vhost:${ip}:${VHOST_PORT}`]);
    return caFile;
  }

  /** A toastnet command run asynchronously (for load in several sandboxes at once). */
  toastnetAsync(instance: string, args: string[], timeoutMs = 60_000): Promise<Result> {
    return new Promise((resolve) => {
      const p = spawn('nsenter', [`--net=/run/netns/${this.hostNs}`, process.execPath, CLI, ...this.flags(instance), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      p.stdout!.on('data', (d) => (stdout += d));
      p.stderr!.on('data', (d) => (stderr += d));
      const timer = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
      p.on('exit', (code) => {
        clearTimeout(timer);
        resolve({ code: code ?? 128, stdout, stderr });
      });
    });
  }

  /** Runs a command in a namespace of this testbed (sync); throws on non-zero exit. */
  sh(ns: string, cmd: string[]): string {
    return execFileSync('nsenter', [`--net=/run/netns/${ns}`, ...cmd], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  }

  /** Runs a command in a namespace; returns code and output whatever the exit. */
  try(ns: string, cmd: string[], timeoutMs = 20_000): Result {
    const r = spawnSync('nsenter', [`--net=/run/netns/${ns}`, ...cmd], { encoding: 'utf8', timeout: timeoutMs });
    return { code: r.status ?? 128, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
  }

  /** Global flags for an instance of this run, with its own state and run dirs. */
  flags(instance: string, extra: string[] = []): string[] {
    this.instances.add(instance);
    return [
      '--instance', instance,
      '--state-dir', path.join(this.dir, instance, 'state'),
      '--run-dir', path.join(this.dir, instance, 'run'),
      '--dns', `${WAN.dns}`,
      ...extra,
    ];
  }

  /** Runs the toastnet CLI inside the host namespace (nsenter --net only, so /run/netns stays shared). */
  toastnet(instance: string, args: string[], o: { extraFlags?: string[]; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Result {
    const r = spawnSync('nsenter', [`--net=/run/netns/${this.hostNs}`, process.execPath, CLI, ...this.flags(instance, o.extraFlags), ...args], {
      encoding: 'utf8',
      timeout: o.timeoutMs ?? 60_000,
      env: { ...process.env, ...o.env },
    });
    return { code: r.status ?? 128, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
  }

  /**
   * Starts a toastnet daemon in the host namespace as a child of the test; `nodeFlags` go to
   * Node after the daemon's own (a bench's `--cpu-prof`).
   */
  startDaemon(instance: string, extraFlags: string[] = [], nodeFlags: string[] = []): ChildProcess {
    const p = spawn('nsenter', [`--net=/run/netns/${this.hostNs}`, process.execPath, ...DAEMON_NODE_FLAGS, ...nodeFlags, CLI, ...this.flags(instance, extraFlags), 'daemon'], { stdio: ['ignore', 'pipe', 'pipe'] });
    // Always read its log: the daemon writes it synchronously, and a pipe nobody empties
    // (64 KiB) would stop it mid-write once a test has made enough requests.
    p.stdout!.resume();
    p.stderr!.resume();
    this.procs.push(p);
    return p;
  }

  /** Starts test servers (see servers.ts) inside a sandbox; resolves once they listen. */
  async serveInSandbox(instance: string, sandbox: string, specs: string[]): Promise<ChildProcess> {
    const p = spawn('nsenter', [`--net=/run/netns/${this.hostNs}`, process.execPath, CLI, ...this.flags(instance), 'exec', sandbox, '--', process.execPath, SERVERS, ...specs], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.procs.push(p);
    await new Promise<void>((resolve, reject) => {
      let err = '';
      p.stderr!.on('data', (d) => (err += d));
      p.stdout!.on('data', (d) => String(d).includes('ready') && resolve());
      p.on('exit', (code) => reject(new Error(`servers in sandbox ${sandbox} exited ${code}: ${err}`)));
    });
    return p;
  }

  socketPath(instance: string): string {
    return path.join(this.dir, instance, 'run', 'toastnet.sock');
  }

  /** Runs a command inside a sandbox, as toastnet exec does. */
  inSandbox(instance: string, sandbox: string, cmd: string[], timeoutMs = 20_000): Result {
    return this.toastnet(instance, ['exec', sandbox, '--', ...cmd], { timeoutMs });
  }

  /** HTTP GET from a sandbox: the body, or "" when blocked. Fails fast (3 s) on a black hole. */
  curl(instance: string, sandbox: string, url: string): Result {
    return this.inSandbox(instance, sandbox, ['curl', '-sS', '--max-time', '3', url]);
  }

  /** pids of the daemon(s) holding this run's instances. */
  private daemonPids(): number[] {
    const out: number[] = [];
    for (const inst of this.instances) {
      try {
        const pid = Number(fs.readFileSync(path.join(this.dir, inst, 'run', 'lock.pid'), 'utf8'));
        if (pid) out.push(pid);
      } catch {
        // none
      }
    }
    return out;
  }

  async destroy(): Promise<void> {
    this.destroySync();
  }

  /** Removes everything of this run: processes, sandbox namespaces, files, test namespaces. */
  destroySync(): void {
    for (const pid of this.daemonPids()) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
    for (const p of this.procs) p.kill('SIGKILL');
    const prefixes = [...this.instances].map((i) => `${i}-`).concat([`${this.run}-`]);
    for (const ns of fs.existsSync('/run/netns') ? fs.readdirSync('/run/netns') : []) {
      if (!prefixes.some((p) => ns.startsWith(p))) continue;
      // Processes still inside (a sandbox's command, our servers) would keep it alive.
      const ino = fs.statSync(`/run/netns/${ns}`).ino;
      for (const d of fs.readdirSync('/proc')) {
        if (!/^\d+$/.test(d)) continue;
        try {
          if (fs.readlinkSync(`/proc/${d}/ns/net`) === `net:[${ino}]`) process.kill(Number(d), 'SIGKILL');
        } catch {
          // exited
        }
      }
      spawnSync('ip', ['netns', 'del', ns]);
    }
    for (const d of fs.existsSync('/etc/netns') ? fs.readdirSync('/etc/netns') : []) {
      // Sandboxes' entries, and each instance's shared directory they link to.
      const shared = d.startsWith('.toastnet-') && this.instances.has(d.slice('.toastnet-'.length));
      if (shared || prefixes.some((p) => d.startsWith(p))) fs.rmSync(path.join('/etc/netns', d), { recursive: true, force: true });
    }
    fs.rmSync(this.dir, { recursive: true, force: true });
    live.delete(this);
  }
}
