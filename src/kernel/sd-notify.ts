// systemd's readiness protocol (sd_notify): one datagram "READY=1" to the AF_UNIX socket
// named by NOTIFY_SOCKET, so a Type=notify unit counts as started only once the daemon
// serves, and units ordered after it start then. Node has no AF_UNIX datagram sockets, so
// libc's, through koffi; a few lines rather than a native dependency.
import { SOCK_CLOEXEC, check, lib } from './libc.js';

const AF_UNIX = 1;
const SOCK_DGRAM = 2;
const SUN_PATH_MAX = 108;

/** sockaddr_un for a path; "@name" is an abstract socket (a leading NUL, length exact). */
export function sockaddrUn(path: string): { addr: Buffer; len: number } {
  const name = Buffer.from(path.startsWith('@') ? `\0${path.slice(1)}` : path);
  if (name.length >= SUN_PATH_MAX) throw new Error(`NOTIFY_SOCKET path too long: ${path}`);
  const addr = Buffer.alloc(2 + SUN_PATH_MAX);
  addr.writeUInt16LE(AF_UNIX, 0);
  name.copy(addr, 2);
  // A filesystem path is NUL-terminated (counted); an abstract name is exactly its bytes.
  return { addr, len: 2 + name.length + (path.startsWith('@') ? 0 : 1) };
}

/** Sends `state` (e.g. "READY=1") to the service manager; false when not run by one. */
export function sdNotify(state: string, env: NodeJS.ProcessEnv = process.env): boolean {
  const target = env.NOTIFY_SOCKET;
  if (!target) return false;
  const l = lib();
  const fd = check(l.socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0), 'socket(AF_UNIX)');
  try {
    const { addr, len } = sockaddrUn(target);
    check(l.connect(fd, addr, len), `connect ${target}`);
    const msg = Buffer.from(state);
    check(l.send(fd, msg, msg.length, 0), `send to ${target}`);
    return true;
  } finally {
    l.close(fd);
  }
}
