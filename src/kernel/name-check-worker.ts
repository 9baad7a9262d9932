// The name gate's reader: a worker thread bound to the instance's NFQUEUE queue, judging the
// first flight of each pending connection (core/name-check.ts) and giving every queued
// packet its verdict. recv() blocks, so it runs off the main thread; and it judges here,
// without a round trip to the main thread, so a connection waits only for this loop.
//
// A judgement goes on the packet and on the connection (its conntrack mark, through
// ctnetlink): allowed, the packet is accepted at once and the mark written after the
// batch's verdicts, so the connection's later packets skip the gate; denied, the mark
// first, then the packet goes through the gate again (NF_REPEAT) and meets its reset.
// The main thread posts each checked sandbox's policy (by address) before the sandbox can
// send anything, and what its DNS answered before the answer leaves (so a connection that
// follows an answer finds it here); it reads back what was judged (events, counts).
import { parentPort, receiveMessageOnPort, workerData } from 'node:worker_threads';
import { NetlinkSocket } from './rtnetlink.js';
import { NETLINK_NETFILTER, NETLINK_NO_ENOBUFS, lib } from './libc.js';
import { NF_ACCEPT, NF_DROP, NF_REPEAT, parseQueued, queueBindRequests, verdictRequest } from './nfqueue-codec.js';
import { ctMarkRequest } from './conntrack.js';
import {
  CT_MARK_NAME_DENIED, CT_MARK_NAME_PENDING, CheckedSandboxes, answerClockMs, FirstFlightStream, GateUpdate, Judgement, SKB_MARK_NAME_DENIED, SKB_MARK_NAME_QUEUED, judge, startsFirstFlight, takeTurns,
} from '../core/name-check.js';

const { queue } = workerData as { queue: number };

/** Posted back: one judged connection. */
export interface NameJudgement {
  time: number;
  src: string;
  dst: string;
  /** The source port: with the addresses and dport, which connection (the flow log pairs it with conntrack's record). */
  sport: number;
  dport: number;
  verdict: 'allow' | 'deny';
  /** Judged against but let through (report mode). */
  reported: boolean;
  kind: string;
  name?: string;
  why?: string;
}

const checked = new CheckedSandboxes();
/** Packets given a verdict and time spent (receipt excluded), since the last post. */
let work = { packets: 0, busyMs: 0 };
/** Connections being judged, by tuple; bounded (a sandbox opening many and never sending is its own loss). */
const streams = new Map<string, { stream: FirstFlightStream; at: number; reported?: boolean }>();
const MAX_STREAMS = 65536;
/** Most queued packets read together (taken in turns by sandbox). */
const BATCH_MAX = 256;
/**
 * Verdicts written together: fewer writes under load, while a packet's verdict waits for
 * at most this many judgements (a write reinjects its packets, which are forwarded then).
 */
const VERDICTS_PER_WRITE = 8;
const STREAM_TTL_MS = 30_000;

// Ahead of what sandboxes run: a name-checked connection waits for this thread, and a
// sandbox that floods the machine with processes must not starve the gate everybody's
// connections pass (nice -10 for this thread alone; Linux nice values are per thread).
const GATE_NICE = -10;
/** Whether the thread runs at GATE_NICE (said in `ready`: the daemon logs it when not). */
const raised = lib().setpriority(0 /* PRIO_PROCESS: a thread id here */, lib().gettid(), GATE_NICE) === 0;

const sock = new NetlinkSocket(NETLINK_NETFILTER, 1);
// No ENOBUFS when the socket overflows: the queue is fail-open, so what does not fit goes on
// to be counted as unjudged; an error would only interrupt reading.
sock.setFlag(NETLINK_NO_ENOBUFS);
const ct = new NetlinkSocket(NETLINK_NETFILTER, 5);
try {
  sock.exec(queueBindRequests(queue), ['bind the name queue', 'configure the name queue']);
  parentPort!.postMessage({ ready: { raised } });
} catch (err) {
  parentPort!.postMessage({ error: (err as Error).message });
  process.exit(1);
}

const ipOf = (b: Buffer, off: number) => `${b[off]}.${b[off + 1]}.${b[off + 2]}.${b[off + 3]}`;

function drainUpdates(): void {
  for (let m = receiveMessageOnPort(parentPort as never); m; m = receiveMessageOnPort(parentPort as never)) {
    for (const u of m.message as GateUpdate[]) checked.apply(u, answerClockMs());
  }
}

