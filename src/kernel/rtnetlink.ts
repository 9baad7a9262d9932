// A synchronous rtnetlink socket. Requests are batched into one send and their acks read
// back, so configuring a sandbox costs one round trip per namespace. A socket stays bound
// to the namespace it was opened in (see netns.createNetns), which is how toastnet
// configures a sandbox from the outside.
import { ToastnetError } from '../errors.js';
import {
  AF_NETLINK, NETLINK_CAP_ACK, NETLINK_EXT_ACK, NETLINK_ROUTE, SOCK_CLOEXEC, SOCK_RAW, SOL_NETLINK,
  SOL_SOCKET, SO_RCVTIMEO, check, errno, lib,
} from './libc.js';
import {
  Message, NLMSG_DONE, NLMSG_ERROR, NLM_F_ACK, NLM_F_DUMP, NLM_F_ECHO, NLM_F_MULTI, Request, frame, parseError, parseMessages,
} from './rtnetlink-codec.js';

const RECV_BUF = 256 * 1024;
const MSG_DONTWAIT = 0x40;
/**
 * One receive buffer for every socket of this thread: receives are synchronous and their
 * messages are copied out, and a 256 KiB zeroed buffer per socket (one per sandbox create)
 * cost ~0.5 ms of allocation and GC each time.
 */
let sharedRecvBuf: Buffer | undefined;
const ERRNO_NAMES: Record<number, string> = { 1: 'EPERM', 2: 'ENOENT', 17: 'EEXIST', 19: 'ENODEV', 22: 'EINVAL', 95: 'EOPNOTSUPP' };

export class NetlinkError extends ToastnetError {
  constructor(readonly errno: number, what: string, text?: string) {
    super('kernel', `${what}: ${text ?? lib().strerror(errno)} (${ERRNO_NAMES[errno] ?? `errno ${errno}`})`, { errno });
  }
}

/** The kernel has no such link (ENODEV): CNI's ErrLinkNotFound. */
export function isNoSuchLink(err: unknown): boolean {
  return err instanceof NetlinkError && err.errno === 19;
}

/** A synchronous netlink socket of any netlink family (rtnetlink, ctnetlink, ...). */
export class NetlinkSocket {
  private fd: number;
  private seq = Math.floor(Math.random() * 0x7fffffff);
  private get buf(): Buffer {
    return (sharedRecvBuf ??= Buffer.allocUnsafe(RECV_BUF));
  }

