// The sandboxes' DNS server: listens on the gateway address (UDP and TCP 53) and forwards
// each query to the configured upstreams, trying the next one when one times out or
// fails, and passing the upstream's answer back unchanged but for the message ID.
// Queries are parsed with dns-packet (malformed ones are dropped); only sandbox addresses
// are answered, so the forwarder is never an open resolver.
import dgram from 'node:dgram';
import net from 'node:net';
import { randomBytes } from 'node:crypto';
import dnsPacket from 'dns-packet';
import { Cidr, cidrContains, parseIPv4 } from '../core/ipv4.js';
import type { DnsGate } from './gate.js';
import { DnsCache, cacheKey, sameQuestion } from './cache.js';

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
  /** Answers shared across sandboxes (UDP); the gate still judges every answer served. */
  cache?: DnsCache;
  log?: (msg: string) => void;
}

export interface ForwarderStats {
  queries: number;
  answered: number;
  /** Of the answered, how many came from the cache. */
  cached: number;
  servfail: number;
  dropped: number;
  upstreamTimeouts: number;
}

interface Pending {
  clientId: number;
  reply: (msg: Buffer) => void;
  query: Buffer;
  attempt: number;
  /** performance.now() after which the upstream is given up on. */
  deadline: number;
  upstream: Upstream;
}

const MAX_UDP_QUERY = 4096;
const UPSTREAM_SOCKETS = 8;

/** A SERVFAIL answer to `query` (same ID and question), for when every upstream failed. */
export function servfail(query: Buffer): Buffer | undefined {
  try {
    const q = dnsPacket.decode(query);
    return dnsPacket.encode({
      id: q.id,
      type: 'response',
      flags: (q.flags ?? 0) & dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE | 2 /* rcode SERVFAIL */,
      questions: q.questions,
    });
  } catch {
    return undefined;
  }
}

/** Whether `buf` is a well-formed query (QR=0, one question or more). */
export function isQuery(buf: Buffer): boolean {
  if (buf.length < 12) return false;
  try {
    const p = dnsPacket.decode(buf);
    return p.type === 'query' && (p.questions?.length ?? 0) > 0;
  } catch {
    return false;
  }
}

