// A DNS load generator: keeps `concurrency` queries in flight against one server for
// `seconds`, then prints {"qps","p50","p99","timeouts"} (latencies in ms) as JSON.
//   node dns-load.js SERVER_IP SECONDS CONCURRENCY NAME
// A "{n}" in NAME is replaced by a counter: every query asks a new name (misses any cache).
import dgram from 'node:dgram';
import dnsPacket from 'dns-packet';

const [server, secs, conc, name] = process.argv.slice(2);
const seconds = Number(secs);
const concurrency = Number(conc);
const sock = dgram.createSocket('udp4');
const sentAt = new Map<number, number>();
const lat: number[] = [];
let nextId = 1;
let count = 0;
let timeouts = 0;
let running = true;

function send(): void {
  if (!running) return;
  const id = nextId;
  nextId = (nextId % 65535) + 1;
  sentAt.set(id, performance.now());
  const qname = name.replace('{n}', String(count++));
  sock.send(dnsPacket.encode({ id, type: 'query', flags: dnsPacket.RECURSION_DESIRED, questions: [{ type: 'A', name: qname }] }), 53, server);
}

sock.on('message', (m) => {
  const id = m.readUInt16BE(0);
  const t = sentAt.get(id);
  if (t === undefined) return;
  sentAt.delete(id);
  lat.push(performance.now() - t);
  send();
});

// Re-send for queries lost to a full socket buffer, so the load never stalls.
const sweeper = setInterval(() => {
  const now = performance.now();
  for (const [id, t] of sentAt) {
    if (now - t > 1000) {
      sentAt.delete(id);
      timeouts++;
      send();
    }
  }
}, 200);

sock.bind(0, () => {
  for (let i = 0; i < concurrency; i++) send();
  setTimeout(() => {
    running = false;
    clearInterval(sweeper);
    sock.close();
    lat.sort((a, b) => a - b);
    const q = (p: number) => lat[Math.min(lat.length - 1, Math.floor(lat.length * p))] ?? NaN;
    process.stdout.write(`${JSON.stringify({ qps: Math.round(lat.length / seconds), p50: q(0.5), p99: q(0.99), timeouts })}\n`);
  }, seconds * 1000);
});
