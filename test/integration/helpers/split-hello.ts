// A TLS client whose ClientHello leaves in many small TCP segments (run inside a sandbox):
//   node split-hello.js HOST_IP SERVERNAME CAFILE CHUNK_BYTES
// Prints the server's answer to GET / and exits 0, or prints the error and exits 1. The TLS
// layer writes through a Duplex that cuts every write into CHUNK_BYTES pieces, each sent by
// itself (no Nagle, a pause between pieces), as a client with a 2 KB post-quantum
// ClientHello, or an evasive one, would.
import fs from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import { Duplex } from 'node:stream';

const [host, servername, caFile, chunkText] = process.argv.slice(2);
const chunk = Number(chunkText);
const raw = net.connect({ host, port: 443, noDelay: true });
const pause = () => new Promise((r) => setTimeout(r, 2));
const wire = new Duplex({
  async write(data: Buffer, _enc, done) {
    for (let i = 0; i < data.length; i += chunk) {
      raw.write(data.subarray(i, i + chunk));
      await pause();
    }
    done();
  },
  read() {},
});
raw.on('data', (d) => wire.push(d));
raw.on('end', () => wire.push(null));
raw.on('error', (e) => wire.destroy(e));
const t = tls.connect({ socket: wire, servername, ca: fs.readFileSync(caFile) });
let body = '';
t.on('secureConnect', () => t.end(`GET / HTTP/1.1\r\nHost: ${servername}\r\nConnection: close\r\n\r\n`));
t.on('data', (d) => (body += d));
t.on('end', () => {
  console.log(body.split('\r\n\r\n').slice(1).join(''));
  process.exit(0);
});
t.on('error', (e) => {
  console.log(`error: ${(e as NodeJS.ErrnoException).code ?? e.message}`);
  process.exit(1);
});
setTimeout(() => {
  console.log('error: timeout');
  process.exit(1);
}, 5000);
