import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import dnsPacket from 'dns-packet';
import { DnsCache, cacheKey, sameQuestion } from '../../src/dns/cache.js';

type Q = { id?: number; name?: string; type?: dnsPacket.RecordType; rd?: boolean; cd?: boolean; edns?: { size: number; do?: boolean; options?: dnsPacket.PacketOpt[] } };
function query(o: Q = {}): Buffer {
  return dnsPacket.encode({
    id: o.id ?? 1,
    type: 'query',
    flags: (o.rd === false ? 0 : dnsPacket.RECURSION_DESIRED) | (o.cd ? dnsPacket.CHECKING_DISABLED : 0),
    questions: [{ type: o.type ?? 'A', name: o.name ?? 'example.test' }],
    ...(o.edns ? { additionals: [{ type: 'OPT', name: '.', udpPayloadSize: o.edns.size, flags: o.edns.do ? dnsPacket.DNSSEC_OK : 0, options: o.edns.options ?? [] } as dnsPacket.Answer] } : {}),
  });
}

function answer(o: { name?: string; rcode?: number; tc?: boolean; answers?: dnsPacket.Answer[]; authorities?: dnsPacket.Answer[]; additionals?: dnsPacket.Answer[] } = {}): Buffer {
  const name = o.name ?? 'example.test';
  return dnsPacket.encode({
    id: 1,
    type: 'response',
    flags: dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE | (o.tc ? dnsPacket.TRUNCATED_RESPONSE : 0) | (o.rcode ?? 0),
    questions: [{ type: 'A', name }],
    answers: o.answers ?? [{ type: 'A', name, ttl: 300, data: '203.0.113.10' }],
    authorities: o.authorities ?? [],
    additionals: o.additionals ?? [],
  });
}
const soa = (ttl: number): dnsPacket.Answer => ({ type: 'SOA', name: 'test', ttl, data: { mname: 'ns.test', rname: 'h.test', serial: 1, refresh: 1, retry: 1, expire: 1, minimum: ttl } });

const T0 = 1_000_000;
const ttl = (r: dnsPacket.Answer) => (r as { ttl?: number }).ttl;
const key = (q: Buffer) => cacheKey(q)!;

describe('cacheKey', () => {
  it('ignores the ID and the letter case of the name (ASCII only)', () => {
    assert.equal(cacheKey(query({ id: 1 })), cacheKey(query({ id: 999, name: 'EXAMPLE.Test' })));
    assert.notEqual(cacheKey(query({ name: 'example.test' })), cacheKey(query({ name: 'example.tesu' })));
  });

  it('separates type, class-shaping flags and EDNS size / DO bit', () => {
    const k = new Set([
      cacheKey(query()),
      cacheKey(query({ type: 'AAAA' })),
      cacheKey(query({ rd: false })),
      cacheKey(query({ cd: true })),
      cacheKey(query({ edns: { size: 1232 } })),
      cacheKey(query({ edns: { size: 4096 } })),
      cacheKey(query({ edns: { size: 1232, do: true } })),
    ]);
    assert.equal(k.size, 7);
  });

  it('does not fold type bytes that look like capital letters (type 65 HTTPS vs 97)', () => {
    const a = query({ type: 'HTTPS' as dnsPacket.RecordType });
    const b = Buffer.from(a);
    b.writeUInt16BE(97, b.length - 4);
    assert.notEqual(cacheKey(a), cacheKey(b));
  });

  it('refuses to key what must not be shared: EDNS options (cookies), two questions, junk', () => {
    assert.equal(cacheKey(query({ edns: { size: 1232, options: [{ code: 10, data: Buffer.alloc(8, 7) } as unknown as dnsPacket.PacketOpt] } })), undefined);
    const two = dnsPacket.encode({ id: 1, type: 'query', questions: [{ type: 'A', name: 'a.test' }, { type: 'A', name: 'b.test' }] });
    assert.equal(cacheKey(two), undefined);
    assert.equal(cacheKey(Buffer.alloc(5)), undefined);
    const cut = query().subarray(0, 20);
    assert.equal(cacheKey(cut), undefined);
  });
});

