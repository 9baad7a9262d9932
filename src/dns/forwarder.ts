// The sandboxes' DNS server: listens on the gateway address (UDP and TCP 53) and forwards
// each query to the configured upstreams, trying the next one when one times out or
// fails, and passing the upstream's answer back unchanged but for the message ID.
// Queries are parsed with dns-packet (malformed ones are dropped); only sandbox addresses
// are answered, so the forwarder is never an open resolver. What goes upstream is a query
// rebuilt from the sandbox's (upstream-query.ts), under the forwarder's own message ID.
import dgram from 'node:dgram';
import dns from 'node:dns';
import net from 'node:net';
import { randomBytes } from 'node:crypto';
import dnsPacket from 'dns-packet';
import { Cidr, cidrContains, parseIPv4 } from '../core/ipv4.js';
import type { DnsGate, GateSandbox } from './gate.js';
import { DnsCache, cacheKey, sameQuestion } from './cache.js';
import { forceReceiveBuffer, markSocket } from '../kernel/socket-options.js';
import { MAX_DNS_QUERY_BYTES } from '../core/resolver-contract.js';
import { countsFit, upstreamQuery } from './upstream-query.js';
import { QueryOutcome, QueryOutcomeCounts, noQueryOutcomes } from './query-outcomes.js';

export interface Upstream {
  host: string;
  port: number;
}

export interface ForwarderOptions {
  listenHost: string;
  listenPort?: number;
  upstreams: Upstream[];
  timeoutMs: number;
  /** Only clients in this prefix get answers. */
  clients: Cidr;
  /** Per-sandbox policy (limits, domain allow-list, rebinding); none = plain forwarding. */
  gate?: DnsGate;
  /** SO_MARK for the listening sockets: how the filter knows sandbox DNS reaches this resolver. */
  socketMark?: number;
  /** Receive buffer of the UDP socket, forced past rmem_max (needs CAP_NET_ADMIN); default: the system's. */
  receiveBufferBytes?: number;
  /** Answers shared across sandboxes (UDP); the gate still judges every answer served. */
  cache?: DnsCache;
  log?: (msg: string) => void;
}

export interface ForwarderStats {
  /** Every message received, counted once by what became of it (query-outcomes.ts); those still upstream are not counted yet. */
  outcomes: QueryOutcomeCounts;
  /** Upstream attempts given up on (no answer in time, a failed TCP exchange): a query may have several, or none. */
  upstreamTimeouts: number;
}

/** Where an answer came from, as far as the sending path is concerned. */
type AnswerOutcome = Exclude<QueryOutcome, 'dropped'>;

interface Pending {
  clientId: number;
  reply: (msg: Buffer | undefined, outcome: 'answered' | 'servfail') => void;
  query: Buffer;
  attempt: number;
  /** performance.now() after which the upstream is given up on. */
  deadline: number;
  upstream: Upstream;
}

/** Largest query taken, over UDP or TCP: a stub's query is a few hundred bytes, more is data. */
const MAX_QUERY = MAX_DNS_QUERY_BYTES;
const UPSTREAM_SOCKETS = 8;
/** TCP connections one client may hold open at once (a stub uses one, briefly); more are closed unread. */
const MAX_TCP_PER_CLIENT = 8;
/** Queries of one TCP connection awaiting answers at once (RFC 7766 pipelining); more wait unread. */
const MAX_TCP_PIPELINE = 16;
const RCODE_SERVFAIL = 2;

/**
 * The UDP sockets' address lookup. Every address the resolver sends to is an IPv4 literal (a
 * client's source, a configured upstream): taken as it is, at once, where dns.lookup would
 * check it and answer on the next tick, a closure and a tick for every datagram sent.
 * Anything else goes to dns.lookup as before.
 */
function literalLookup(address: string, options: dns.LookupOneOptions, callback: (err: NodeJS.ErrnoException | null, address: string, family: number) => void): void {
  if (net.isIPv4(address)) callback(null, address, 4);
  else dns.lookup(address, options, callback);
}

/** A datagram waiting for the end of the event loop's turn (DnsForwarder.sendLater). */
interface Outgoing {
  sock: dgram.Socket;
  msg: Buffer;
  port: number;
  address: string;
}

