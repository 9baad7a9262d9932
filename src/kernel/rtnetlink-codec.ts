// Pure encoding and decoding of the rtnetlink messages toastnet uses (links, addresses,
// routes). No I/O here: the socket lives in rtnetlink.ts. Layouts follow
// include/uapi/linux/{netlink,rtnetlink,if_link,if_addr}.h.

export const NLMSG_ERROR = 2;
export const NLMSG_DONE = 3;
export const RTM_NEWLINK = 16;
export const RTM_DELLINK = 17;
export const RTM_GETLINK = 18;
export const RTM_NEWADDR = 20;
export const RTM_GETADDR = 22;
export const RTM_NEWROUTE = 24;
export const RTM_DELROUTE = 25;
export const RTM_GETROUTE = 26;
export const RTM_DELNEIGH = 29;
export const NDA_DST = 1;

export const NLM_F_REQUEST = 0x1;
export const NLM_F_MULTI = 0x2;
export const NLM_F_ACK = 0x4;
export const NLM_F_ECHO = 0x8;
export const NLM_F_DUMP = 0x300;
export const NLM_F_REPLACE = 0x100;
export const NLM_F_EXCL = 0x200;
export const NLM_F_CREATE = 0x400;
export const NLM_F_CAPPED = 0x100; // on NLMSG_ERROR: only the request's header is echoed
export const NLM_F_ACK_TLVS = 0x200; // on NLMSG_ERROR: extended-ack attributes follow
export const NLMSGERR_ATTR_MSG = 1;

export const AF_UNSPEC = 0;
export const AF_INET = 2;
export const AF_INET6 = 10;
export const IFF_UP = 0x1;

export const IFLA_ADDRESS = 1;
export const IFLA_IFNAME = 3;
export const IFLA_MTU = 4;
export const IFLA_LINK = 5;
export const IFLA_OPERSTATE = 16;
export const IFLA_LINKINFO = 18;
export const IFLA_STATS64 = 23;
export const IFLA_AF_SPEC = 26;
export const IFLA_NET_NS_FD = 28;
export const IFLA_NUM_TX_QUEUES = 31;
export const IFLA_NUM_RX_QUEUES = 32;
export const IFLA_LINK_NETNSID = 37;
export const IFLA_INFO_KIND = 1;
export const IFLA_INFO_DATA = 2;
export const VETH_INFO_PEER = 1;
export const IFLA_MACVLAN_MODE = 1;
export const MACVLAN_MODE_PRIVATE = 1;
export const IFLA_INET6_ADDR_GEN_MODE = 8;
export const IN6_ADDR_GEN_MODE_NONE = 1;

export const IFA_ADDRESS = 1;
export const IFA_LOCAL = 2;

export const RTA_DST = 1;
export const RTA_OIF = 4;
export const RTA_GATEWAY = 5;
export const RTA_PREFSRC = 7;
export const RTA_TABLE = 15;
export const RT_TABLE_MAIN = 254;
export const RTPROT_BOOT = 3;
export const RTPROT_STATIC = 4;
export const RT_SCOPE_UNIVERSE = 0;
export const RT_SCOPE_LINK = 253;
export const RT_SCOPE_HOST = 254;
export const RTN_UNICAST = 1;
export const RTNH_F_ONLINK = 4;

const NLA_F_NESTED = 0x8000;

/** A netlink attribute: raw payload, or nested attributes. */
export type Attr = { type: number; data: Buffer } | { type: number; nested: Attr[] };

const align4 = (n: number): number => (n + 3) & ~3;

export function encodeAttrs(attrs: Attr[]): Buffer {
  const parts: Buffer[] = [];
  for (const a of attrs) {
    const payload = 'nested' in a ? encodeAttrs(a.nested) : a.data;
    const hdr = Buffer.alloc(4);
    hdr.writeUInt16LE(4 + payload.length, 0);
    hdr.writeUInt16LE('nested' in a ? a.type | NLA_F_NESTED : a.type, 2);
    parts.push(hdr, payload, Buffer.alloc(align4(payload.length) - payload.length));
  }
  return Buffer.concat(parts);
}

export const u32 = (v: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v >>> 0, 0);
  return b;
};
export const u8 = (v: number): Buffer => Buffer.from([v]);
/** Big-endian (network order), as netfilter's attributes (ctnetlink, nfqueue, nft_compat) carry numbers. */
export const be16 = (v: number): Buffer => {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(v);
  return b;
};
export const be32 = (v: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(v >>> 0);
  return b;
};
export const str = (s: string): Buffer => Buffer.concat([Buffer.from(s, 'utf8'), Buffer.from([0])]);
export const ipv4 = (ip: string): Buffer => Buffer.from(ip.split('.').map(Number));
export const mac = (m: string): Buffer => Buffer.from(m.split(':').map((h) => parseInt(h, 16)));

