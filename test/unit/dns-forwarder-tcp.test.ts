// What one client can take of the resolver over TCP: a bounded number of connections, and
// of queries awaiting answers on one connection (a segment can carry a thousand pipelined
// queries; taken at once they would hold the event loop from every other sandbox). A real
// forwarder on loopback with a slow fake upstream; no root needed.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import dnsPacket from 'dns-packet';
import { DnsForwarder } from '../../src/dns/forwarder.js';
import { DnsGate } from '../../src/dns/gate.js';
import { parseCidr } from '../../src/core/ipv4.js';
import { resolvePolicy } from '../../src/core/policy.js';
import { countsFit } from '../../src/dns/upstream-query.js';

const LOOPBACK = '127.0.0.1';
const UPSTREAM_DELAY_MS = 60;

const query = (name: string, id: number) => dnsPacket.encode({ id, type: 'query', flags: dnsPacket.RECURSION_DESIRED, questions: [{ type: 'A', name }] });
const frame = (m: Buffer) => {
  const h = Buffer.alloc(2);
  h.writeUInt16BE(m.length);
  return Buffer.concat([h, m]);
};

describe('DnsForwarder over TCP, against one greedy client', () => {
  let upstream: net.Server;
  let forwarder: DnsForwarder;
  let port: number;
  let upstreamNow = 0;
  let upstreamMax = 0;

  before(async () => {
    // Answers each query after a delay, one connection per query (as the forwarder opens them).
    upstream = net.createServer((c) => c.once('data', (d) => {
      upstreamNow++;
      upstreamMax = Math.max(upstreamMax, upstreamNow);
      const q = dnsPacket.decode(d.subarray(2, 2 + d.readUInt16BE(0)));
      setTimeout(() => {
        upstreamNow--;
        c.end(frame(dnsPacket.encode({ id: q.id, type: 'response', flags: dnsPacket.RECURSION_DESIRED, questions: q.questions, answers: [{ type: 'A', name: q.questions![0].name, ttl: 60, data: '203.0.113.7' }] })));
      }, UPSTREAM_DELAY_MS);
    }));
    await new Promise<void>((res) => upstream.listen(0, LOOPBACK, res));
    const sandbox = { id: 1, name: 'one', ip: LOOPBACK, policy: resolvePolicy({ dns: { qps: 100000, burst: 100000 } }) };
    const gate = new DnsGate({ sandbox: () => sandbox, sandboxById: () => sandbox, admit: () => {}, log: () => {} },
      { minTtl: 5, maxTtl: 3600, refuseWith: 'refused', subnet: '10.166.0.0/16' });
    const probe = net.createServer();
    await new Promise<void>((res) => probe.listen(0, LOOPBACK, res));
    port = (probe.address() as net.AddressInfo).port;
    probe.close();
    forwarder = new DnsForwarder({
      listenHost: LOOPBACK, listenPort: port, upstreams: [{ host: LOOPBACK, port: (upstream.address() as net.AddressInfo).port }],
      timeoutMs: 2000, clients: parseCidr('127.0.0.0/8'), gate,
    });
    await forwarder.start();
  });
  after(async () => {
    await forwarder?.stop();
    upstream?.close();
  });

  it('answers every pipelined query, with at most 16 of one connection awaiting answers at once', async () => {
    const n = 50;
    const c = net.connect(port, LOOPBACK);
    c.write(Buffer.concat(Array.from({ length: n }, (_, i) => frame(query(`q${i}.test`, i + 1)))));
    const ids = new Set<number>();
    let buf = Buffer.alloc(0);
    for await (const chunk of c) {
      buf = Buffer.concat([buf, chunk as Buffer]);
      while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        ids.add(dnsPacket.decode(buf.subarray(2, 2 + buf.readUInt16BE(0))).id!);
        buf = buf.subarray(2 + buf.readUInt16BE(0));
      }
      if (ids.size === n) break;
    }
    c.destroy();
    assert.equal(ids.size, n, 'every query answered');
    assert.ok(upstreamMax > 1, 'queries of one connection do overlap');
    assert.ok(upstreamMax <= 16, `at most 16 awaiting at once, saw ${upstreamMax}`);
  });

  it('closes a client\'s ninth connection unread while its eight others stay served', async () => {
    const held = await Promise.all(Array.from({ length: 8 }, () => new Promise<net.Socket>((res) => {
      const c = net.connect(port, LOOPBACK, () => res(c));
    })));
    try {
      const ninth = net.connect(port, LOOPBACK);
      ninth.on('error', () => undefined);
      await new Promise<void>((res) => ninth.on('close', () => res()));
      // One of the eight still gets its answer.
      held[7].write(frame(query('still.test', 99)));
      const [chunk] = await Promise.race([
        new Promise<Buffer[]>((res) => held[7].once('data', (d) => res([d]))),
        new Promise<Buffer[]>((_, rej) => setTimeout(() => rej(new Error('no answer on a held connection')), 2000)),
      ]);
      assert.equal(dnsPacket.decode(chunk.subarray(2)).id, 99);
    } finally {
      for (const c of held) c.destroy();
    }
  });
});

describe('countsFit', () => {
  it('refuses a header claiming more records than the bytes could hold, before any decoder', () => {
    const q = query('example.test', 1);
    assert.equal(countsFit(q), true);
    const many = Buffer.from(q);
    many.writeUInt16BE(0xffff, 6);
    assert.equal(countsFit(many), false, '65,535 answers in 30 bytes');
    const twoQuestions = Buffer.from(q);
    twoQuestions.writeUInt16BE(2, 4);
    assert.equal(countsFit(twoQuestions), true, 'two questions fit in the bytes: the gate refuses them itself, with an answer');
    assert.equal(countsFit(q.subarray(0, 11)), false, 'shorter than a header');
  });
});