describe('DnsCache', () => {
  const cache = () => new DnsCache({ maxEntries: 100, maxTtl: 3600 });

  it('serves a stored answer with the asker\'s ID and question case, TTLs counted down', () => {
    const c = cache();
    c.put(key(query()), answer(), T0);
    const q = query({ id: 4242, name: 'ExAmple.TEST' });
    const hit = c.get(key(q), q, T0 + 10_500)!;
    assert.ok(hit);
    const a = dnsPacket.decode(hit.wire);
    assert.equal(a.id, 4242);
    assert.equal(a.questions![0].name, 'ExAmple.TEST');
    assert.equal(hit.age, 10);
    assert.equal(ttl(a.answers![0]), 290);
    assert.equal((a.answers![0] as { data: string }).data, '203.0.113.10');
    assert.equal(ttl(hit.packet().answers![0]), 300, 'the decoded form keeps the stored TTLs');
    assert.deepEqual([c.hits, c.misses], [1, 0]);
  });

  it('expires at the smallest answer or authority TTL; additional records do not bound it', () => {
    const c = cache();
    const a = answer({
      answers: [{ type: 'CNAME', name: 'example.test', ttl: 100, data: 'edge.test' }, { type: 'A', name: 'edge.test', ttl: 30, data: '203.0.113.10' }],
      additionals: [{ type: 'A', name: 'ns.test', ttl: 1, data: '203.0.113.53' }],
    });
    c.put(key(query()), a, T0);
    assert.ok(c.get(key(query()), query(), T0 + 29_999));
    assert.equal(c.get(key(query()), query(), T0 + 30_000), undefined);
    assert.equal(c.size, 0, 'an expired entry is dropped when met');
  });

  it('caps the lifetime at maxTtl', () => {
    const c = new DnsCache({ maxEntries: 10, maxTtl: 5 });
    c.put(key(query()), answer(), T0);
    assert.ok(c.get(key(query()), query(), T0 + 4_999));
    assert.equal(c.get(key(query()), query(), T0 + 5_000), undefined);
  });

  it('keeps negative answers by their SOA, at most 60 s; without an SOA not at all', () => {
    const c = cache();
    c.put(key(query({ name: 'gone.test' })), answer({ name: 'gone.test', rcode: 3, answers: [], authorities: [soa(600)] }), T0);
    assert.ok(c.get(key(query({ name: 'gone.test' })), query({ name: 'gone.test' }), T0 + 59_000));
    assert.equal(c.get(key(query({ name: 'gone.test' })), query({ name: 'gone.test' }), T0 + 60_000), undefined);
    c.put(key(query({ name: 'nosoa.test' })), answer({ name: 'nosoa.test', rcode: 3, answers: [] }), T0);
    assert.equal(c.size, 0);
  });

  it('keeps an answer only under the question it answers (a spoofed or broken answer for another name stays out)', () => {
    const c = cache();
    c.put(key(query({ name: 'example.test' })), answer({ name: 'evil.test' }), T0);
    c.put(key(query({ name: 'example.test', type: 'AAAA' })), answer({ name: 'example.test' }), T0);
    assert.equal(c.size, 0);
    c.put(key(query({ name: 'EXAMPLE.test' })), answer({ name: 'example.TEST' }), T0);
    assert.equal(c.size, 1, 'letter case does not matter');
    const update = query();
    update[2] |= 5 << 3; // opcode UPDATE
    assert.equal(cacheKey(update), undefined);
  });

  it('does not keep failures, truncated answers, zero TTLs or queries', () => {
    const c = cache();
    c.put(key(query()), answer({ rcode: 2 }), T0);
    c.put(key(query()), answer({ rcode: 5 }), T0);
    c.put(key(query()), answer({ tc: true }), T0);
    c.put(key(query()), answer({ answers: [{ type: 'A', name: 'example.test', ttl: 0, data: '203.0.113.10' }] }), T0);
    c.put(key(query()), query(), T0);
    c.put(key(query()), Buffer.alloc(30), T0);
    assert.equal(c.size, 0);
  });

  it('leaves the OPT record\'s TTL field (extended rcode and flags) alone', () => {
    const c = cache();
    const opt = { type: 'OPT', name: '.', udpPayloadSize: 1232, flags: dnsPacket.DNSSEC_OK, options: [] } as unknown as dnsPacket.Answer;
    c.put(key(query()), answer({ additionals: [opt] }), T0);
    const hit = c.get(key(query()), query(), T0 + 100_000)!;
    const a = dnsPacket.decode(hit.wire);
    const o = a.additionals!.find((r) => r.type === 'OPT') as unknown as { flags: number };
    assert.equal(o.flags & dnsPacket.DNSSEC_OK, dnsPacket.DNSSEC_OK);
    assert.equal(ttl(a.answers![0]), 200);
  });

  it('past maxEntries evicts the oldest stored tenth; a refreshed entry moves to the back', () => {
    const c = new DnsCache({ maxEntries: 10, maxTtl: 3600 });
    const q = (i: number) => query({ name: `n${i}.test` });
    for (let i = 0; i < 10; i++) c.put(key(q(i)), answer({ name: `n${i}.test` }), T0 + i);
    c.put(key(q(0)), answer({ name: 'n0.test' }), T0 + 10); // refreshed: now the newest
    assert.equal(c.size, 10);
    c.put(key(q(10)), answer({ name: 'n10.test' }), T0 + 11);
    assert.equal(c.size, 9);
    const present = Array.from({ length: 11 }, (_, i) => i).filter((i) => c.get(key(q(i)), q(i), T0 + 12));
    assert.deepEqual(present, [0, 3, 4, 5, 6, 7, 8, 9, 10]);
  });

  it('maxEntries 0 keeps nothing', () => {
    const c = new DnsCache({ maxEntries: 0, maxTtl: 3600 });
    c.put(key(query()), answer(), T0);
    assert.equal(c.size, 0);
  });
});

describe('sameQuestion (what the forwarder accepts from an upstream)', () => {
  it('the question asked, in any ASCII letter case', () => {
    assert.equal(sameQuestion(query(), answer()), true);
    assert.equal(sameQuestion(query({ name: 'ExAmPlE.TeSt' }), answer()), true);
  });

  it('not another name, type or number of questions, nor a truncated message', () => {
    assert.equal(sameQuestion(query(), answer({ name: 'evil.test' })), false);
    assert.equal(sameQuestion(query({ name: 'example.tesu' }), answer()), false);
    assert.equal(sameQuestion(query({ type: 'AAAA' }), answer()), false);
    const none = Buffer.from(answer());
    none.writeUInt16BE(0, 4);
    assert.equal(sameQuestion(query(), none), false);
    assert.equal(sameQuestion(query(), answer().subarray(0, 20)), false);
  });
});