export function ifinfomsg(o: { family?: number; index?: number; flags?: number; change?: number } = {}): Buffer {
  const b = Buffer.alloc(16);
  b.writeUInt8(o.family ?? AF_UNSPEC, 0);
  b.writeInt32LE(o.index ?? 0, 4);
  b.writeUInt32LE(o.flags ?? 0, 8);
  b.writeUInt32LE(o.change ?? 0, 12);
  return b;
}

export function ifaddrmsg(o: { family: number; prefixlen: number; scope?: number; index: number }): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt8(o.family, 0);
  b.writeUInt8(o.prefixlen, 1);
  b.writeUInt8(0, 2);
  b.writeUInt8(o.scope ?? RT_SCOPE_UNIVERSE, 3);
  b.writeUInt32LE(o.index, 4);
  return b;
}

export function rtmsg(o: { family: number; dstLen: number; table?: number; protocol?: number; scope?: number; type?: number; flags?: number }): Buffer {
  const b = Buffer.alloc(12);
  b.writeUInt8(o.family, 0);
  b.writeUInt8(o.dstLen, 1);
  b.writeUInt8(0, 2);
  b.writeUInt8(0, 3);
  b.writeUInt8(o.table ?? RT_TABLE_MAIN, 4);
  b.writeUInt8(o.protocol ?? RTPROT_STATIC, 5);
  b.writeUInt8(o.scope ?? RT_SCOPE_UNIVERSE, 6);
  b.writeUInt8(o.type ?? RTN_UNICAST, 7);
  b.writeUInt32LE(o.flags ?? 0, 8);
  return b;
}

/** A request before sequence numbering: the socket assigns seq when it sends. */
export interface Request {
  type: number;
  flags: number;
  body: Buffer; // fixed header (ifinfomsg/ifaddrmsg/rtmsg) followed by attributes
}

export function request(type: number, flags: number, fixed: Buffer, attrs: Attr[] = []): Request {
  return { type, flags: flags | NLM_F_REQUEST, body: Buffer.concat([fixed, encodeAttrs(attrs)]) };
}

export function frame(req: Request, seq: number): Buffer {
  const hdr = Buffer.alloc(16);
  const len = 16 + req.body.length;
  hdr.writeUInt32LE(len, 0);
  hdr.writeUInt16LE(req.type, 4);
  hdr.writeUInt16LE(req.flags, 6);
  hdr.writeUInt32LE(seq, 8);
  hdr.writeUInt32LE(0, 12);
  return Buffer.concat([hdr, req.body, Buffer.alloc(align4(len) - len)]);
}

export interface Message {
  type: number;
  flags: number;
  seq: number;
  body: Buffer;
}

export function parseMessages(buf: Buffer): Message[] {
  const out: Message[] = [];
  let off = 0;
  while (off + 16 <= buf.length) {
    const len = buf.readUInt32LE(off);
    if (len < 16 || off + len > buf.length) break;
    out.push({
      type: buf.readUInt16LE(off + 4),
      flags: buf.readUInt16LE(off + 6),
      seq: buf.readUInt32LE(off + 8),
      body: buf.subarray(off + 16, off + len),
    });
    off += align4(len);
  }
  return out;
}

/** Attributes as a map type -> payload (last one wins; nested flag stripped). */
export function parseAttrs(buf: Buffer): Map<number, Buffer> {
  const m = new Map<number, Buffer>();
  let off = 0;
  while (off + 4 <= buf.length) {
    const len = buf.readUInt16LE(off);
    const type = buf.readUInt16LE(off + 2) & ~NLA_F_NESTED & 0x3fff;
    if (len < 4 || off + len > buf.length) break;
    m.set(type, buf.subarray(off + 4, off + len));
    off += align4(len);
  }
  return m;
}

