// The host's sockets waiting for connections, read from /proc/thread-self/net/{tcp,udp}[6]
// (the namespace of the calling thread: the host's, on the main thread outside a netns
// switch). What publishing a port checks against: a translation would take that port's
// connections away from the socket. One read of four small files (~0.1 ms with a few
// hundred sockets), done only when a sandbox publishes.
import fs from 'node:fs';
import os from 'node:os';
import type { HostListener, PublishProtocol } from '../core/publish.js';

const TCP_LISTEN = '0A';
/** An unconnected UDP socket (TCP_CLOSE in the state column): bound, receiving from anyone. */
const UDP_UNCONNECTED = '07';

/** An address column's 8 hex digits: the kernel prints the network-order word as a native integer. */
function ipv4Of(hex: string, littleEndian: boolean): string {
  const n = parseInt(hex, 16);
  const b = [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255];
  return (littleEndian ? b.reverse() : b).join('.');
}

/**
 * The listeners of one /proc/net file's text. IPv6 sockets count where they take IPv4: on
 * `::` (every address, unless v6only, which the file does not say: counted) and on a
 * v4-mapped address. `address` undefined: bound to every address.
 */
export function parseProcNet(text: string, protocol: PublishProtocol, v6: boolean, littleEndian = os.endianness() === 'LE'): HostListener[] {
  const out: HostListener[] = [];
  const wanted = protocol === 'tcp' ? TCP_LISTEN : UDP_UNCONNECTED;
  for (const line of text.split('\n').slice(1)) {
    const cols = line.trim().split(/\s+/);
    if (cols.length < 4 || cols[3] !== wanted) continue;
    const [addrHex, portHex] = cols[1].split(':');
    const port = parseInt(portHex, 16);
    let address: string | undefined;
    if (!v6) {
      address = ipv4Of(addrHex, littleEndian);
    } else if (/^0{32}$/.test(addrHex)) {
      address = '0.0.0.0';
    } else if (/^0{16}$/.test(addrHex.slice(0, 16)) && /^(0000FFFF|FFFF0000)$/i.test(addrHex.slice(16, 24))) {
      address = ipv4Of(addrHex.slice(24), littleEndian);
    } else {
      continue; // IPv6 only: nothing published reaches it
    }
    out.push({ protocol, port, ...(address === '0.0.0.0' ? {} : { address }) });
  }
  return out;
}

/** Every TCP and UDP listener of the calling thread's network namespace. */
export function hostListeners(): HostListener[] {
  const out: HostListener[] = [];
  for (const [file, protocol, v6] of [['tcp', 'tcp', false], ['tcp6', 'tcp', true], ['udp', 'udp', false], ['udp6', 'udp', true]] as const) {
    let text: string;
    try {
      text = fs.readFileSync(`/proc/thread-self/net/${file}`, 'utf8');
    } catch {
      continue; // no IPv6 in this kernel
    }
    out.push(...parseProcNet(text, protocol, v6));
  }
  return out;
}