  constructor(protocol: number, recvTimeoutSeconds = 5) {
    const l = lib();
    this.fd = check(l.socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, protocol), 'socket(AF_NETLINK)');
    // Errors say what was wrong (extended acks) and do not echo the whole request back.
    // Best effort, as before: kernels before 4.12 have neither, and work without.
    for (const flag of [NETLINK_EXT_ACK, NETLINK_CAP_ACK]) {
      try {
        this.setFlag(flag);
      } catch {
        // plain errors then
      }
    }
    // Never hang the daemon on a kernel that does not answer: 5 s receive timeout.
    const tv = Buffer.alloc(16);
    tv.writeBigInt64LE(BigInt(recvTimeoutSeconds), 0);
    l.setsockopt(this.fd, SOL_SOCKET, SO_RCVTIMEO, tv, 16);
  }

  close(): void {
    if (this.fd >= 0) lib().close(this.fd);
    this.fd = -1;
  }

  private send(buf: Buffer): void {
    const n = lib().send(this.fd, buf, buf.length, 0);
    if (n < 0) check(-1, 'netlink send');
  }

  private recv(): Message[] {
    let n = lib().recv(this.fd, this.buf, this.buf.length, 0);
    // A signal (a profiler's SIGPROF, say) interrupts a receive with a timeout even under
    // SA_RESTART. The request was sent already; only the reading is retried.
    while (n < 0 && errno() === 4 /* EINTR */) n = lib().recv(this.fd, this.buf, this.buf.length, 0);
    if (n < 0) {
      const e = errno();
      throw new ToastnetError('kernel', `netlink recv: ${lib().strerror(e)} (errno ${e})`);
    }
    // Copy: messages outlive this buffer, which the next recv overwrites.
    return parseMessages(Buffer.from(this.buf.subarray(0, Number(n))));
  }

  /**
   * Sends all requests in one write and waits for every ack. Throws the first failure,
   * named by `what[i]`; the kernel processes the batch in order and stops at nothing, so
   * callers order requests such that a failure leaves only things the undo path removes.
   */
  exec(reqs: Request[], what: string[] = []): void {
    if (reqs.length === 0) return;
    this.sendAndAwaitAcks(undefined, reqs, undefined, what);
  }

  /**
   * One request with NLM_F_ECHO: the kernel sends the requester the message it multicasts
   * about what it made (built once for both), before the ack. Returns those messages: []
   * from a kernel that does not echo this kind of request.
   */
  execEcho(req: Request, what: string): Message[] {
    const seq = ++this.seq;
    this.send(frame({ ...req, flags: req.flags | NLM_F_ACK | NLM_F_ECHO }, seq));
    const out: Message[] = [];
    for (;;) {
      for (const m of this.recv()) {
        if (m.seq !== seq) continue;
        if (m.type !== NLMSG_ERROR) {
          out.push(m);
          continue;
        }
        const { errno: e, text } = parseError(m);
        if (e !== 0) throw new NetlinkError(e, what, text);
        return out;
      }
    }
  }

  /**
   * An nfnetlink transaction: `begin`, the requests, `end` in one write; the kernel applies
   * all requests or none. Waits for every request's ack (the markers get none) and throws
   * the first failure.
   */
  execBatch(begin: Request, reqs: Request[], end: Request, what: string): void {
    if (reqs.length === 0) return;
    this.sendAndAwaitAcks(begin, reqs, end, reqs.map(() => what));
  }

  private sendAndAwaitAcks(begin: Request | undefined, reqs: Request[], end: Request | undefined, what: string[]): void {
    const frames: Buffer[] = [];
    const beginSeq = begin ? ++this.seq : -1;
    if (begin) frames.push(frame(begin, beginSeq));
    const first = this.seq + 1;
    for (const r of reqs) frames.push(frame({ ...r, flags: r.flags | NLM_F_ACK }, ++this.seq));
    const last = this.seq;
    if (end) frames.push(frame(end, ++this.seq));
    this.send(frames.length === 1 ? frames[0] : Buffer.concat(frames));
    let pending = reqs.length;
    let failure: NetlinkError | undefined;
    while (pending > 0) {
      for (const m of this.recv()) {
        if (m.type !== NLMSG_ERROR) continue;
        const { errno: e, ackedSeq, text } = parseError(m);
        // An error on the batch header: the kernel refused the whole batch, no acks follow.
        if (ackedSeq === beginSeq && e !== 0) throw new NetlinkError(e, what[0] ?? 'netlink batch', text);
        if (ackedSeq < first || ackedSeq > last) continue;
        pending--;
        if (e !== 0 && !failure) failure = new NetlinkError(e, what[ackedSeq - first] ?? 'netlink request', text);
      }
    }
    if (failure) throw failure;
  }

  /** Sends requests in one write without asking for acks (a failure still comes back, to receive()). */
  post(reqs: Request[]): void {
    if (reqs.length === 0) return;
    const frames = reqs.map((r) => frame(r, ++this.seq));
    this.send(frames.length === 1 ? frames[0] : Buffer.concat(frames));
  }

  /**
   * Waits (up to the receive timeout) for messages the kernel sends on its own, such as
   * logged packets; [] on timeout.
   */
  receive(): Message[] {
    const n = lib().recv(this.fd, this.buf, this.buf.length, 0);
    if (n < 0) {
      const e = errno();
      if (e === 11 /* EAGAIN: timeout */ || e === 4 /* EINTR */) return [];
      throw new ToastnetError('kernel', `netlink recv: ${lib().strerror(e)} (errno ${e})`);
    }
    return parseMessages(Buffer.from(this.buf.subarray(0, Number(n))));
  }

  /**
   * receive(), then whatever more is waiting already, without waiting for it (up to `max`
   * datagrams in all): one syscall's worth of work per message is then paid per batch by the
   * caller (a verdict write, a reply), when messages come faster than they are handled.
   */
  receiveBatch(max: number): Message[] {
    const out = this.receive();
    if (out.length === 0) return out;
    const l = lib();
    for (let i = 1; i < max; i++) {
      const n = l.recv(this.fd, this.buf, this.buf.length, MSG_DONTWAIT);
      // Nothing more waiting (EAGAIN), or an error (ENOBUFS: the socket overflowed): what
      // was read is returned either way, since its messages await an answer (a queued
      // packet waits for its verdict for ever). The next receive meets the error, if any.
      if (n < 0) break;
      for (const m of parseMessages(Buffer.from(this.buf.subarray(0, Number(n))))) out.push(m);
    }
    return out;
  }

  /** Sets a netlink socket option (SOL_NETLINK) to 1. */
  setFlag(option: number): void {
    const one = Buffer.alloc(4);
    one.writeInt32LE(1);
    check(lib().setsockopt(this.fd, SOL_NETLINK, option, one, 4), `setsockopt(SOL_NETLINK, ${option})`);
  }

  /** Runs one dump request and returns every message of the answer. */
  dump(req: Request): Message[] {
    const seq = ++this.seq;
    this.send(frame({ ...req, flags: req.flags | NLM_F_DUMP }, seq));
    const out: Message[] = [];
    for (;;) {
      for (const m of this.recv()) {
        if (m.seq !== seq) continue;
        if (m.type === NLMSG_DONE) return out;
        if (m.type === NLMSG_ERROR) {
          const { errno: e, text } = parseError(m);
          if (e !== 0) throw new NetlinkError(e, 'netlink dump', text);
          return out;
        }
        out.push(m);
        if (!(m.flags & NLM_F_MULTI)) return out;
      }
    }
  }

  /** A single non-dump GET (e.g. one link by name); returns the answer message. */
  get(req: Request, what: string): Message {
    const seq = ++this.seq;
    this.send(frame(req, seq));
    for (;;) {
      for (const m of this.recv()) {
        if (m.seq !== seq) continue;
        if (m.type === NLMSG_ERROR) {
          const { errno: e, text } = parseError(m);
          throw new NetlinkError(e || 22, what, text);
        }
        return m;
      }
    }
  }
}

/** rtnetlink: links, addresses, routes. */
export class RtnetlinkSocket extends NetlinkSocket {
  constructor() {
    super(NETLINK_ROUTE);
  }
}