/** Decodes NLMSG_ERROR: errno (0 = ack) and the kernel's extended-ack message if any. */
export function parseError(msg: Message): { errno: number; ackedSeq: number; text?: string } {
  const err = msg.body.readInt32LE(0);
  const ackedSeq = msg.body.readUInt32LE(4 + 8);
  let text: string | undefined;
  if (msg.flags & NLM_F_ACK_TLVS) {
    // With NETLINK_CAP_ACK (NLM_F_CAPPED) only the request's 16-byte header is echoed, though
    // that header still carries the full request length; otherwise the whole request is.
    const origLen = msg.body.readUInt32LE(4);
    const capped = err === 0 || (msg.flags & NLM_F_CAPPED) !== 0;
    const tlvOff = capped ? 4 + 16 : 4 + ((Math.max(16, origLen) + 3) & ~3);
    const attrs = parseAttrs(msg.body.subarray(Math.min(tlvOff, msg.body.length)));
    const m = attrs.get(NLMSGERR_ATTR_MSG);
    if (m) text = m.toString('utf8').replace(/\0+$/, '');
  }
  return { errno: err === 0 ? 0 : -err, ackedSeq, text };
}

const cstr = (b: Buffer | undefined): string | undefined => (b ? b.toString('utf8').replace(/\0.*$/s, '') : undefined);
const macStr = (b: Buffer | undefined): string | undefined =>
  b ? [...b].map((x) => x.toString(16).padStart(2, '0')).join(':') : undefined;
const ipStr = (b: Buffer | undefined): string | undefined => (b && b.length === 4 ? [...b].join('.') : undefined);

export interface LinkInfo {
  index: number;
  name: string;
  flags: number;
  up: boolean;
  mac?: string;
  mtu?: number;
  /** For a veth: the peer's ifindex (in the peer's namespace). For a macvlan: the parent. */
  link?: number;
  kind?: string;
  operstate?: number;
  stats?: { rxPackets: number; txPackets: number; rxBytes: number; txBytes: number; rxDropped: number; txDropped: number };
}

export function parseLink(msg: Message): LinkInfo {
  const b = msg.body;
  const index = b.readInt32LE(4);
  const flags = b.readUInt32LE(8);
  const a = parseAttrs(b.subarray(16));
  const li = a.get(IFLA_LINKINFO);
  const kind = li ? cstr(parseAttrs(li).get(IFLA_INFO_KIND)) : undefined;
  const s = a.get(IFLA_STATS64);
  return {
    index,
    name: cstr(a.get(IFLA_IFNAME)) ?? '',
    flags,
    up: (flags & IFF_UP) !== 0,
    mac: macStr(a.get(IFLA_ADDRESS)),
    mtu: a.get(IFLA_MTU)?.readUInt32LE(0),
    link: a.get(IFLA_LINK)?.readInt32LE(0),
    kind,
    operstate: a.get(IFLA_OPERSTATE)?.readUInt8(0),
    stats: s && s.length >= 64
      ? {
          rxPackets: Number(s.readBigUInt64LE(0)),
          txPackets: Number(s.readBigUInt64LE(8)),
          rxBytes: Number(s.readBigUInt64LE(16)),
          txBytes: Number(s.readBigUInt64LE(24)),
          rxDropped: Number(s.readBigUInt64LE(48)),
          txDropped: Number(s.readBigUInt64LE(56)),
        }
      : undefined,
  };
}

export interface AddrInfo {
  index: number;
  family: number;
  prefixLength: number;
  address: string;
}

export function parseAddr(msg: Message): AddrInfo {
  const b = msg.body;
  const a = parseAttrs(b.subarray(8));
  return {
    family: b.readUInt8(0),
    prefixLength: b.readUInt8(1),
    index: b.readUInt32LE(4),
    address: ipStr(a.get(IFA_LOCAL) ?? a.get(IFA_ADDRESS)) ?? '',
  };
}

export interface RouteInfo {
  family: number;
  dst: string;
  dstLen: number;
  table: number;
  scope: number;
  type: number;
  oif?: number;
  gateway?: string;
  prefsrc?: string;
}

export function parseRoute(msg: Message): RouteInfo {
  const b = msg.body;
  const a = parseAttrs(b.subarray(12));
  const tableAttr = a.get(RTA_TABLE);
  return {
    family: b.readUInt8(0),
    dstLen: b.readUInt8(1),
    table: tableAttr ? tableAttr.readUInt32LE(0) : b.readUInt8(4),
    scope: b.readUInt8(6),
    type: b.readUInt8(7),
    dst: ipStr(a.get(RTA_DST)) ?? '0.0.0.0',
    oif: a.get(RTA_OIF)?.readUInt32LE(0),
    gateway: ipStr(a.get(RTA_GATEWAY)),
    prefsrc: ipStr(a.get(RTA_PREFSRC)),
  };
}
