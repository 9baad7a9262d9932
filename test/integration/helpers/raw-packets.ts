// Hand-made packets for adversarial tests: what root inside a sandbox can send with raw
// sockets (forged ICMP errors, IP options, another sandbox's MAC), and a capture that says
// whether a packet carrying a marker arrived. Python's standard library only: no scapy.
import { ChildProcess } from 'node:child_process';
import type { Testbed } from '../../testbed/testbed.js';

/** Checksums and header builders; `send(pkt, dst)` sends an IP packet as built (IPPROTO_RAW). */
export const PY_PACKETS = String.raw`
import socket, struct, sys, time
def csum(b):
    if len(b) % 2: b += b'\0'
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xffff); s += s >> 16
    return (~s) & 0xffff
def ip(src, dst, proto, payload, opts=b''):
    ihl = 5 + len(opts) // 4
    h = struct.pack('!BBHHHBBH4s4s', (4 << 4) | ihl, 0, 20 + len(opts) + len(payload), 1, 0, 64, proto, 0, socket.inet_aton(src), socket.inet_aton(dst)) + opts
    return h[:10] + struct.pack('!H', csum(h)) + h[12:] + payload
def udp(src, dst, sport, dport, data):
    l = 8 + len(data)
    u = struct.pack('!HHHH', sport, dport, l, 0) + data
    c = csum(socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack('!BBH', 0, 17, l) + u) or 0xffff
    return u[:6] + struct.pack('!H', c) + u[8:]
def icmp(typ, code, data):
    m = struct.pack('!BBHI', typ, code, 0, 0) + data
    return m[:2] + struct.pack('!H', csum(m)) + m[4:]
def send(pkt, dst):
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    for _ in range(3):
        s.sendto(pkt, (dst, 0)); time.sleep(0.05)
def send_frame(ifname, frame):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW); s.bind((ifname, 0))
    for _ in range(3):
        s.send(frame); time.sleep(0.05)
def mac(m): return bytes.fromhex(m.replace(':', ''))
`;

/** Prints "GOT <source> <marker and the letters after it>" for each packet of IP protocol `proto` that carries the marker. */
const PY_CAPTURE = String.raw`
import socket, sys, select, time
proto, marker, secs = int(sys.argv[1]), sys.argv[2].encode(), float(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, proto)
print('ready', flush=True)
end = time.time() + secs
while time.time() < end:
    r, _, _ = select.select([s], [], [], 0.1)
    if r:
        d, a = s.recvfrom(65535)
        i = d.find(marker)
        if i >= 0:
            j = i
            while j < len(d) and chr(d[j]).isalnum(): j += 1
            print('GOT', a[0], d[i:j].decode(), flush=True)
`;

export interface Capture {
  /** "<source> <marker...>" of each marked packet seen so far. */
  seen(): string[];
  stop(): void;
}

/** Starts a capture of marked packets of `proto` (1 ICMP, 17 UDP) arriving in namespace `ns`. */
export async function capture(tb: Testbed, ns: string, proto: number, marker: string, seconds = 30): Promise<Capture> {
  const p: ChildProcess = tb.background(ns, ['python3', '-c', PY_CAPTURE, String(proto), marker, String(seconds)]);
  let out = '';
  await new Promise<void>((resolve, reject) => {
    p.stdout!.on('data', (d) => {
      out += d;
      if (out.includes('ready')) resolve();
    });
    p.on('exit', (code) => reject(new Error(`capture exited ${code}`)));
  });
  return {
    seen: () => out.split('\n').filter((l) => l.startsWith('GOT ')).map((l) => l.slice(4)),
    stop: () => p.kill('SIGKILL'),
  };
}
