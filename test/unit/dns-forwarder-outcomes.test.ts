// The resolver's counters partition its queries: each message received is counted once,
// under what became of it, so the outcomes add up to the messages sent. A real forwarder on
// loopback, with a fake upstream (UDP and TCP) and a gate over fake hooks; no root needed.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import net from 'node:net';
import dnsPacket from 'dns-packet';
import { DnsForwarder } from '../../src/dns/forwarder.js';
import { DnsGate, type GateSandbox } from '../../src/dns/gate.js';
import { DnsCache } from '../../src/dns/cache.js';
import { parseCidr } from '../../src/core/ipv4.js';
import { resolvePolicy } from '../../src/core/policy.js';
import { QUERY_OUTCOMES } from '../../src/dns/query-outcomes.js';

const LOOPBACK = '127.0.0.1';
/** Names the fake upstream treats specially: no answer at all, or an answer after SLOW_MS. */
const SILENT = 'silent.test';
const SLOW = 'slow.test';
const SLOW_MS = 150;

function answerTo(query: Buffer): Buffer {
  const q = dnsPacket.decode(query);
  return dnsPacket.encode({
    id: q.id, type: 'response', flags: dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE, questions: q.questions,
    answers: [{ type: 'A', name: q.questions![0].name, ttl: 300, data: '203.0.113.7' }],
  });
}

const questionOf = (query: Buffer) => dnsPacket.decode(query).questions?.[0]?.name;

async function freePort(): Promise<number> {
  const s = dgram.createSocket('udp4');
  await new Promise<void>((res) => s.bind(0, LOOPBACK, res));
  const { port } = s.address();
  s.close();
  return port;
}

const query = (name: string, id = 1) => dnsPacket.encode({ id, type: 'query', flags: dnsPacket.RECURSION_DESIRED, questions: [{ type: 'A', name }] });

describe('DnsForwarder query outcomes', () => {
  let upstreamUdp: dgram.Socket;
  let upstreamTcp: net.Server;
  let forwarder: DnsForwarder;
  let port: number;
  let sandbox: GateSandbox | undefined;

  before(async () => {
    upstreamUdp = dgram.createSocket('udp4');
    upstreamUdp.on('message', (msg, rinfo) => {
      const name = questionOf(msg);
      if (name === SILENT) return;
      setTimeout(() => upstreamUdp.send(answerTo(msg), rinfo.port, rinfo.address), name === SLOW ? SLOW_MS : 0);
    });
    await new Promise<void>((res) => upstreamUdp.bind(0, LOOPBACK, res));
    const upstreamPort = upstreamUdp.address().port;
    upstreamTcp = net.createServer((c) => c.on('data', (d) => {
      const a = answerTo(d.subarray(2, 2 + d.readUInt16BE(0)));
      const hdr = Buffer.alloc(2);
      hdr.writeUInt16BE(a.length);
      c.end(Buffer.concat([hdr, a]));
    }));
    await new Promise<void>((res) => upstreamTcp.listen(upstreamPort, LOOPBACK, res));

    sandbox = { id: 1, name: 'one', ip: LOOPBACK, policy: resolvePolicy({ egress: { domains: ['*.test'] } }) };
    const gate = new DnsGate({
      sandbox: (ip) => (ip === sandbox?.ip ? sandbox : undefined),
      sandboxById: (id) => (id === sandbox?.id ? sandbox : undefined),
      admit: () => {},
      log: () => {},
    }, { minTtl: 5, maxTtl: 3600, refuseWith: 'refused', subnet: '10.166.0.0/16' });
    port = await freePort();
    forwarder = new DnsForwarder({
      listenHost: LOOPBACK, listenPort: port, upstreams: [{ host: LOOPBACK, port: upstreamPort }], timeoutMs: 100,
      clients: parseCidr('127.0.0.0/8'), gate, cache: new DnsCache({ maxEntries: 100, maxTtl: 3600 }),
    });
    await forwarder.start();
  });
  after(async () => {
    await forwarder?.stop();
    upstreamUdp?.close();
    upstreamTcp?.close();
  });

  /** Sends `msg` over UDP; the answer, or undefined after `waitMs` without one. */
  async function ask(msg: Buffer, waitMs = 600, beforeAnswer?: () => void): Promise<dnsPacket.Packet | undefined> {
    const s = dgram.createSocket('udp4');
    try {
      const answer = new Promise<dnsPacket.Packet | undefined>((resolve) => {
        const timer = setTimeout(() => resolve(undefined), waitMs);
        s.once('message', (m) => {
          clearTimeout(timer);
          resolve(dnsPacket.decode(m));
        });
      });
      await new Promise<void>((res) => s.send(msg, port, LOOPBACK, () => res()));
      beforeAnswer?.();
      return await answer;
    } finally {
      s.close();
    }
  }

  async function askTcp(msg: Buffer): Promise<dnsPacket.Packet> {
    const c = net.connect(port, LOOPBACK);
    const hdr = Buffer.alloc(2);
    hdr.writeUInt16BE(msg.length);
    c.write(Buffer.concat([hdr, msg]));
    let buf = Buffer.alloc(0);
    for await (const chunk of c) {
      buf = Buffer.concat([buf, chunk as Buffer]);
      if (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) break;
    }
    c.destroy();
    return dnsPacket.decode(buf.subarray(2));
  }

  it('counts each query once, under one outcome, and upstream timeouts apart', async () => {
    const rcode = (p: dnsPacket.Packet | undefined) => (p as { rcode?: string } | undefined)?.rcode;
    assert.equal(rcode(await ask(query('a.test'))), 'NOERROR', 'answered upstream');
    assert.equal(rcode(await ask(query('a.test'))), 'NOERROR', 'answered from the cache');
    assert.equal(rcode(await askTcp(query('b.test'))), 'NOERROR', 'answered upstream over TCP');
    assert.equal(rcode(await ask(query('elsewhere.example'))), 'REFUSED', 'outside the allow-list');
    assert.equal(rcode(await ask(query(SILENT))), 'SERVFAIL', 'the only upstream timed out');
    assert.equal(await ask(Buffer.from('not a dns message')), undefined, 'garbage is not answered');
    // The sandbox leaves while its query is upstream: the late answer is not passed on, and
    // it is counted as dropped only (not also as answered).
    assert.equal(await ask(query(SLOW), SLOW_MS + 400, () => (sandbox = undefined)), undefined);

    const { outcomes, upstreamTimeouts } = forwarder.stats;
    assert.deepEqual(outcomes, { answered: 2, cached: 1, refused: 1, servfail: 1, dropped: 2 });
    assert.equal(QUERY_OUTCOMES.reduce((n, o) => n + outcomes[o], 0), 7, 'the outcomes add up to the messages sent');
    assert.equal(upstreamTimeouts, 1);
  });
});
