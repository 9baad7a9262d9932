// A flow generator for bench/flows.ts, run inside a sandbox: one UDP socket sends one
// datagram to each port of `host` in turn (1024..65535), so every datagram is a new
// conntrack entry (a new tuple) in the host's namespace, at `rate` per second for
// `seconds`. Prints {"sent": n, "seconds": s}.
import dgram from 'node:dgram';

const [host, rateArg, secondsArg] = process.argv.slice(2);
const rate = Number(rateArg);
const seconds = Number(secondsArg);
const sock = dgram.createSocket('udp4');
const payload = Buffer.from('flow');
let port = 1024;
let sent = 0;
sock.bind(0, () => {
  const t0 = performance.now();
  const tick = () => {
    const elapsed = (performance.now() - t0) / 1000;
    const due = Math.min(Math.floor(rate * Math.min(elapsed, seconds)), Math.floor(rate * seconds));
    for (; sent < due; sent++) {
      sock.send(payload, port, host);
      port = port === 65535 ? 1024 : port + 1;
    }
    if (elapsed < seconds) setTimeout(tick, 5);
    else setTimeout(() => {
      sock.close();
      process.stdout.write(`${JSON.stringify({ sent, seconds: (performance.now() - t0) / 1000 })}\n`);
    }, 200);
  };
  tick();
});