/** What to do with a query: forward `query` (the rebuilt one; for `sandbox`, with a gate), or answer `reply` (or nothing). */
type Decision = { forward: true; sandbox?: GateSandbox; query: Buffer } | { forward: false; reply?: Buffer };

/** An error answer to `query` (same ID and question) with `rcode`. */
export function errorAnswer(query: Buffer, rcode: number): Buffer | undefined {
  try {
    const q = dnsPacket.decode(query);
    return dnsPacket.encode({
      id: q.id,
      type: 'response',
      flags: (q.flags ?? 0) & dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE | rcode,
      questions: q.questions,
    });
  } catch {
    return undefined;
  }
}

/** A SERVFAIL answer to `query`, for when every upstream failed. */
export const servfail = (query: Buffer): Buffer | undefined => errorAnswer(query, RCODE_SERVFAIL);

/**
 * Whether `answer` may be the answer to `query` sent upstream: the same question (a
 * spoofer who guessed port and ID still has to match it), or an error without a question
 * section, as some servers send them (it carries nothing to admit).
 */
function answersQuery(query: Buffer, answer: Buffer): boolean {
  if (answer.length < 12) return false;
  const bareError = answer.readUInt16BE(4) === 0 && answer.readUInt16BE(6) === 0 && (answer[3] & 0x0f) !== 0;
  return bareError || sameQuestion(query, answer);
}

/** Whether `buf` is a well-formed query (QR=0, one question or more). */
export function isQuery(buf: Buffer): boolean {
  if (!countsFit(buf)) return false;
  try {
    const p = dnsPacket.decode(buf);
    return p.type === 'query' && (p.questions?.length ?? 0) > 0;
  } catch {
    return false;
  }
}

export class DnsForwarder {
  readonly stats: ForwarderStats = { outcomes: noQueryOutcomes(), upstreamTimeouts: 0 };
  private udp?: dgram.Socket;
  private tcp?: net.Server;
  /**
   * Upstream queries leave from several sockets on random ports, one picked at random per
   * query: a spoofed answer must guess the port as well as the 16-bit ID, and an answer
   * that got in would be shared through the cache.
   */
  private upstreamSocks: dgram.Socket[] = [];
  /** By socket index * 65536 + message ID. */
  private readonly pending = new Map<number, Pending>();
  private readonly tcpConns = new Set<net.Socket>();
  /** Open TCP connections per client address (MAX_TCP_PER_CLIENT). */
  private readonly tcpByClient = new Map<string, number>();
  /** One periodic sweep for timed-out upstream queries, instead of a timer per query. */
  private sweeper?: NodeJS.Timeout;
  /** Random bytes for socket picks and message IDs, drawn from a CSPRNG in bulk (crypto per query is slow). */
  private idPool = Buffer.alloc(0);
  private idPos = 0;
  /** Datagrams to send once this turn of the event loop has read what it reads (sendLater). */
  private outbox: Outgoing[] = [];
  private stopped = false;

  constructor(private readonly o: ForwarderOptions) {}

  get cacheEntries(): number {
    return this.o.cache?.size ?? 0;
  }

  private allowed(address: string): boolean {
    try {
      return cidrContains(this.o.clients, parseIPv4(address));
    } catch {
      return false;
    }
  }

