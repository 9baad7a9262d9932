// A worker thread that reads conntrack events (ctnetlink multicast: new and destroyed
// flows) and posts the sandboxes' ones to the main thread in batches. recv() blocks, so it
// runs off the main thread, like nflog-worker.ts; started outside any namespace switch, it
// reads the daemon's (the host's) namespace, where sandbox traffic is forwarded and tracked.
//
// Nothing is lost silently. Two places can lose events, and each is counted:
// - the kernel, when this socket's receive buffer is full: recv() then fails once with
//   ENOBUFS (NETLINK_NO_ENOBUFS is deliberately not set), and goes on dropping while the
//   buffer stays full. ENOBUFS says that, not how many: the count comes from the socket's
//   own drop counter (sk_drops, one per message netlink could not queue, read with
//   SO_MEMINFO), so it is exact. (On a kernel without SO_MEMINFO: ENOBUFS errors, each one
//   event or more.)
// - not here: when the main thread (the database writer) falls more than `maxBacklog`
//   events behind, this worker stops reading until it catches up, so the queue between the
//   threads stays bounded and the kernel's buffer takes the rest of a burst; what does not
//   fit there is dropped by the kernel, and counted as above. (Shedding here instead lost
//   events at 10,000 flows a second while the kernel's buffer was still nearly empty: the
//   destroy events come in bursts, as conntrack's garbage collector reaps expired flows.)
//
// Events are posted in batches of up to 2,048, or what came within 20 ms of a batch's
// first event: the main thread writes a batch in one transaction, and at 20,000 events a
// second batches of a few events each (what a drain of the socket gives) cost it more in
// per-transaction overhead than in rows.
//
// ctnetlink has no in-kernel filter for its multicast events (CTA_FILTER applies to
// dumps); a classic BPF socket filter could do it (libnetfilter_conntrack's nfct_filter),
// but the subnet test here costs ~1 µs per event, so every event is read and the host's own
// flows are dropped by address in this thread.
import { parentPort, workerData } from 'node:worker_threads';
import {
  AF_NETLINK, ENOBUFS, MSG_DONTWAIT, NETLINK_NETFILTER, SOCK_CLOEXEC, SOCK_RAW, SOL_SOCKET,
  SO_RCVBUF, SO_RCVBUFFORCE, SO_RCVTIMEO, check, errno, lib,
} from './libc.js';
import { CtEvent, NFNLGRP_CONNTRACK_DESTROY, NFNLGRP_CONNTRACK_NEW, parseCtDatagram } from './conntrack-events.js';

const BATCH = 2048;
const BATCH_MS = 20;
const napCell = new Int32Array(new SharedArrayBuffer(4));
/** Blocks this thread for `ms` (Atomics.wait on a cell nobody wakes). */
const nap = (ms: number) => Atomics.wait(napCell, 0, 0, ms);

export interface FlowWorkerData {
  /** The instance's subnet (network and mask as unsigned 32-bit numbers): flows whose original source is in it are kept. */
  network: number;
  mask: number;
  /** The gateway: sandboxes' DNS to it is the resolver's business (its query log), not a flow record. */
  gateway: string;
  /** Receive buffer in bytes (SO_RCVBUFFORCE). */
  receiveBuffer: number;
  /** Events the main thread may have unread before this worker drops (and counts) new ones. */
  maxBacklog: number;
  /** Int32Array over it: [0] events the main thread has taken (wrapping at 2^32, compared as a difference). */
  progress: SharedArrayBuffer;
}

/** Posted to the main thread. Counts are totals since the worker started. */
export interface FlowWorkerMessage {
  ready?: { receiveBuffer: number };
  error?: string;
  events?: CtEvent[];
  /** Events the kernel dropped for want of room in this socket's buffer (exact; see above). */
  kernelDrops?: number;
}

const d = workerData as FlowWorkerData;
const l = lib();
const progress = new Int32Array(d.progress);
const u32 = (v: number) => {
  const b = Buffer.alloc(4);
  b.writeInt32LE(v | 0);
  return b;
};

