// Times DNS queries one after another from inside a sandbox (the well-behaved neighbour of a
// fuzzing sandbox). Usage: node dns-latency.js RESOLVER NAME COUNT [PER_SECOND]
// At most PER_SECOND queries a second when given: a neighbour that keeps under the kernel's
// per-sandbox DNS ceiling (dnsPacketsPerSecond), which a tight loop here exceeds (2,500/s).
// Prints one JSON line: each query's round trip in ms (null: no answer within 1 s).
import dgram from 'node:dgram';
import dnsPacket from 'dns-packet';

const [host, name, countArg, rateArg] = process.argv.slice(2);
const gapMs = rateArg ? 1000 / Number(rateArg) : 0;
const s = dgram.createSocket('udp4');
const rtts: (number | null)[] = [];
const start = performance.now();
for (let i = 0; i < Number(countArg); i++) {
  const due = start + i * gapMs;
  if (performance.now() < due) await new Promise((r) => setTimeout(r, due - performance.now()));
  const id = (i * 7919) & 0xffff;
  const q = dnsPacket.encode({ type: 'query', id, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type: 'A', name }] });
  const t0 = process.hrtime.bigint();
  rtts.push(await new Promise<number | null>((resolve) => {
    const timer = setTimeout(() => { s.off('message', on); resolve(null); }, 1000);
    const on = (m: Buffer) => {
      if (m.length < 2 || m.readUInt16BE(0) !== id) return;
      clearTimeout(timer);
      s.off('message', on);
      resolve(Number(process.hrtime.bigint() - t0) / 1e6);
    };
    s.on('message', on);
    s.send(q, 53, host);
  }));
}
s.close();
process.stdout.write(JSON.stringify({ rtts }) + '\n');