export class DnsForwarder {
  readonly stats: ForwarderStats = { queries: 0, answered: 0, cached: 0, servfail: 0, dropped: 0, upstreamTimeouts: 0 };
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
  /** One periodic sweep for timed-out upstream queries, instead of a timer per query. */
  private sweeper?: NodeJS.Timeout;
  /** Random message IDs drawn from a CSPRNG in bulk (crypto per query is slow). */
  private idPool = Buffer.alloc(0);
  private idPos = 0;

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
      const sock = dgram.createSocket('udp4');
      sock.on('message', (msg, rinfo) => this.onUpstreamAnswer(i, msg, rinfo));
      sock.on('error', (err) => this.o.log?.(`dns upstream socket: ${err.message}`));
      await new Promise<void>((res) => sock.bind(0, res));
      this.upstreamSocks.push(sock);
    }
    this.sweeper = setInterval(() => this.sweep(), Math.min(50, this.o.timeoutMs / 2));
    this.sweeper.unref();

    this.udp = dgram.createSocket({ type: 'udp4', reuseAddr: true });
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
  }

  async stop(): Promise<void> {
    if (this.sweeper) clearInterval(this.sweeper);
    this.pending.clear();
    for (const c of this.tcpConns) c.destroy();
    this.udp?.close();
    for (const sock of this.upstreamSocks) sock.close();
    this.upstreamSocks = [];
    await new Promise<void>((res) => (this.tcp ? this.tcp.close(() => res()) : res()));
  }

  private onUdpQuery(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    // With a gate, it parses (and validates) the query itself: parse once.
    if (!this.allowed(rinfo.address) || msg.length > MAX_UDP_QUERY || (!this.o.gate && !isQuery(msg))) {
      this.stats.dropped++;
      return;
    }
    this.stats.queries++;
    // Nothing (undefined) for a sandbox gone while its query was upstream.
    const send = (answer: Buffer | undefined) => answer && this.udp?.send(answer, rinfo.port, rinfo.address);
    const gate = this.o.gate;
    const d = gate?.onQuery(rinfo.address, msg);
    if (d && !d.forward) {
      if (d.reply) send(d.reply);
      else this.stats.dropped++;
      return;
    }
    // The gate has judged the query for this sandbox; only then may a shared answer serve it.
    const cache = this.o.cache;
    const key = cache ? cacheKey(msg) : undefined;
    if (key !== undefined) {
      const hit = cache!.get(key, msg, performance.now());
      let packet: dnsPacket.Packet | undefined;
      try {
        packet = hit && d?.forward ? hit.packet() : undefined;
      } catch {
        cache!.delete(key); // stored but not decodable: ask upstream instead
      }
      if (hit && (packet || !d)) {
        this.stats.answered++;
        this.stats.cached++;
        send(d?.forward && gate ? gate.onAnswer(d.sandbox, hit.wire, undefined, { packet: packet!, age: hit.age }) : hit.wire);
        return;
      }
    }
    this.forwardUdp(msg, (answer) => {
      if (key !== undefined) cache!.put(key, answer, performance.now());
      send(d?.forward && gate ? gate.onAnswer(d.sandbox, answer) : answer);
    });
  }

  /** Picks a random socket and a free random message ID on it, as one pending key. */
  private freeKey(): number {
    for (;;) {
      if (this.idPos + 3 > this.idPool.length) {
        this.idPool = randomBytes(8190);
        this.idPos = 0;
      }
      const key = (this.idPool[this.idPos] % UPSTREAM_SOCKETS) * 65536 + this.idPool.readUInt16BE(this.idPos + 1);
      this.idPos += 3;
      if (!this.pending.has(key)) return key;
    }
  }

  private forwardUdp(query: Buffer, reply: (msg: Buffer) => void, attempt = 0, clientId = query.readUInt16BE(0)): void {
    if (attempt >= this.o.upstreams.length) {
      const sf = servfail(query);
      this.stats.servfail++;
      if (sf) reply(sf);
      return;
    }
    const upstream = this.o.upstreams[attempt];
    const key = this.freeKey();
    const out = Buffer.from(query);
    out.writeUInt16BE(key & 0xffff, 0);
    this.pending.set(key, { clientId, reply, query, attempt, deadline: performance.now() + this.o.timeoutMs, upstream });
    this.upstreamSocks[Math.floor(key / 65536)].send(out, upstream.port, upstream.host);
  }

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
    // Only the upstream we asked may answer (a spoofed answer from elsewhere is ignored).
    if (!p || p.upstream.host !== rinfo.address || p.upstream.port !== rinfo.port) return;
    // And only to the question asked: a spoofer who guessed port and ID still has to match
    // it. Anything else is dropped and the real answer still awaited.
    // (Error answers without a question, as some servers send them, carry nothing to admit.)
    const bareError = msg.readUInt16BE(4) === 0 && msg.readUInt16BE(6) === 0 && (msg[3] & 0x0f) !== 0;
    if (!bareError && !sameQuestion(p.query, msg)) return;
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
    this.stats.answered++;
    p.reply(msg);
  }

  private onTcpConnection(c: net.Socket): void {
    if (!this.allowed(c.remoteAddress?.replace(/^::ffff:/, '') ?? '')) {
      this.stats.dropped++;
      c.destroy();
      return;
    }
    this.tcpConns.add(c);
    c.setTimeout(10_000, () => c.destroy());
    c.on('close', () => this.tcpConns.delete(c));
    c.on('error', () => c.destroy());
    let buf = Buffer.alloc(0);
    c.on('data', (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        const len = buf.readUInt16BE(0);
        const query = buf.subarray(2, 2 + len);
        buf = buf.subarray(2 + len);
        if (!isQuery(query)) {
          this.stats.dropped++;
          c.destroy();
          return;
        }
        this.stats.queries++;
        const send = (answer: Buffer | undefined) => {
          if (!answer || c.destroyed) return;
          const hdr = Buffer.alloc(2);
          hdr.writeUInt16BE(answer.length);
          c.write(Buffer.concat([hdr, answer]));
        };
        const gate = this.o.gate;
        const d = gate ? gate.onQuery(c.remoteAddress?.replace(/^::ffff:/, '') ?? '', Buffer.from(query)) : undefined;
        if (d && !d.forward) {
          if (d.reply) send(d.reply);
          continue;
        }
        this.forwardTcp(Buffer.from(query), 0).then((answer) => send(d && d.forward && gate ? gate.onAnswer(d.sandbox, answer) : answer));
      }
    });
  }

  /** Forwards over TCP (large answers), with the same failover as UDP. */
  private async forwardTcp(query: Buffer, attempt: number): Promise<Buffer> {
    if (attempt >= this.o.upstreams.length) {
      this.stats.servfail++;
      return servfail(query) ?? Buffer.alloc(0);
    }
    const u = this.o.upstreams[attempt];
    try {
      const answer = await tcpExchange(u, query, this.o.timeoutMs);
      const rcode = answer.length >= 4 ? answer[3] & 0x0f : 0;
      if ((rcode === 2 || rcode === 5) && attempt + 1 < this.o.upstreams.length) return this.forwardTcp(query, attempt + 1);
      this.stats.answered++;
      return answer;
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
