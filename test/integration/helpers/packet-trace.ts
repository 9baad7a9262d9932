// Hand-made packets judged by the kernel, with the kernel's own account of why. Frames built
// here leave by an AF_PACKET socket on links of a sender namespace; nftables' trace events
// (NFT_MSG_TRACE on the netlink group NFNLGRP_NFTRACE) in the judging namespace say, per
// packet, which rule of an instance's from_sandbox chain decided and which deny chain it
// went to. No counters to diff (the deny chains' are rate-limited) and no timing: each
// packet carries its case number as its IP id, and the trace quotes its IP header.
//
// In-process: both sockets are opened inside their namespace (withNetns) and keep working
// there. (`nft monitor trace` does the same reading, but printing each event cost it ~0.1 ms
// of CPU, most of this test's time.)
import koffi from 'koffi';
import { parseIPv4 } from '../../../src/core/ipv4.js';
import { check, errno, lib, AF_NETLINK, SOCK_CLOEXEC, SOCK_RAW, SOL_NETLINK, SOL_SOCKET } from '../../../src/kernel/libc.js';
import { withNetns } from '../../../src/kernel/netns.js';
import type { Nft } from '../../../src/kernel/nft.js';
import { parseAttrs, parseMessages } from '../../../src/kernel/rtnetlink-codec.js';

export interface Probe {
  /** IP id: the case number, which names the packet in the trace (1-65535). */
  id: number;
  /** Sender-side link (in the sender's namespace) the frame leaves by. */
  link: string;
  srcMac: string;
  dstMac: string;
  saddr: string;
  daddr: string;
  /** IP protocol: 6 tcp (a SYN), 17 udp, 1 icmp (an echo request), anything else (4 bytes of payload). */
  proto: number;
  sport: number;
  dport: number;
  /** Nothing after the IP header (protocols other than tcp, udp, icmp only). */
  short?: boolean;
}

function csum(b: Buffer): number {
  let s = 0;
  for (let i = 0; i + 1 < b.length; i += 2) s += b.readUInt16BE(i);
  if (b.length % 2) s += b[b.length - 1] << 8;
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return ~s & 0xffff;
}

const addr = (s: string): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(parseIPv4(s));
  return b;
};
const mac = (m: string): Buffer => Buffer.from(m.replaceAll(':', ''), 'hex');

/** The transport part of a probe, checksummed (conntrack checks tcp/udp/icmp checksums). */
function transport(p: Probe): Buffer {
  const data = Buffer.from('emx!');
  const pseudo = (l4: Buffer) => Buffer.concat([addr(p.saddr), addr(p.daddr), Buffer.from([0, p.proto, l4.length >> 8, l4.length & 0xff]), l4]);
  switch (p.proto) {
    case 6: {
      const t = Buffer.alloc(20);
      t.writeUInt16BE(p.sport, 0);
      t.writeUInt16BE(p.dport, 2);
      t.writeUInt32BE(p.id * 7919, 4);
      t[12] = 5 << 4;
      t[13] = 0x02; // SYN: a new flow
      t.writeUInt16BE(64240, 14);
      t.writeUInt16BE(csum(pseudo(t)), 16);
      return t;
    }
    case 17: {
      const u = Buffer.concat([Buffer.alloc(8), data]);
      u.writeUInt16BE(p.sport, 0);
      u.writeUInt16BE(p.dport, 2);
      u.writeUInt16BE(u.length, 4);
      u.writeUInt16BE(csum(pseudo(u)) || 0xffff, 6);
      return u;
    }
    case 1: {
      const m = Buffer.concat([Buffer.from([8, 0, 0, 0]), Buffer.alloc(4), data]);
      m.writeUInt16BE(p.sport, 4); // echo id: a flow of its own for conntrack
      m.writeUInt16BE(1, 6);
      m.writeUInt16BE(csum(m), 2);
      return m;
    }
    default:
      return p.short ? Buffer.alloc(0) : data;
  }
}

/** The probe as an Ethernet frame. */
export function frame(p: Probe): Buffer {
  if (p.short && [1, 6, 17].includes(p.proto)) throw new Error('short probes are for protocols conntrack does not parse');
  const l4 = transport(p);
  const ip = Buffer.alloc(20);
  ip[0] = 0x45;
  ip.writeUInt16BE(20 + l4.length, 2);
  ip.writeUInt16BE(p.id, 4);
  ip[8] = 64;
  ip[9] = p.proto;
  addr(p.saddr).copy(ip, 12);
  addr(p.daddr).copy(ip, 16);
  ip.writeUInt16BE(csum(ip), 10);
  return Buffer.concat([mac(p.dstMac), mac(p.srcMac), Buffer.from([0x08, 0x00]), ip, l4]);
}

/** What the kernel did with one probe, read from its trace. */
export interface Judgement {
  verdict: 'accept' | 'drop';
  /** Chain of the deciding rule. */
  chain: string;
  /** The deciding rule: its comment, or its expressions if it has none. */
  rule: string;
  /** The deny chain (deny_<reason>) the packet went through, if any. */
  reason?: string;
}

