// Socket options Node does not offer, on the resolver's listening sockets:
// - SO_MARK: the filter accepts sandbox DNS only towards a socket carrying the resolver's
//   mark (ruleset.ts, RESOLVER_SOCKET_MARK);
// - SO_RCVBUFFORCE: a receive buffer past net.core.rmem_max (Node's recvBufferSize is
//   capped by it), so that the event loop pausing does not drop every sandbox's queries.
// Node exposes no descriptor for UDP; the handle's fd getter (libuv's, on Unix) is the one
// way to it, and a Node without it fails here at start, loudly.
import type dgram from 'node:dgram';
import type net from 'node:net';
import { SOL_SOCKET, check, lib } from './libc.js';

const SO_MARK = 36;
const SO_RCVBUFFORCE = 33;

function fdOf(s: dgram.Socket | net.Server): number {
  const internals = s as unknown as Record<string | symbol, { handle?: { fd?: number } } | { fd?: number } | undefined>;
  const state = Object.getOwnPropertySymbols(s).find((k) => k.description === 'state symbol');
  const handle = state ? (internals[state] as { handle?: { fd?: number } } | undefined)?.handle : (internals._handle as { fd?: number } | undefined);
  const fd = handle?.fd;
  if (typeof fd !== 'number' || fd < 0) throw new Error('cannot reach the descriptor of a listening socket (Node internals changed?)');
  return fd;
}

/** Sets SO_MARK (needs CAP_NET_ADMIN) on a bound UDP socket or a listening TCP server. */
export function markSocket(s: dgram.Socket | net.Server, mark: number): void {
  const val = Buffer.alloc(4);
  val.writeUInt32LE(mark);
  check(lib().setsockopt(fdOf(s), SOL_SOCKET, SO_MARK, val, 4), 'setsockopt SO_MARK');
}

/** Sets the receive buffer of a bound UDP socket to `bytes` (the kernel doubles it for overhead), past rmem_max (needs CAP_NET_ADMIN). */
export function forceReceiveBuffer(s: dgram.Socket, bytes: number): void {
  const val = Buffer.alloc(4);
  val.writeInt32LE(bytes);
  check(lib().setsockopt(fdOf(s), SOL_SOCKET, SO_RCVBUFFORCE, val, 4), 'setsockopt SO_RCVBUFFORCE');
}