  async start(): Promise<void> {
    const port = this.o.listenPort ?? 53;
    for (let i = 0; i < UPSTREAM_SOCKETS; i++) {
      const sock = dgram.createSocket({ type: 'udp4', lookup: literalLookup });
      sock.on('message', (msg, rinfo) => this.onUpstreamAnswer(i, msg, rinfo));
      sock.on('error', (err) => this.o.log?.(`dns upstream socket: ${err.message}`));
      await new Promise<void>((res) => sock.bind(0, res));
      this.upstreamSocks.push(sock);
    }
    this.sweeper = setInterval(() => this.sweep(), Math.min(50, this.o.timeoutMs / 2));
    this.sweeper.unref();

    this.udp = dgram.createSocket({ type: 'udp4', reuseAddr: true, lookup: literalLookup });
    this.udp.on('message', (msg, rinfo) => this.onUdpQuery(msg, rinfo));
    this.udp.on('error', (err) => this.o.log?.(`dns udp: ${err.message}`));
    await new Promise<void>((res, rej) => {
      this.udp!.once('error', rej);
      this.udp!.bind(port, this.o.listenHost, () => {
        this.udp!.off('error', rej);
        res();
      });
    });

    this.tcp = net.createServer((c) => this.onTcpConnection(c));
    await new Promise<void>((res, rej) => {
      this.tcp!.once('error', rej);
      this.tcp!.listen(port, this.o.listenHost, () => {
        this.tcp!.off('error', rej);
        res();
      });
    });
    if (this.o.socketMark !== undefined) for (const s of [this.udp, this.tcp]) markSocket(s, this.o.socketMark);
    if (this.o.receiveBufferBytes !== undefined) forceReceiveBuffer(this.udp, this.o.receiveBufferBytes);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.outbox = [];
    if (this.sweeper) clearInterval(this.sweeper);
    this.pending.clear();
    for (const c of this.tcpConns) c.destroy();
    this.udp?.close();
    for (const sock of this.upstreamSocks) sock.close();
    this.upstreamSocks = [];
    await new Promise<void>((res) => (this.tcp ? this.tcp.close(() => res()) : res()));
  }

  /** The gate's decision on a query; without a gate, the rebuilt query (or the refusal of one that cannot be rebuilt). */
  private decide(client: string, query: Buffer): Decision {
    if (this.o.gate) return this.o.gate.onQuery(client, query);
    const u = upstreamQuery(query);
    return 'rcode' in u ? { forward: false, reply: errorAnswer(query, u.rcode) } : { forward: true, query: u.wire };
  }

  /** What to send for an answer to `d`: as the gate judges it for the sandbox now (undefined: nothing). */
  private judged(d: { sandbox?: GateSandbox }, answer: Buffer | undefined, cached?: { packet: dnsPacket.Packet; age: number }): Buffer | undefined {
    if (!answer) return undefined;
    return d.sandbox && this.o.gate ? this.o.gate.onAnswer(d.sandbox, answer, undefined, cached) : answer;
  }

  /** Counts a query once, by what became of it: `outcome` when there is an answer to send, else dropped. */
  private settle(answer: Buffer | undefined, outcome: AnswerOutcome): answer is Buffer {
    this.stats.outcomes[answer ? outcome : 'dropped']++;
    return answer !== undefined;
  }

  private onUdpQuery(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    // With a gate, it parses (and validates) the query itself: parse once.
    if (!this.allowed(rinfo.address) || msg.length > MAX_QUERY || (!this.o.gate && !isQuery(msg))) {
      this.stats.outcomes.dropped++;
      return;
    }
    const send = (answer: Buffer | undefined, outcome: AnswerOutcome) => {
      if (this.settle(answer, outcome)) this.sendLater(this.udp!, answer, rinfo.port, rinfo.address);
    };
    const d = this.decide(rinfo.address, msg);
    if (!d.forward) {
      send(d.reply, 'refused');
      return;
    }
    // The gate has judged the query for this sandbox; only then may a shared answer serve it.
    // Keyed by the rebuilt query: what was asked upstream is what the answer answers.
    const cache = this.o.cache;
    const key = cache ? cacheKey(d.query) : undefined;
    if (key !== undefined) {
      const hit = cache!.get(key, d.query, performance.now());
      let packet: dnsPacket.Packet | undefined;
      try {
        packet = hit && d.sandbox ? hit.packet() : undefined;
      } catch {
        cache!.delete(key); // stored but not decodable: ask upstream instead
      }
      if (hit && (packet || !d.sandbox)) {
        send(this.judged(d, hit.wire, packet && { packet, age: hit.age }), 'cached');
        return;
      }
    }
    this.forwardUdp(d.query, (answer, outcome) => {
      if (key !== undefined && answer) cache!.put(key, answer, performance.now());
      send(this.judged(d, answer), outcome);
    });
  }

  /** 24 random bits. */
  private random24(): number {
    if (this.idPos + 3 > this.idPool.length) {
      this.idPool = randomBytes(8190);
      this.idPos = 0;
    }
    const r = this.idPool.readUIntBE(this.idPos, 3);
    this.idPos += 3;
    return r;
  }

  /** Picks a random socket and a free random message ID on it, as one pending key. */
  private freeKey(): number {
    for (;;) {
      const r = this.random24();
      const key = ((r >>> 16) % UPSTREAM_SOCKETS) * 65536 + (r & 0xffff);
      if (!this.pending.has(key)) return key;
    }
  }