/** One trace event as the kernel sent it (include/uapi/linux/netfilter/nf_tables.h). */
export interface TraceEvent {
  /** Family of the base chain's table (NFPROTO_INET 1 for the instance tables). */
  family: number;
  id: number;
  table: string;
  chain: string;
  type: 'policy' | 'return' | 'rule' | 'unspec';
  handle?: bigint;
  /** NF_DROP 0, NF_ACCEPT 1, NFT_CONTINUE -1, NFT_BREAK -2, NFT_JUMP -3, NFT_GOTO -4, NFT_RETURN -5. */
  verdict?: number;
  target?: string;
  /** The IP header's id field, on the first event of each base chain (which quotes the header). */
  ipId?: number;
}

const NFT_MSG_TRACE = (10 /* NFNL_SUBSYS_NFTABLES */ << 8) | 17;
const NFTA_TRACE = { table: 1, chain: 2, handle: 3, type: 4, verdict: 5, id: 6, network: 8 } as const;
const TRACE_TYPES = ['unspec', 'policy', 'return', 'rule'] as const;
const NFPROTO_INET = 1;
const NF_DROP = 0;
const NF_ACCEPT = 1;
const NFT_JUMP = -3;

const cstr = (b: Buffer | undefined): string => (b ? b.toString('utf8').replace(/\0.*$/s, '') : '');

export function parseTrace(body: Buffer): TraceEvent {
  const a = parseAttrs(body.subarray(4)); // after nfgenmsg
  const v = a.get(NFTA_TRACE.verdict) ? parseAttrs(a.get(NFTA_TRACE.verdict)!) : undefined;
  const net = a.get(NFTA_TRACE.network);
  return {
    family: body[0],
    id: a.get(NFTA_TRACE.id)?.readUInt32BE(0) ?? 0,
    table: cstr(a.get(NFTA_TRACE.table)),
    chain: cstr(a.get(NFTA_TRACE.chain)),
    type: TRACE_TYPES[a.get(NFTA_TRACE.type)?.readUInt32BE(0) ?? 0] ?? 'unspec',
    handle: a.get(NFTA_TRACE.handle)?.readBigUInt64BE(0),
    verdict: v?.get(1)?.readInt32BE(0),
    target: v?.get(2) ? cstr(v.get(2)) : undefined,
    ipId: net && net.length >= 20 && net[0] >> 4 === 4 ? net.readUInt16BE(4) : undefined,
  };
}

/**
 * Turns trace events into judgements, per probe (by IP id): the first final verdict given
 * in one of the instance tables. Trace ids belong to a packet buffer and get reused, so the
 * header quoted as a traced packet enters each base chain binds its id again.
 */
export class TraceReader {
  readonly judged = new Map<number, Judgement>();
  private readonly probeOf = new Map<number, { id: number; pending?: { rule: string; reason: string } }>();

  /** `rules`: table and handle -> the rule's name (comment), for the instance tables. */
  constructor(private readonly rules: Map<string, string>) {}

  feed(e: TraceEvent): void {
    if (e.ipId !== undefined) this.probeOf.set(e.id, { id: e.ipId });
    const probe = this.probeOf.get(e.id);
    // The instance's ARP table has the same name (and handles of its own): inet only.
    const rule = e.handle === undefined || e.family !== NFPROTO_INET ? undefined : this.rules.get(`${e.table}\0${e.handle}`);
    if (!probe || e.type !== 'rule' || rule === undefined || this.judged.has(probe.id)) return;
    const final = e.verdict === NF_ACCEPT ? 'accept' : e.verdict === NF_DROP ? 'drop' : undefined;
    if (e.chain === 'from_sandbox' && e.verdict === NFT_JUMP && e.target?.startsWith('deny_')) {
      probe.pending = { rule, reason: e.target.slice('deny_'.length) };
    } else if (final && e.chain.startsWith('deny_')) {
      this.judged.set(probe.id, { verdict: final, chain: 'from_sandbox', rule: probe.pending?.rule ?? '?', reason: e.chain.slice('deny_'.length) });
    } else if (final) {
      this.judged.set(probe.id, { verdict: final, chain: e.chain, rule });
    }
  }
}

const AF_PACKET = 17;
const ETH_P_IP = 0x0800;
const NETLINK_NETFILTER = 12;
const NETLINK_ADD_MEMBERSHIP = 1;
const NFNLGRP_NFTRACE = 9;
const SO_RCVBUFFORCE = 33;
const MSG_DONTWAIT = 0x40;
const EAGAIN = 11;
const ENOBUFS = 105;

interface Calls {
  sendto(fd: number, buf: Buffer, len: number, flags: number, addr: Buffer, alen: number): number;
  bind(fd: number, addr: Buffer, alen: number): number;
}
let calls: Calls | undefined;
function sys(): Calls {
  if (calls) return calls;
  const l = koffi.load('libc.so.6');
  calls = {
    sendto: l.func('intptr_t sendto(int fd, const void *buf, size_t len, int flags, const void *addr, uint32_t alen)'),
    bind: l.func('int bind(int fd, const void *addr, uint32_t alen)'),
  } as Calls;
  return calls;
}