function sweep(now: number): void {
  if (streams.size < MAX_STREAMS) return;
  for (const [k, v] of streams) if (now - v.at > STREAM_TTL_MS) streams.delete(k);
  // Still full: the oldest go (Map keeps insertion order).
  for (const k of streams.keys()) {
    if (streams.size < MAX_STREAMS * 0.9) break;
    streams.delete(k);
  }
}

/**
 * Connections allowed whose mark may not be written yet (it is written after the verdict,
 * see below), by the read of the queue that allowed them: a packet of theirs queued
 * meanwhile comes in one of the next reads and is accepted, never read as a new first
 * flight. Kept for ALLOWED_READS reads only: the key is the addresses and ports, which a
 * new connection can take again at once (the first reset, the next opened), and that one
 * must be judged. To be let through on the first's verdict, its data would have to be
 * queued within those reads, a handshake with the server after the first's reset.
 */
const allowed = new Map<string, number>();
const ALLOWED_READS = 2;
/** Reads of the queue so far. */
let reads = 0;
/** Marks to write after this batch's verdicts: the allowed connections'. */
let marksAfter: ReturnType<typeof ctMarkRequest>[] = [];

/** Verdict for one queued packet, and the judgement to report if the connection was decided. */
function handle(p: Buffer): { verdict: number; judged?: NameJudgement; denied?: boolean } {
  if (p.length < 20 || p[0] >> 4 !== 4 || p[9] !== 6) return { verdict: NF_ACCEPT }; // only TCP is ever pending
  const ihl = (p[0] & 0x0f) * 4;
  if (p.length < ihl + 20) return { verdict: NF_DROP };
  const doff = (p[ihl + 12] >> 4) * 4;
  const total = Math.min(p.readUInt16BE(2) || p.length, p.length); // 0 in a GSO packet's header: its length is the buffer's
  const data = p.subarray(ihl + doff, total);
  const src = ipOf(p, 12);
  const dst = ipOf(p, 16);
  const sport = p.readUInt16BE(ihl);
  const dport = p.readUInt16BE(ihl + 2);
  const flags = p[ihl + 13];
  const key = `${src}:${sport}>${dst}:${dport}`;
  if (data.length === 0) {
    if (flags & 0x05) streams.delete(key); // FIN or RST: the connection ends unjudged
    return { verdict: NF_ACCEPT }; // the handshake's last ACK, a bare ACK
  }
  const at = allowed.get(key);
  if (at !== undefined) {
    if (reads - at <= ALLOWED_READS && !startsFirstFlight(data)) return { verdict: NF_ACCEPT };
    allowed.delete(key);
  }
  const sandbox = checked.get(src);
  // No policy for a pending connection: the daemon starting, or the sandbox gone. Dropped;
  // the client's retransmission meets the policy once it is known.
  if (!sandbox) return { verdict: NF_DROP };
  const { policy, answers } = sandbox;
  const now = Date.now();
  let s = streams.get(key);
  if (!s) {
    sweep(now);
    streams.set(key, (s = { stream: new FirstFlightStream(), at: now }));
  }
  // A SYN's own sequence number comes before its data (TCP Fast Open: data in the SYN).
  const seq = (p.readUInt32BE(ihl + 4) + (flags & 0x02 ? 1 : 0)) >>> 0;
  const j: Judgement = judge(policy, dport, s.stream.add(seq, data), (name) => answers?.answered(name, dst, answerClockMs()) ?? false);
  if (j.verdict === 'more') return { verdict: NF_ACCEPT };
  const pass = j.verdict === 'allow' || policy.report;
  if (pass && flags & 0x02) {
    // Data in a SYN, allowed. The server may not take it (no Fast Open, or no cookie) and
    // acknowledge the SYN alone; the client then sends its first flight again, and a client
    // of its own making could send other bytes. So the connection stays pending and its
    // stream is kept: what comes next must repeat these bytes (FirstFlightStream) and is
    // judged again. Reported once, here.
    const first = !s.reported;
    s.reported = true;
    return { verdict: NF_ACCEPT, ...(first ? { judged: judgement(now, src, dst, sport, dport, j, policy.report) } : {}) };
  }
  const reported = s.reported === true && j.verdict === 'allow';
  streams.delete(key);
  const tuple = { src: Buffer.from(p.subarray(12, 16)), dst: Buffer.from(p.subarray(16, 20)), sport, dport, proto: 6 };
  if (pass) {
    // The verdict first, the mark after the batch's verdicts: the first flight does not wait
    // for a conntrack round trip (what came queued meanwhile is accepted by `allowed`).
    allowed.delete(key); // re-inserted: the Map's order is the order of reads
    allowed.set(key, reads);
    marksAfter.push(ctMarkRequest(tuple, 0, CT_MARK_NAME_PENDING | CT_MARK_NAME_DENIED));
  } else {
    // Denied: this packet goes through the gate again with a mark of its own and meets its
    // reset; the connection's mark (written first) resets what else of it comes. That write
    // fails for a connection conntrack has not confirmed yet (its first packet still here:
    // data in a SYN, or a connection picked up mid-stream): the packet's mark does it all then.
    try {
      ct.exec([ctMarkRequest(tuple, CT_MARK_NAME_DENIED, CT_MARK_NAME_PENDING | CT_MARK_NAME_DENIED)], ['judge the connection']);
    } catch {
      // not confirmed, or gone
    }
  }
  return { verdict: pass ? NF_ACCEPT : NF_REPEAT, ...(reported ? {} : { judged: judgement(now, src, dst, sport, dport, j, policy.report) }), denied: !pass };
}

