// The per-namespace files `ip netns exec` bind-mounts over /etc: /etc/netns/<name>/. Every
// sandbox of an instance has the same resolv.conf (the gateway's resolver), so each
// sandbox's entry is a symlink to one directory of the instance, /etc/netns/.toastnet-<instance>
// (world-readable, as /etc is: runtimes that are not root bind-mount the file too): one
// syscall to make or remove (a directory and a file cost three or four). No namespace is
// named like that directory, so `ip netns` never uses it.
import fs from 'node:fs';
import path from 'node:path';

export const NETNS_ETC_DIR = '/etc/netns';

export class NetnsEtc {
  /** The instance's directory every entry links to. */
  private readonly shared: string;

  /** `resolvConf`: the content of the instance's resolv.conf. */
  constructor(instance: string, private readonly resolvConf: string) {
    this.shared = path.join(NETNS_ETC_DIR, `.toastnet-${instance}`);
  }

  /** The resolv.conf path a sandbox's processes see (for runtimes that bind-mount it themselves). */
  static resolvConfOf(netns: string): string {
    return path.join(NETNS_ETC_DIR, netns, 'resolv.conf');
  }

  /** The instance's resolv.conf (what every sandbox's entry links to). */
  get sharedResolvConf(): string {
    return path.join(this.shared, 'resolv.conf');
  }

  /** Writes the shared directory's resolv.conf when it is missing or different (atomic replace). */
  writeShared(): void {
    const file = path.join(this.shared, 'resolv.conf');
    try {
      if (fs.readFileSync(file, 'utf8') === this.resolvConf) return;
    } catch {
      // not there yet
    }
    fs.mkdirSync(this.shared, { recursive: true, mode: 0o755 });
    fs.writeFileSync(`${file}.tmp`, this.resolvConf, { mode: 0o644 });
    fs.renameSync(`${file}.tmp`, file);
  }

  removeShared(): void {
    fs.rmSync(this.shared, { recursive: true, force: true });
  }

  /** Makes the namespace's entry (replacing a leftover of a crash). */
  link(netns: string): void {
    const entry = path.join(NETNS_ETC_DIR, netns);
    try {
      fs.symlinkSync(this.shared, entry);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') fs.mkdirSync(NETNS_ETC_DIR, { recursive: true }); // no /etc/netns yet
      else if (code === 'EEXIST') this.unlink(netns);
      else throw err;
      fs.symlinkSync(this.shared, entry);
    }
  }

  /** Removes the namespace's entry, if any. */
  unlink(netns: string): void {
    const entry = path.join(NETNS_ETC_DIR, netns);
    try {
      fs.unlinkSync(entry);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      // A directory (an earlier toastnet's, or made by hand): remove it whole.
      if (code === 'EISDIR' || code === 'EPERM') fs.rmSync(entry, { recursive: true, force: true });
      else if (code !== 'ENOENT') throw err;
    }
  }

  rename(from: string, to: string): void {
    fs.renameSync(path.join(NETNS_ETC_DIR, from), path.join(NETNS_ETC_DIR, to));
  }

  /** Names of all entries under /etc/netns (any owner). */
  static list(): string[] {
    try {
      return fs.readdirSync(NETNS_ETC_DIR);
    } catch {
      return []; // no /etc/netns
    }
  }
}