const intBuf = (v: number) => {
  const b = Buffer.alloc(4);
  b.writeInt32LE(v);
  return b;
};

/**
 * Sends probes from the sender namespace and reads their traces in the judging one. Call
 * once the ruleset is in place: rule names are read from the tables then.
 */
export class PacketJudge {
  private packetFd: number;
  private traceFd = -1;
  private readonly buf = Buffer.alloc(1 << 20);
  readonly reader: TraceReader;
  /** Probes sent again because their trace was lost (the trace socket overflowed). */
  resent = 0;
  events = 0;

  /**
   * `senderNs`, `judgeNs`: /run/netns paths. `links`: sender-side link name -> ifindex.
   * `tables`: the instance tables whose rules decide; `nft` lists them (it works in the
   * judging namespace).
   */
  constructor(senderNs: string, judgeNs: string, private readonly links: Map<string, number>, nft: Nft, tables: string[]) {
    const names = new Map<string, string>();
    withNetns(judgeNs, () => {
      for (const table of tables) {
        for (const item of nft.listTable('inet', table) ?? []) {
          const r = item.rule as { handle: number; comment?: string; expr: unknown[] } | undefined;
          if (r) names.set(`${table}\0${r.handle}`, r.comment ?? JSON.stringify(r.expr));
        }
      }
    });
    this.reader = new TraceReader(names);
    const l = lib();
    this.packetFd = withNetns(senderNs, () => check(l.socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0), 'socket(AF_PACKET)'));
    try {
      this.traceFd = withNetns(judgeNs, () => check(l.socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER), 'socket(NETLINK_NETFILTER)'));
    } catch (err) {
      l.close(this.packetFd);
      throw err;
    }
    try {
      check(l.setsockopt(this.traceFd, SOL_SOCKET, SO_RCVBUFFORCE, intBuf(16 << 20), 4), 'SO_RCVBUFFORCE');
      // Bound (to a port id the kernel picks): the kernel sends from port id 0 and skips
      // listeners with its own, an unbound socket's.
      const nl = Buffer.alloc(12); // struct sockaddr_nl
      nl.writeUInt16LE(AF_NETLINK, 0);
      check(sys().bind(this.traceFd, nl, nl.length), 'bind(NETLINK_NETFILTER)');
      check(l.setsockopt(this.traceFd, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, intBuf(NFNLGRP_NFTRACE), 4), 'join NFNLGRP_NFTRACE');
    } catch (err) {
      this.close();
      throw err;
    }
  }

  private send(p: Probe): void {
    const ll = Buffer.alloc(20); // struct sockaddr_ll
    ll.writeUInt16LE(AF_PACKET, 0);
    ll.writeUInt16BE(ETH_P_IP, 2);
    const ifindex = this.links.get(p.link);
    if (ifindex === undefined) throw new Error(`no link ${p.link} to send from`);
    ll.writeInt32LE(ifindex, 4);
    const f = frame(p);
    check(Number(sys().sendto(this.packetFd, f, f.length, 0, ll, ll.length)), `send probe ${p.id}`);
  }

  /** Reads every trace event waiting, without blocking. */
  private drain(): void {
    const l = lib();
    for (;;) {
      const n = Number(l.recv(this.traceFd, this.buf, this.buf.length, MSG_DONTWAIT));
      if (n < 0) {
        const e = errno();
        if (e === EAGAIN) return;
        if (e === ENOBUFS) continue; // events lost: their probes are sent again
        check(-1, 'recv trace');
      }
      for (const m of parseMessages(Buffer.from(this.buf.subarray(0, n)))) {
        if (m.type !== NFT_MSG_TRACE) continue;
        this.events++;
        this.reader.feed(parseTrace(m.body));
      }
    }
  }

  /**
   * Judges every probe, `chunk` at a time so the trace socket never overflows; a probe
   * whose trace was lost anyway is sent again, up to `tries` times in all.
   */
  async judge(probes: Probe[], chunk = 500, tries = 3): Promise<Map<number, Judgement>> {
    for (let i = 0; i < probes.length; i += chunk) {
      let todo = probes.slice(i, i + chunk);
      for (let t = 0; t < tries && todo.length > 0; t++) {
        for (const p of todo) this.send(p);
        const end = Date.now() + 2000;
        for (;;) {
          this.drain();
          todo = todo.filter((p) => !this.reader.judged.has(p.id));
          if (todo.length === 0 || Date.now() > end) break;
          await new Promise((r) => setTimeout(r, 1));
        }
        if (todo.length > 0 && t + 1 < tries) this.resent += todo.length;
      }
      if (this.events === 0) throw new Error('no trace events at all: is the probe table tracing?');
    }
    return this.reader.judged;
  }

  close(): void {
    for (const fd of [this.packetFd, this.traceFd]) if (fd >= 0) lib().close(fd);
    this.packetFd = this.traceFd = -1;
  }
}