function judgement(time: number, src: string, dst: string, sport: number, dport: number, j: Exclude<Judgement, { verdict: 'more' }>, report: boolean): NameJudgement {
  return {
    time, src, dst, sport, dport, verdict: j.verdict, reported: j.verdict === 'deny' && report, kind: j.kind,
    ...(j.name !== undefined ? { name: j.name } : {}), ...(j.verdict === 'deny' ? { why: j.why } : {}),
  };
}

/** Sends the verdicts given so far, then the marks of the connections they allowed. */
function flush(verdicts: ReturnType<typeof verdictRequest>[]): void {
  sock.post(verdicts);
  verdicts.length = 0;
  if (marksAfter.length > 0) {
    try {
      ct.exec(marksAfter, marksAfter.map(() => 'allow the connection'));
    } catch {
      // a connection gone meanwhile: nothing to mark
    }
    marksAfter = [];
  }
}

for (;;) {
  let msgs;
  try {
    // What is already waiting is read at once: so that it can be taken in turns by sandbox
    // (below), and its verdicts and marks written a few at a time.
    msgs = sock.receiveBatch(BATCH_MAX);
  } catch {
    // A receive error (with NETLINK_NO_ENOBUFS set, not an overflow: what did not fit was
    // counted as unjudged by the chain after the gate). Reading goes on.
    continue;
  }
  if (msgs.length === 0) {
    // An idle queue (the receive times out every second) still takes what was posted: the
    // answers posted for sandboxes that send nothing would otherwise pile up.
    drainUpdates();
    continue;
  }
  const t0 = performance.now();
  reads++;
  // Allowed connections past their reads go (oldest first: the Map is in the order of reads).
  for (const [k, at] of allowed) {
    if (reads - at <= ALLOWED_READS) break;
    allowed.delete(k);
  }
  drainUpdates();
  const queued = [];
  for (const m of msgs) {
    const q = parseQueued(m);
    if (q) queued.push(q);
  }
  // In turns by sandbox (its source address), each sandbox's packets in their order: a
  // sandbox flooding the queue delays a neighbour's first flight by one packet a turn, not by
  // everything it queued before it.
  const inTurns = takeTurns(queued, (q) => (q.payload.length >= 20 ? q.payload.readUInt32BE(12) : 0));
  const verdicts: ReturnType<typeof verdictRequest>[] = [];
  const judged: NameJudgement[] = [];
  for (const q of inTurns) {
    let v: { verdict: number; judged?: NameJudgement; denied?: boolean };
    try {
      v = handle(q.payload);
    } catch {
      v = { verdict: NF_DROP };
    }
    // A verdict clears the queued bit, or the chain after the gate would count the packet as
    // unjudged and drop it (core/name-check.ts SKB_MARK_NAME_QUEUED).
    // A denial's packet goes round again marked to meet its reset.
    const mark = ((q.mark & ~SKB_MARK_NAME_QUEUED) | (v.denied ? SKB_MARK_NAME_DENIED : 0)) >>> 0;
    verdicts.push(verdictRequest(queue, q.id, v.verdict, v.verdict === NF_DROP ? undefined : mark));
    if (v.judged) judged.push(v.judged);
    if (verdicts.length >= VERDICTS_PER_WRITE) flush(verdicts);
  }
  flush(verdicts);
  work.packets += queued.length;
  work.busyMs += performance.now() - t0;
  if (judged.length > 0 || work.packets >= 1000) {
    // What was judged, and the work done: batched with judgements, so a quiet gate posts nothing.
    parentPort!.postMessage({ judged, work });
    work = { packets: 0, busyMs: 0 };
  }
}