  /** Asks the upstreams in turn; `reply` gets the answer, or SERVFAIL once every one failed (undefined if even that cannot be made). */
  private forwardUdp(query: Buffer, reply: Pending['reply'], attempt = 0, clientId = query.readUInt16BE(0)): void {
    if (attempt >= this.o.upstreams.length) {
      reply(servfail(query), 'servfail');
      return;
    }
    const upstream = this.o.upstreams[attempt];
    const key = this.freeKey();
    const out = Buffer.from(query);
    out.writeUInt16BE(key & 0xffff, 0);
    this.pending.set(key, { clientId, reply, query, attempt, deadline: performance.now() + this.o.timeoutMs, upstream });
    this.sendLater(this.upstreamSocks[Math.floor(key / 65536)], out, upstream.port, upstream.host);
  }

  /**
   * Sends `msg` at the end of this turn of the event loop, with the others queued in it,
   * back to back. The loop reads the datagrams waiting on a socket one after another; a send
   * between two reads (measured: ~30 us each on these VMs) mostly goes to a client asleep
   * in its receive and pays for waking it. Sent together, the answers find the client
   * awake after the first: 20-30 % more queries a second through a trivial Node server
   * under dnsperf. The delay is the rest of the turn: microseconds.
   */
  private sendLater(sock: dgram.Socket, msg: Buffer, port: number, address: string): void {
    if (this.outbox.length === 0) setImmediate(this.flushOutbox);
    this.outbox.push({ sock, msg, port, address });
  }

  private readonly flushOutbox = (): void => {
    const batch = this.outbox;
    this.outbox = [];
    if (this.stopped) return;
    for (const o of batch) o.sock.send(o.msg, o.port, o.address);
  };

  /** Gives up on upstreams past their deadline and tries the next one. */
  private sweep(): void {
    const now = performance.now();
    for (const [id, p] of this.pending) {
      if (p.deadline > now) continue;
      this.pending.delete(id);
      this.stats.upstreamTimeouts++;
      const orig = Buffer.from(p.query);
      orig.writeUInt16BE(p.clientId, 0);
      this.forwardUdp(orig, p.reply, p.attempt + 1, p.clientId);
    }
  }

  private onUpstreamAnswer(sock: number, msg: Buffer, rinfo: dgram.RemoteInfo): void {
    if (msg.length < 12) return;
    const key = sock * 65536 + msg.readUInt16BE(0);
    const p = this.pending.get(key);
    // Only the upstream we asked may answer (a spoofed answer from elsewhere is ignored),
    // and only to the question asked: anything else is dropped and the real answer still awaited.
    if (!p || p.upstream.host !== rinfo.address || p.upstream.port !== rinfo.port || !answersQuery(p.query, msg)) return;
    this.pending.delete(key);
    const rcode = msg.length >= 4 ? msg[3] & 0x0f : 0;
    if ((rcode === 2 /* SERVFAIL */ || rcode === 5 /* REFUSED */) && p.attempt + 1 < this.o.upstreams.length) {
      // An upstream that cannot answer is a failed upstream: try the next one (the last one's answer passes through).
      const orig = Buffer.from(p.query);
      orig.writeUInt16BE(p.clientId, 0);
      this.forwardUdp(orig, p.reply, p.attempt + 1, p.clientId);
      return;
    }
    msg.writeUInt16BE(p.clientId, 0);
    p.reply(msg, 'answered');
  }