let fd = -1;
try {
  fd = check(l.socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER), 'socket(NETLINK_NETFILTER)');
  check(l.setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, u32(d.receiveBuffer), 4), 'SO_RCVBUFFORCE');
  // Bound with the groups in nl_groups (struct sockaddr_nl: family, pad, portid 0 = let the
  // kernel pick, groups). Joining by NETLINK_ADD_MEMBERSHIP alone leaves an unbound socket
  // with port id 0, the kernel's own, and broadcasts skip it: nothing arrives.
  const addr = Buffer.alloc(12);
  addr.writeUInt16LE(AF_NETLINK, 0);
  addr.writeUInt32LE((1 << (NFNLGRP_CONNTRACK_NEW - 1)) | (1 << (NFNLGRP_CONNTRACK_DESTROY - 1)), 8);
  check(l.bind(fd, addr, addr.length), 'bind to the conntrack new and destroy groups');
  const tv = Buffer.alloc(16);
  tv.writeBigInt64LE(1n, 0); // 1 s: terminate() takes effect between receives
  l.setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, tv, 16);
  const got = Buffer.alloc(4);
  const len = Buffer.alloc(4);
  len.writeUInt32LE(4);
  l.getsockopt(fd, SOL_SOCKET, SO_RCVBUF, got, len);
  parentPort!.postMessage({ ready: { receiveBuffer: got.readInt32LE(0) } } satisfies FlowWorkerMessage);
} catch (err) {
  parentPort!.postMessage({ error: (err as Error).message } satisfies FlowWorkerMessage);
  process.exit(1);
}

const SO_MEMINFO = 55;
const SK_MEMINFO_DROPS = 8;
const meminfo = Buffer.alloc(4 * 16);
const meminfoLen = Buffer.alloc(4);
/** The socket's drop count (sk_drops), or -1 where the kernel does not tell it. */
function socketDrops(): number {
  meminfoLen.writeUInt32LE(meminfo.length);
  if (l.getsockopt(fd, SOL_SOCKET, SO_MEMINFO, meminfo, meminfoLen) < 0 || meminfoLen.readUInt32LE(0) < 4 * (SK_MEMINFO_DROPS + 1)) return -1;
  return meminfo.readUInt32LE(4 * SK_MEMINFO_DROPS);
}
const kernelDrops = () => {
  const n = socketDrops();
  return n >= 0 ? n : overflows;
};

const { network, mask } = d;
const inSubnet = (src: number) => ((src & mask) >>> 0) === network;
const gateway = d.gateway;
const buf = Buffer.allocUnsafe(256 * 1024);
let overflows = 0;
let posted = 0;
for (;;) {
  const batch: CtEvent[] = [];
  const before = overflows;
  let flags = 0; // the first receive waits (up to the timeout), the rest take what is queued
  let first = 0;
  while (batch.length < BATCH) {
    const n = Number(l.recv(fd, buf, buf.length, flags));
    flags = MSG_DONTWAIT;
    if (n < 0) {
      const e = errno();
      if (e === ENOBUFS) {
        overflows++;
        continue;
      }
      if (e === 11 /* EAGAIN: nothing (more) queued */ || e === 4 /* EINTR */) {
        // Nothing queued now: post what there is once the batch is BATCH_MS old.
        const age = first ? performance.now() - first : BATCH_MS;
        if (age >= BATCH_MS) break;
        nap(Math.min(2, BATCH_MS - age));
        continue;
      }
      parentPort!.postMessage({ error: `conntrack events: recv: ${l.strerror(e)} (errno ${e})` } satisfies FlowWorkerMessage);
      process.exit(1);
    }
    const had = batch.length;
    parseCtDatagram(buf.subarray(0, n), inSubnet, batch);
    // Sandboxes' DNS to the gateway is the resolver's (its query log), not a flow record.
    for (let i = batch.length - 1; i >= had; i--) if (batch[i].dport === 53 && batch[i].dst === gateway) batch.splice(i, 1);
    if (had === 0 && batch.length > 0) first = performance.now();
  }
  if (batch.length === 0 && overflows === before) continue;
  // Backpressure: wait (the main thread notifies as it takes batches) while it is behind.
  for (let taken = Atomics.load(progress, 0); ((posted - taken) | 0) + batch.length > d.maxBacklog; taken = Atomics.load(progress, 0)) {
    Atomics.wait(progress, 0, taken, 100);
  }
  posted = (posted + batch.length) | 0;
  parentPort!.postMessage({ ...(batch.length ? { events: batch } : {}), kernelDrops: kernelDrops() } satisfies FlowWorkerMessage);
}
