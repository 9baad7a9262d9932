// The client side of bench/names.ts, run inside a sandbox (nsenter): connections to one
// address naming a host in the HTTP Host header or the TLS SNI, timed as a user meets them.
//   latency IP PORT NAME N [CAFILE]   N connections one after another: connect to first byte of the answer (ms)
//   rate IP PORT NAME SECONDS CONC    as many connections (request, answer, close) as CONC loops make
//   download IP PORT NAME BYTES CAFILE  one HTTPS GET /bytes/BYTES: Mbit/s from the first byte to the last
// Prints one JSON line. With CAFILE the connection is TLS (SNI NAME), else plain HTTP.
import fs from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';

const [mode, ip, portText, name, a, b] = process.argv.slice(2);
const port = Number(portText);

/** One connection: request `path`, resolve at the answer's first byte (time from connect start) and at its end. */
function once(path: string, ca?: Buffer): Promise<{ firstByteMs: number; bytes: number; endMs: number }> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    let first = 0;
    let bytes = 0;
    const req = `GET ${path} HTTP/1.1\r\nHost: ${name}\r\nConnection: close\r\n\r\n`;
    const s: net.Socket = ca
      ? tls.connect({ host: ip, port, servername: name, ca }, () => s.write(req))
      : net.connect({ host: ip, port, noDelay: true }, () => s.write(req));
    s.on('data', (d: Buffer) => {
      if (first === 0) first = performance.now();
      bytes += d.length;
    });
    s.on('end', () => {
      const end = performance.now();
      s.destroy();
      if (first === 0) reject(new Error('no answer'));
      else resolve({ firstByteMs: first - t0, bytes, endMs: end - first });
    });
    s.on('error', reject);
    s.setTimeout(5000, () => s.destroy(new Error('timeout')));
  });
}

async function main(): Promise<void> {
  if (mode === 'latency') {
    const ca = b ? fs.readFileSync(b) : undefined;
    const times: number[] = [];
    let errors = 0;
    for (let i = 0; i < Number(a); i++) {
      try {
        times.push((await once('/', ca)).firstByteMs);
      } catch {
        errors++;
      }
    }
    console.log(JSON.stringify({ times, errors }));
  } else if (mode === 'rate') {
    const until = performance.now() + Number(a) * 1000;
    let done = 0;
    let errors = 0;
    const loop = async () => {
      while (performance.now() < until) {
        try {
          await once('/');
          done++;
        } catch {
          errors++;
        }
      }
    };
    const t0 = performance.now();
    await Promise.all(Array.from({ length: Number(b) }, loop));
    console.log(JSON.stringify({ connections: done, errors, seconds: (performance.now() - t0) / 1000 }));
  } else if (mode === 'download') {
    const r = await once(`/bytes/${a}`, fs.readFileSync(b));
    console.log(JSON.stringify({ bytes: r.bytes, mbps: (r.bytes * 8) / (r.endMs / 1000) / 1e6 }));
  } else {
    throw new Error(`unknown mode ${mode}`);
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
