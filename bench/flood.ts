// A sandbox flooding what it can reach on the host: UDP at the resolver (port 53) and at a
// closed host port, and TCP SYNs at a host port, as fast as one process sends, for a time.
// Usage (inside a sandbox): node flood.js GATEWAY SECONDS. Prints the datagrams sent.
import dgram from 'node:dgram';
import net from 'node:net';
import dnsPacket from 'dns-packet';

const [gateway, secondsArg] = process.argv.slice(2);
const until = Date.now() + Number(secondsArg) * 1000;
const s = dgram.createSocket('udp4');
s.on('error', () => undefined);
const query = dnsPacket.encode({ type: 'query', id: 0x1234, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type: 'A', name: 'example.test' }] });
let sent = 0;
const blast = () => {
  for (let i = 0; i < 64; i++) {
    s.send(query, 53, gateway);
    s.send(query, 9999, gateway);
    sent += 2;
  }
  if (Date.now() < until) setImmediate(blast);
  else setTimeout(() => { s.close(); process.stdout.write(JSON.stringify({ sent }) + '\n'); process.exit(0); }, 100);
};
const syn = () => {
  if (Date.now() >= until) return;
  const c = net.connect(22, gateway);
  c.on('error', () => undefined);
  c.setTimeout(200, () => c.destroy());
  setTimeout(syn, 1);
};
blast();
syn();
