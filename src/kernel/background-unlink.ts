// Deleting a link off the caller's time. Deleting a veth costs 25-35 ms (RCU grace periods
// under RTNL, kernel-facts.md), all of it inside the sendmsg of the request: on the
// daemon's one thread it would be the whole of a CNI DEL, and stall every other caller.
// toastnet's own sandboxes avoid it by dropping the namespace (the kernel reaps the link);
// an attached namespace is the runtime's, so its link is deleted explicitly, here: the
// request is sent on a libuv thread (koffi's async call) on a socket of its own, one at a
// time, and the ack read back on this thread. The link's routes go with it.
import { NETLINK_CAP_ACK, NETLINK_EXT_ACK, NETLINK_ROUTE, AF_NETLINK, SOCK_CLOEXEC, SOCK_RAW, SOL_NETLINK, check, lib } from './libc.js';
import { NLMSG_ERROR, NLM_F_ACK, frame, parseError, parseMessages } from './rtnetlink-codec.js';
import { RtnetlinkSocket, isNoSuchLink } from './rtnetlink.js';
import * as rq from './rtnl-requests.js';

const MSG_DONTWAIT = 0x40;

interface Pending {
  name: string;
  /** Runs once the link is gone (or the kernel refused: gc takes what is left). */
  done: () => void;
}

export class BackgroundUnlinker {
  private fd = -1;
  private seq = 1;
  private readonly queue: Pending[] = [];
  private inFlight: Pending | undefined;
  private idle: (() => void)[] = [];
  private readonly ackBuf = Buffer.alloc(8192);
  /** The last refusal other than "no such link", for diagnosis. */
  lastError: string | undefined;

  /** Queues the deletion of host link `name`; `done` runs on this thread once it is over. */
  remove(name: string, done: () => void = () => {}): void {
    this.queue.push({ name, done });
    this.pump();
  }

  /** Whether any deletion is queued or running. */
  get busy(): boolean {
    return this.inFlight !== undefined || this.queue.length > 0;
  }

  /**
   * Finishes every queued deletion now, on `sock` (synchronously), and waits through RTNL for
   * the one in flight: a caller about to reuse what they hold (an interface name in the
   * same namespace) needs them gone first.
   */
  settleSync(sock: RtnetlinkSocket): void {
    const all = [...(this.inFlight ? [this.inFlight] : []), ...this.queue.splice(0)];
    for (const p of all) {
      try {
        sock.exec([rq.delLink(p.name)], [`delete ${p.name}`]);
      } catch (err) {
        if (!isNoSuchLink(err)) this.lastError = (err as Error).message;
      }
      if (p !== this.inFlight) p.done();
    }
  }

  /** Resolves once nothing is queued or running. */
  settled(): Promise<void> {
    if (!this.inFlight && this.queue.length === 0) return Promise.resolve();
    return new Promise((r) => this.idle.push(r));
  }

  close(): void {
    if (this.fd >= 0 && !this.inFlight) {
      lib().close(this.fd);
      this.fd = -1;
    }
  }

  private socket(): number {
    if (this.fd < 0) {
      const l = lib();
      this.fd = check(l.socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE), 'socket(AF_NETLINK)');
      const one = Buffer.alloc(4);
      one.writeInt32LE(1);
      l.setsockopt(this.fd, SOL_NETLINK, NETLINK_EXT_ACK, one, 4);
      l.setsockopt(this.fd, SOL_NETLINK, NETLINK_CAP_ACK, one, 4);
    }
    return this.fd;
  }

  private pump(): void {
    if (this.inFlight) return;
    const next = this.queue.shift();
    if (!next) {
      for (const r of this.idle.splice(0)) r();
      return;
    }
    this.inFlight = next;
    const req = rq.delLink(next.name);
    const msg = frame({ ...req, flags: req.flags | NLM_F_ACK }, ++this.seq);
    let fd: number;
    try {
      fd = this.socket();
      lib().send.async(fd, msg, msg.length, 0, (err: unknown) => {
        if (!err) this.readAck();
        this.finish(next);
      });
    } catch (err) {
      this.lastError = (err as Error).message;
      this.finish(next);
    }
  }

  /** The ack is queued by the time send returns: the kernel handled the request inside it. */
  private readAck(): void {
    const n = lib().recv(this.fd, this.ackBuf, this.ackBuf.length, MSG_DONTWAIT);
    if (n <= 0) return;
    for (const m of parseMessages(Buffer.from(this.ackBuf.subarray(0, Number(n))))) {
      if (m.type !== NLMSG_ERROR) continue;
      const { errno, text } = parseError(m);
      if (errno !== 0 && errno !== 19 /* ENODEV: gone already */) this.lastError = text ?? `errno ${errno}`;
    }
  }

  private finish(p: Pending): void {
    if (this.inFlight === p) this.inFlight = undefined;
    try {
      p.done();
    } finally {
      this.pump();
    }
  }
}
