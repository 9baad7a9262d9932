// Network namespaces, and the one audited door into them.
//
// setns() moves only the calling thread. On Node's main thread, an `await` while switched
// would let unrelated callbacks (timers, sockets, the DNS forwarder) run inside a sandbox's
// namespace, so every switch here is synchronous: enter, run a synchronous function,
// restore in `finally`, verify. Nothing else in toastnet calls setns/unshare.
import fs from 'node:fs';
import { CLONE_NEWNET, MNT_DETACH, MS_BIND, MS_REC, MS_SHARED, check, errno, lib } from './libc.js';
import { ToastnetError } from '../errors.js';
import { withUndo } from '../undo.js';

export const NETNS_RUN_DIR = '/run/netns';
const SELF_NS = '/proc/thread-self/ns/net';

let homeFd: number | undefined;
let homeIno: number | undefined;
let runDirReady = false;

/** The namespace this process works in (captured once, on first use, outside any switch). */
function home(): { fd: number; ino: number } {
  if (homeFd === undefined) {
    homeFd = fs.openSync(SELF_NS, 'r');
    homeIno = fs.fstatSync(homeFd).ino;
  }
  return { fd: homeFd, ino: homeIno! };
}

function restoreHome(): void {
  const h = home();
  check(lib().setns(h.fd, CLONE_NEWNET), 'setns(home)');
  if (fs.statSync(SELF_NS).ino !== h.ino) {
    // Continuing here would run the daemon inside a sandbox: stop instead.
    process.stderr.write('toastnet: fatal: could not return to the home network namespace\n');
    process.exit(70);
  }
}

function assertSync(result: unknown): void {
  if (result && typeof (result as { then?: unknown }).then === 'function') {
    throw new ToastnetError('internal', 'withNetns callback must be synchronous');
  }
}

