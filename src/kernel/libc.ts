// The few libc calls toastnet needs that Node does not expose: namespaces (unshare/setns),
// bind mounts, raw netlink sockets and flock. Loaded lazily so that pure modules and
// unit tests never touch FFI.
import koffi from 'koffi';
import { ToastnetError } from '../errors.js';

export const CLONE_NEWNET = 0x40000000;
export const MS_BIND = 4096;
export const MS_REC = 16384;
export const MS_SHARED = 1 << 20;
export const MNT_DETACH = 2;
export const AF_NETLINK = 16;
export const SOCK_RAW = 3;
export const SOCK_CLOEXEC = 0o2000000;
export const NETLINK_ROUTE = 0;
export const NETLINK_NETFILTER = 12;
export const SOL_SOCKET = 1;
export const SO_RCVTIMEO = 20;
/** Receive buffer beyond net.core.rmem_max (CAP_NET_ADMIN): a burst of kernel events waits here. */
export const SO_RCVBUFFORCE = 33;
export const SO_RCVBUF = 8;
export const SOL_NETLINK = 270;
export const NETLINK_EXT_ACK = 11;
/** No ENOBUFS error when the socket overflows (what did not fit is lost without a word). */
export const NETLINK_NO_ENOBUFS = 5;
export const NETLINK_CAP_ACK = 10;
export const NETLINK_ADD_MEMBERSHIP = 1;
export const MSG_DONTWAIT = 0x40;
/** A netlink receive: the socket's buffer overflowed and the kernel dropped messages. */
export const ENOBUFS = 105;
export const LOCK_EX = 2;
export const LOCK_NB = 4;
export const EINTR = 4;
export const EAGAIN = 11;
export const EWOULDBLOCK = 11;

interface Libc {
  unshare(flags: number): number;
  setns(fd: number, nstype: number): number;
  mount(src: string | null, target: string, fstype: string | null, flags: number, data: null): number;
  umount2: ((target: string, flags: number) => number) & {
    /** The same call on a libuv thread; `done` runs on this thread after. */
    async(target: string, flags: number, done: (err: unknown, ret: number) => void): void;
  };
  socket(domain: number, type: number, protocol: number): number;
  connect(fd: number, addr: Buffer, len: number): number;
  bind(fd: number, addr: Buffer, len: number): number;
  setsockopt(fd: number, level: number, name: number, val: Buffer, len: number): number;
  getsockopt(fd: number, level: number, name: number, val: Buffer, len: Buffer): number;
  send: ((fd: number, buf: Buffer, len: number, flags: number) => number) & {
    /** The same call on a libuv thread (background-unlink.ts); `done` runs on this thread after. */
    async(fd: number, buf: Buffer, len: number, flags: number, done: (err: unknown, ret: number) => void): void;
  };
  recv(fd: number, buf: Buffer, len: number, flags: number): number;
  close(fd: number): number;
  flock(fd: number, op: number): number;
  strerror(errnum: number): string;
  mallocTrim(pad: number): number;
  /** ioctl with a pointer argument (struct ifreq). */
  ioctlPtr(fd: number, req: number, arg: Buffer): number;
  /** ioctl with an integer argument (TUNSETPERSIST, TUNSETOWNER...). */
  ioctlInt(fd: number, req: number, arg: number): number;
  /** The calling thread's id (a thread's own nice value is set by it). */
  gettid(): number;
  setpriority(which: number, who: number, prio: number): number;
}

let libc: Libc | undefined;

export function lib(): Libc {
  if (libc) return libc;
  const l = koffi.load('libc.so.6');
  libc = {
    unshare: l.func('int unshare(int flags)'),
    setns: l.func('int setns(int fd, int nstype)'),
    mount: l.func('int mount(const char *src, const char *target, const char *fstype, unsigned long flags, const void *data)'),
    umount2: l.func('int umount2(const char *target, int flags)'),
    socket: l.func('int socket(int domain, int type, int protocol)'),
    connect: l.func('int connect(int fd, const void *addr, uint32_t len)'),
    bind: l.func('int bind(int fd, const void *addr, uint32_t len)'),
    setsockopt: l.func('int setsockopt(int fd, int level, int name, const void *val, uint32_t len)'),
    getsockopt: l.func('int getsockopt(int fd, int level, int name, _Out_ void *val, _Inout_ void *len)'),
    send: l.func('intptr_t send(int fd, const void *buf, size_t len, int flags)'),
    recv: l.func('intptr_t recv(int fd, _Out_ void *buf, size_t len, int flags)'),
    close: l.func('int close(int fd)'),
    flock: l.func('int flock(int fd, int op)'),
    strerror: l.func('const char *strerror(int errnum)'),
    mallocTrim: l.func('int malloc_trim(size_t pad)'),
    // ioctl is variadic; on x86-64 and arm64 a fixed third argument is passed the same way.
    ioctlPtr: l.func('ioctl', 'int', ['int', 'unsigned long', '_Inout_ void *']),
    ioctlInt: l.func('ioctl', 'int', ['int', 'unsigned long', 'unsigned long']),
    gettid: l.func('int gettid()'),
    setpriority: l.func('int setpriority(int which, uint32_t who, int prio)'),
  } as Libc;
  return libc;
}

export function errno(): number {
  return koffi.errno();
}

/** Throws a kernel error naming the call when a libc call returned -1. */
export function check(ret: number, what: string): number {
  if (ret < 0) {
    const e = errno();
    throw new ToastnetError('kernel', `${what}: ${lib().strerror(e)} (errno ${e})`, { errno: e });
  }
  return ret;
}