  private onTcpConnection(c: net.Socket): void {
    const client = c.remoteAddress?.replace(/^::ffff:/, '') ?? '';
    const open = this.tcpByClient.get(client) ?? 0;
    if (!this.allowed(client) || open >= MAX_TCP_PER_CLIENT) {
      // Its messages are never read: the connection counts as one query dropped.
      this.stats.outcomes.dropped++;
      c.destroy();
      return;
    }
    this.tcpByClient.set(client, open + 1);
    this.tcpConns.add(c);
    c.setTimeout(10_000, () => c.destroy());
    c.on('close', () => {
      this.tcpConns.delete(c);
      const n = (this.tcpByClient.get(client) ?? 1) - 1;
      if (n > 0) this.tcpByClient.set(client, n);
      else this.tcpByClient.delete(client);
    });
    c.on('error', () => c.destroy());
    let buf = Buffer.alloc(0);
    let inFlight = 0;
    // Frames are taken while fewer than MAX_TCP_PIPELINE of the connection's queries await
    // their answers; then reading pauses until answers go out. One segment can carry a
    // thousand queries: taken at once, they would hold the event loop from every other sandbox.
    const take = () => {
      while (buf.length >= 2 && inFlight < MAX_TCP_PIPELINE) {
        const len = buf.readUInt16BE(0);
        if (len > MAX_QUERY) {
          // Not read, not forwarded: over TCP a query may be 64 KiB of anything.
          this.stats.outcomes.dropped++;
          c.destroy();
          return;
        }
        if (buf.length < 2 + len) break;
        const query = buf.subarray(2, 2 + len);
        buf = buf.subarray(2 + len);
        if (!isQuery(query)) {
          this.stats.outcomes.dropped++;
          c.destroy();
          return;
        }
        inFlight++;
        // A client gone before its answer was sent got none: dropped.
        const send = (answer: Buffer | undefined, outcome: AnswerOutcome) => {
          inFlight--;
          if (this.settle(c.destroyed ? undefined : answer, outcome)) {
            const hdr = Buffer.alloc(2);
            hdr.writeUInt16BE(answer!.length);
            c.write(Buffer.concat([hdr, answer!]));
          }
          if (c.isPaused() && inFlight < MAX_TCP_PIPELINE && !c.destroyed) {
            // Go on with what is buffered on a later turn of the loop, then read again.
            setImmediate(() => {
              take();
              if (inFlight < MAX_TCP_PIPELINE && !c.destroyed) c.resume();
            });
          }
        };
        const d = this.decide(client, Buffer.from(query));
        if (!d.forward) {
          send(d.reply, 'refused');
          continue;
        }
        this.forwardTcp(d.query, 0).then(({ answer, outcome }) => send(this.judged(d, answer), outcome));
      }
      if (inFlight >= MAX_TCP_PIPELINE) c.pause();
    };
    c.on('data', (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      take();
    });
  }

  /** Forwards over TCP (large answers), with the same failover as UDP. */
  private async forwardTcp(query: Buffer, attempt: number): Promise<{ answer: Buffer | undefined; outcome: 'answered' | 'servfail' }> {
    if (attempt >= this.o.upstreams.length) return { answer: servfail(query), outcome: 'servfail' };
    const u = this.o.upstreams[attempt];
    // The forwarder's own ID, as over UDP: the sandbox's would be one more field it chose.
    const out = Buffer.from(query);
    out.writeUInt16BE(this.random24() & 0xffff, 0);
    try {
      const answer = await tcpExchange(u, out, this.o.timeoutMs);
      if (answer.length < 12 || answer.readUInt16BE(0) !== out.readUInt16BE(0) || !answersQuery(out, answer)) throw new Error('an answer to another query');
      const rcode = answer[3] & 0x0f;
      if ((rcode === 2 || rcode === 5) && attempt + 1 < this.o.upstreams.length) return this.forwardTcp(query, attempt + 1);
      answer.writeUInt16BE(query.readUInt16BE(0), 0);
      return { answer, outcome: 'answered' };
    } catch {
      this.stats.upstreamTimeouts++;
      return this.forwardTcp(query, attempt + 1);
    }
  }
}

function tcpExchange(u: Upstream, query: Buffer, timeoutMs: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const s = net.connect(u.port, u.host);
    let buf = Buffer.alloc(0);
    const done = (err?: Error, answer?: Buffer) => {
      clearTimeout(timer);
      s.destroy();
      if (err) reject(err);
      else resolve(answer!);
    };
    const timer = setTimeout(() => done(new Error('timeout')), timeoutMs);
    s.on('connect', () => {
      const hdr = Buffer.alloc(2);
      hdr.writeUInt16BE(query.length);
      s.write(Buffer.concat([hdr, query]));
    });
    s.on('data', (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      if (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) done(undefined, buf.subarray(2, 2 + buf.readUInt16BE(0)));
    });
    s.on('error', (err) => done(err));
    s.on('end', () => done(new Error('upstream closed')));
  });
}
