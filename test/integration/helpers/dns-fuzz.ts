// A hostile DNS client, run inside a sandbox against the gateway's resolver: random,
// truncated, corrupted and oversized messages over UDP, and TCP streams that lie about their
// lengths, stall mid-frame or pipeline hundreds of queries. Seeded, so a failure replays.
// Usage: node dns-fuzz.js RESOLVER SEED UDP_MESSAGES TCP_CONNECTIONS
// Prints one JSON line: what was sent.
import dgram from 'node:dgram';
import net from 'node:net';
import dnsPacket from 'dns-packet';
import { prng, intIn } from '../../unit/prng.js';

const [host, seedArg, udpArg, tcpArg] = process.argv.slice(2);
const rnd = prng(Number(seedArg));
const bytes = (n: number) => Buffer.from(Array.from({ length: n }, () => intIn(rnd, 0, 255)));
const query = (name: string) => dnsPacket.encode({ type: 'query', id: intIn(rnd, 0, 65535), flags: dnsPacket.RECURSION_DESIRED, questions: [{ type: 'A', name }] });

/** One hostile message: each kind breaks a different assumption of a parser. */
function hostile(): Buffer {
  const q = query(`f${intIn(rnd, 0, 1e6)}.example.test`);
  switch (intIn(rnd, 0, 8)) {
    case 0: return bytes(intIn(rnd, 0, 600)); // noise, including the empty datagram
    case 1: return q.subarray(0, intIn(rnd, 0, q.length - 1)); // truncated anywhere
    case 2: { // corrupted bytes
      const c = Buffer.from(q);
      for (let i = 0; i < 4; i++) c[intIn(rnd, 0, c.length - 1)] = intIn(rnd, 0, 255);
      return c;
    }
    case 3: return bytes(intIn(rnd, 1500, 9000)); // oversized
    case 4: { // a header promising 65535 questions and answers
      const c = Buffer.from(q);
      c.writeUInt16BE(0xffff, 4);
      c.writeUInt16BE(0xffff, 6);
      return c;
    }
    case 5: { // a compression pointer to itself: a naive decoder loops
      const h = Buffer.from(q.subarray(0, 12));
      h.writeUInt16BE(1, 4);
      return Buffer.concat([h, Buffer.from([0xc0, 0x0c, 0x00, 0x01, 0x00, 0x01])]);
    }
    case 6: { // a response where a query belongs
      const c = Buffer.from(q);
      c[2] |= 0x80;
      return c;
    }
    case 7: return query(Array.from({ length: 4 }, () => 'a'.repeat(63)).join('.')); // longest name
    default: return Buffer.concat([q, bytes(intIn(rnd, 1, 300))]); // trailing garbage
  }
}

async function fuzzUdp(count: number): Promise<number> {
  const s = dgram.createSocket('udp4');
  s.on('error', () => undefined);
  s.on('message', () => undefined);
  let sent = 0;
  for (let i = 0; i < count; i++) {
    await new Promise<void>((res) => s.send(hostile(), 53, host, () => res()));
    sent++;
  }
  s.close();
  return sent;
}

const frame = (b: Buffer) => {
  const h = Buffer.alloc(2);
  h.writeUInt16BE(b.length & 0xffff);
  return Buffer.concat([h, b]);
};

/** One TCP connection of one hostile kind; resolves when the server closed it or after `holdMs`. */
function fuzzTcp(kind: number, holdMs: number): Promise<void> {
  return new Promise((resolve) => {
    const c = net.connect(53, host);
    const done = () => {
      c.destroy();
      resolve();
    };
    c.on('error', done);
    c.on('close', done);
    c.on('data', () => undefined);
    c.setTimeout(holdMs, done);
    c.on('connect', () => {
      switch (kind) {
        case 0: c.write(Buffer.from([0xff, 0xff])); c.write(bytes(100)); break; // claims 64 KiB, stalls
        case 1: c.write(Buffer.from([0x00])); break; // half a length prefix, then nothing
        case 2: c.write(Buffer.concat(Array.from({ length: 300 }, () => frame(query(`p${intIn(rnd, 0, 1e6)}.example.test`))))); break; // pipelined
        case 3: c.write(frame(bytes(intIn(rnd, 1, 500)))); break; // a whole frame of noise
        default: c.write(Buffer.concat([frame(query('example.test')), bytes(intIn(rnd, 1, 2000))])); break; // a query then garbage
      }
    });
  });
}

const udpCount = Number(udpArg);
const tcpCount = Number(tcpArg);
const [udpSent] = await Promise.all([
  fuzzUdp(udpCount),
  Promise.all(Array.from({ length: tcpCount }, (_, i) => fuzzTcp(i % 5, 3000))),
]);
process.stdout.write(JSON.stringify({ udpSent, tcpConnections: tcpCount }) + '\n');
