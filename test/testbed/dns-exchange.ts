// A DNS client that sends a message exactly as given (what dig will not send: UPDATE,
// records in a query's answer section, a 20 KiB query over TCP) and prints what came back,
// for tests to run inside a sandbox:
//   node dns-exchange.js udp|tcp SERVER PORT HEX
// Prints one JSON line, {"answer":"HEX"} or {"error":"timeout"|"closed"|message}; exits 0.
import dgram from 'node:dgram';
import net from 'node:net';

const [transport, server, port, hex] = process.argv.slice(2);
const message = Buffer.from(hex, 'hex');
const TIMEOUT_MS = 3000;

function done(result: { answer: string } | { error: string }): void {
  process.stdout.write(`${JSON.stringify(result)}\n`);
  process.exit(0);
}

setTimeout(() => done({ error: 'timeout' }), TIMEOUT_MS);

if (transport === 'udp') {
  const sock = dgram.createSocket('udp4');
  sock.on('message', (m) => done({ answer: m.toString('hex') }));
  sock.on('error', (err) => done({ error: err.message }));
  sock.send(message, Number(port), server);
} else {
  const c = net.connect(Number(port), server);
  let buf = Buffer.alloc(0);
  c.on('connect', () => {
    const len = Buffer.alloc(2);
    len.writeUInt16BE(message.length);
    c.write(Buffer.concat([len, message]));
  });
  c.on('data', (d) => {
    buf = Buffer.concat([buf, d]);
    if (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) done({ answer: buf.subarray(2, 2 + buf.readUInt16BE(0)).toString('hex') });
  });
  c.on('error', (err) => done({ error: err.message }));
  c.on('close', () => done({ error: 'closed' }));
}
