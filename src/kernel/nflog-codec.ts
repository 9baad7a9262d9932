// NFLOG (nfnetlink_log) messages: the config requests that bind a netlink socket to a log
// group, and the parsing of logged packets into what a denial event needs. Pure.
import { Message, parseAttrs, request, Request } from './rtnetlink-codec.js';

const NFNL_SUBSYS_ULOG = 4;
const NFULNL_MSG_PACKET = 0;
const NFULNL_MSG_CONFIG = 1;
const NFULA_CFG_CMD = 1;
const NFULA_CFG_MODE = 2;
const NFULNL_CFG_CMD_BIND = 1;
const NFULNL_COPY_PACKET = 2;
const NFULA_TIMESTAMP = 3;
const NFULA_PAYLOAD = 9;
const NFULA_PREFIX = 10;

export const NFLOG_PACKET_TYPE = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET;

function nfgenmsg(family: number, resId: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt8(family, 0);
  b.writeUInt8(0, 1); // NFNETLINK_V0
  b.writeUInt16BE(resId, 2);
  return b;
}

/** Bind to `group` and ask for the first `copyRange` bytes of each packet (headers suffice). */
export function bindRequests(group: number, copyRange = 96): Request[] {
  const mode = Buffer.alloc(6);
  mode.writeUInt32BE(copyRange, 0);
  mode.writeUInt8(NFULNL_COPY_PACKET, 4);
  return [
    request((NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG, 0, nfgenmsg(0, group), [{ type: NFULA_CFG_CMD, data: Buffer.from([NFULNL_CFG_CMD_BIND]) }]),
    request((NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG, 0, nfgenmsg(0, group), [{ type: NFULA_CFG_MODE, data: mode }]),
  ];
}

export interface LoggedPacket {
  /** Milliseconds since the epoch (the kernel's timestamp, else receipt). */
  time: number;
  prefix: string;
  src: string;
  dst: string;
  proto: number;
  sport?: number;
  dport?: number;
}

const ip = (b: Buffer, off: number) => `${b[off]}.${b[off + 1]}.${b[off + 2]}.${b[off + 3]}`;

export function parseLogged(m: Message, now = Date.now()): LoggedPacket | undefined {
  if (m.type !== NFLOG_PACKET_TYPE) return undefined;
  const a = parseAttrs(m.body.subarray(4));
  const payload = a.get(NFULA_PAYLOAD);
  if (!payload || payload.length < 20 || payload[0] >> 4 !== 4) return undefined; // IPv4 only
  const ihl = (payload[0] & 0x0f) * 4;
  const proto = payload[9];
  const ts = a.get(NFULA_TIMESTAMP);
  const out: LoggedPacket = {
    time: ts && ts.length >= 16 ? Number(ts.readBigUInt64BE(0)) * 1000 + Math.floor(Number(ts.readBigUInt64BE(8)) / 1000) : now,
    prefix: (a.get(NFULA_PREFIX)?.toString('utf8') ?? '').replace(/\0.*$/s, ''),
    src: ip(payload, 12),
    dst: ip(payload, 16),
    proto,
  };
  if ((proto === 6 || proto === 17) && payload.length >= ihl + 4) {
    out.sport = payload.readUInt16BE(ihl);
    out.dport = payload.readUInt16BE(ihl + 2);
  }
  return out;
}