/** Runs `fn` synchronously inside the namespace at `path` (a /run/netns file). */
export function withNetns<T>(path: string, fn: () => T): T {
  home();
  const fd = fs.openSync(path, 'r');
  try {
    check(lib().setns(fd, CLONE_NEWNET), `setns(${path})`);
    try {
      const r = fn();
      assertSync(r);
      return r;
    } finally {
      restoreHome();
    }
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * /run/netns must be a shared mount point, as iproute2 makes it, so that namespace bind
 * mounts propagate to processes in other mount namespaces (ip netns exec, systemd units).
 */
function ensureRunDir(): void {
  if (runDirReady) return;
  fs.mkdirSync(NETNS_RUN_DIR, { recursive: true, mode: 0o755 });
  const l = lib();
  if (l.mount('', NETNS_RUN_DIR, 'none', MS_SHARED | MS_REC, null) !== 0) {
    if (errno() !== 22 /* EINVAL: not a mount point yet */) check(-1, `make-shared ${NETNS_RUN_DIR}`);
    check(l.mount(NETNS_RUN_DIR, NETNS_RUN_DIR, 'none', MS_BIND | MS_REC, null), `bind ${NETNS_RUN_DIR}`);
    check(l.mount('', NETNS_RUN_DIR, 'none', MS_SHARED | MS_REC, null), `make-shared ${NETNS_RUN_DIR}`);
  }
  runDirReady = true;
}

/**
 * Creates the mount point of a new name; a name already there is a one-line conflict. A
 * name still being released (releaseNetns) is released here first: it is free to reuse.
 */
function openNew(path: string): number {
  finishRelease(path.slice(NETNS_RUN_DIR.length + 1));
  try {
    return fs.openSync(path, fs.constants.O_RDONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o444);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    throw new ToastnetError('conflict', `${path} already exists without a sandbox of that name (left by a crash? \`toastnet gc\` removes it)`);
  }
}

export function netnsPath(name: string): string {
  return `${NETNS_RUN_DIR}/${name}`;
}

/**
 * Creates a new named network namespace without spawning `ip`: unshare on this thread,
 * bind-mount the new namespace onto /run/netns/NAME, run `inside` while still in it (to
 * open sockets that stay bound to it), then switch back.
 */
export function createNetns<T>(name: string, inside: () => T): T {
  home();
  ensureRunDir();
  const path = netnsPath(name);
  return withUndo((undo) => {
    fs.closeSync(openNew(path));
    undo.push('remove the mount point', () => fs.rmSync(path, { force: true }));
    check(lib().unshare(CLONE_NEWNET), 'unshare(CLONE_NEWNET)');
    try {
      check(lib().mount(SELF_NS, path, 'none', MS_BIND, null), `bind-mount ${path}`);
      undo.push('unmount the namespace', () => lib().umount2(path, MNT_DETACH));
      const r = inside();
      assertSync(r);
      return r;
    } finally {
      // Back home whatever happened: the undos and the caller run there.
      restoreHome();
    }
  });
}

/** Unmounts and removes a named namespace; the kernel frees it (and reaps its links) once no process holds it. Idempotent. */
export function deleteNetns(name: string): void {
  finishRelease(name);
  const path = netnsPath(name);
  if (!fs.existsSync(path)) return;
  lib().umount2(path, MNT_DETACH); // EINVAL when already unmounted: fine, we remove the file next
  unlinkName(path);
}

interface Release {
  /**
   * The mount's own fd, once its unmount runs on a libuv thread: the unmount goes through
   * it, never the name, and that thread's callback closes it.
   */
  fd?: number;
  /** Runs once the name is gone. */
  gone: () => void;
  done: Promise<void>;
  resolve: () => void;
}

/**
 * Unmounts running on libuv threads at most: koffi throws past its own limit of
 * asynchronous calls, which a burst of removals reaches. The rest wait in `queued`.
 */
const MAX_UNMOUNTS_IN_FLIGHT = 16;
let unmountsInFlight = 0;

/** Names being given up by releaseNetns, in this thread (started or queued). */
const releasing = new Map<string, Release>();
const queued: { name: string; release: Release }[] = [];
/** A start of the queue is set for the next turn of the event loop (releaseNetns). */
let startScheduled = false;

/**
 * Gives up a namespace's name like deleteNetns, but unmounts on a libuv thread: an unmount
 * waits for an RCU grace period (0.2-0.5 ms here), which would otherwise stall the daemon's
 * main thread on every delete. The name counts as free at once: creating it again (or
 * deleteNetns) finishes the release synchronously first. The unmount goes through an fd of
 * this mount, so it cannot reach a namespace mounted under the same name later. `gone` runs
 * once the name is really gone (until then `ip netns exec` can still enter it).
 */
export function releaseNetns(name: string, gone: () => void = () => {}): void {
  finishRelease(name);
  // A name that is not there settles when its turn comes (its open finds nothing).
  let resolve = (): void => {};
  const done = new Promise<void>((r) => (resolve = r));
  const release: Release = { gone, done, resolve };
  releasing.set(name, release);
  queued.push({ name, release });
  // Even handing an unmount to a libuv thread (an open, a queued call, waking an idle
  // thread: 0.07 ms, more after idle) waits for the next turn of the event loop, after the
  // caller (an API request) has its answer. The name counts as released already.
  if (!startScheduled) {
    startScheduled = true;
    setImmediate(() => {
      startScheduled = false;
      startQueued();
    });
  }
}


function startQueued(): void {
  while (unmountsInFlight < MAX_UNMOUNTS_IN_FLIGHT && queued.length > 0) {
    const { name, release } = queued.shift()!;
    // Finished meanwhile (its name wanted again, or gc)? Nothing to start. Otherwise the name
    // is still the old mount's: making it again goes through finishRelease.
    if (releasing.get(name) !== release) continue;
    let fd: number;
    try {
      fd = fs.openSync(netnsPath(name), 'r');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') settle(name, release); // gone by other means
      else finishRelease(name); // no fd to spare (EMFILE): by name, here
      continue;
    }
    try {
      lib().umount2.async(`/proc/self/fd/${fd}`, MNT_DETACH, () => {
        unmountsInFlight--;
        try {
          if (releasing.get(name) === release) settle(name, release);
        } finally {
          fs.closeSync(fd);
          release.resolve();
          startQueued();
        }
      });
    } catch {
      fs.closeSync(fd); // koffi refused the call: unmount here instead
      finishRelease(name);
      continue;
    }
    release.fd = fd;
    unmountsInFlight++;
  }
}

/** The unmount is over (or was never needed): the name goes; a failed unmount leaves it for gc (EBUSY). */
function settle(name: string, r: Release): void {
  releasing.delete(name);
  try {
    unlinkName(netnsPath(name));
  } catch {
    // still mounted: gc removes it
  }
  r.gone();
  if (r.fd === undefined) r.resolve(); // otherwise the libuv thread's callback does
}

/**
 * Finishes a pending release of `name` on this thread: through its fd when its unmount runs
 * on a libuv thread (EINVAL when that thread did it first), by name while it is still
 * queued (the name is still the old mount's).
 */
function finishRelease(name: string): void {
  const r = releasing.get(name);
  if (!r) return;
  lib().umount2(r.fd === undefined ? netnsPath(name) : `/proc/self/fd/${r.fd}`, MNT_DETACH);
  settle(name, r);
}

/** Finishes every pending release now, before /run/netns is read (gc). */
export function finishReleases(): void {
  for (const name of [...releasing.keys()]) finishRelease(name);
}

/** Resolves once the releases started so far are over. */
export async function releasesSettled(): Promise<void> {
  await Promise.all([...releasing.values()].map((r) => r.done));
}

function unlinkName(path: string): void {
  try {
    fs.unlinkSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}

/**
 * Gives a named namespace a second name: a bind mount cannot be renamed (nor moved under
 * the shared /run/netns), so renaming is this, then releasing the old name. Either name
 * enters the same namespace meanwhile.
 */
export function aliasNetns(from: string, to: string): void {
  const src = netnsPath(from);
  const dst = netnsPath(to);
  fs.closeSync(openNew(dst));
  try {
    check(lib().mount(src, dst, 'none', MS_BIND, null), `bind-mount ${dst}`);
  } catch (err) {
    fs.rmSync(dst, { force: true });
    throw err;
  }
}

/** Names under /run/netns (any owner). */
export function listNetns(): string[] {
  try {
    return fs.readdirSync(NETNS_RUN_DIR);
  } catch {
    return [];
  }
}

/**
 * An fd holding the named namespace (undefined if there is none). While it is open the
 * namespace lives on, so its inode (fstat) cannot go to a namespace made later.
 */
export function openNetns(name: string): number | undefined {
  try {
    return fs.openSync(netnsPath(name), 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err; // EMFILE, say: not "no namespace", or its processes would go unchecked
  }
}

/** Inode identifying a namespace: what /proc/PID/ns/net of a process inside it links to. */
export function netnsInode(name: string): number | undefined {
  try {
    return fs.statSync(netnsPath(name)).ino;
  } catch {
    return undefined;
  }
}
