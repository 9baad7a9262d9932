import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import dnsPacket from 'dns-packet';
import { MAX_UDP_PAYLOAD, RCODE_FORMERR, RCODE_REFUSED, upstreamQuery, wireName } from '../../src/dns/upstream-query.js';
import { cacheKey } from '../../src/dns/cache.js';

// Every query is built with dns-packet or byte by byte; what comes out is read back with
// dns-packet and searched for the bytes a sandbox tried to smuggle.

type Q = { id?: number; name?: string; flags?: number; answers?: dnsPacket.Answer[]; authorities?: dnsPacket.Answer[]; additionals?: dnsPacket.Answer[] };
function query(o: Q = {}): Buffer {
  return dnsPacket.encode({
    type: 'query', id: o.id ?? 4242, flags: o.flags ?? dnsPacket.RECURSION_DESIRED,
    questions: [{ type: 'A', name: o.name ?? 'pypi.org' }],
    answers: o.answers ?? [], authorities: o.authorities ?? [], additionals: o.additionals ?? [],
  });
}
const opt = (udpPayloadSize: number, o: { do?: boolean; options?: { code: number; data: Buffer }[] } = {}): dnsPacket.Answer =>
  ({ type: 'OPT', name: '.', udpPayloadSize, flags: o.do ? dnsPacket.DNSSEC_OK : 0, options: o.options ?? [] }) as unknown as dnsPacket.Answer;
const TXT = (name: string, data: string): dnsPacket.Answer => ({ type: 'TXT', name, ttl: 0, data });

function rebuilt(q: Buffer): Buffer {
  const u = upstreamQuery(q);
  assert.ok('wire' in u, `expected a rebuilt query, got ${JSON.stringify(u)}`);
  return u.wire;
}
const refusal = (q: Buffer) => {
  const u = upstreamQuery(q);
  assert.ok('rcode' in u, 'expected a refusal');
  return u;
};
const optOf = (wire: Buffer) => dnsPacket.decode(wire).additionals?.find((r) => r.type === 'OPT') as { udpPayloadSize: number; flags: number; options: unknown[] } | undefined;

describe('upstreamQuery: what goes upstream', () => {
  it('a plain stub query comes out byte for byte, in a new buffer', () => {
    const q = query({ name: 'PyPI.org' });
    const w = rebuilt(q);
    assert.ok(w.equals(q));
    assert.notEqual(w.buffer, q.buffer);
  });

  it('keeps only RD and CD of the header flags; the ID stays for the forwarder to replace', () => {
    const all = 0xffff & ~0x8000 & ~0x7800 & ~0x000f; // every bit but QR, opcode and rcode
    const w = rebuilt(query({ flags: all, id: 7 }));
    assert.equal(w.readUInt16BE(0), 7);
    assert.equal(w.readUInt16BE(2), dnsPacket.RECURSION_DESIRED | dnsPacket.CHECKING_DISABLED);
    assert.equal(rebuilt(query({ flags: dnsPacket.AUTHENTIC_DATA | dnsPacket.TRUNCATED_RESPONSE })).readUInt16BE(2), 0);
  });

  it('copies the question as asked (letter case kept) and nothing after it without EDNS', () => {
    const q = Buffer.concat([query({ name: 'Files.PyPI.org' }), Buffer.from('trailing-secret')]);
    const w = rebuilt(q);
    assert.deepEqual(dnsPacket.decode(w).questions, [{ name: 'Files.PyPI.org', type: 'A', class: 'IN' }]);
    assert.equal(w.length, wireName(q)!.end + 4);
    assert.ok(!w.includes('secret'));
  });

  it('EDNS: only the payload size (at most 1232, at least 512) and the DO bit; options, version and extended rcode go', () => {
    const options = [{ code: 10, data: Buffer.from('cookie-secret') }, { code: 65001, data: Buffer.from('option-secret') }];
    const w = rebuilt(query({ additionals: [opt(4096, { do: true, options })] }));
    assert.ok(!w.includes('secret'));
    assert.deepEqual(optOf(w), { ...optOf(w)!, udpPayloadSize: MAX_UDP_PAYLOAD, options: [] });
    assert.equal(optOf(w)!.flags, dnsPacket.DNSSEC_OK);
    assert.equal(w.readUInt16BE(10), 1);
    assert.equal(optOf(rebuilt(query({ additionals: [opt(1000)] })))!.udpPayloadSize, 1000);
    assert.equal(optOf(rebuilt(query({ additionals: [opt(100)] })))!.udpPayloadSize, 512);
    assert.equal(optOf(rebuilt(query({ additionals: [opt(1232)] })))!.flags, 0, 'no DO asked, none sent');
    // Version 1 and an extended rcode in the OPT TTL field: zeroed.
    const q = query({ additionals: [opt(1232)] });
    q.writeUInt32BE(0x7f018000, q.length - 6);
    const v = rebuilt(q);
    assert.equal(v.readUInt32BE(v.length - 6), 0x00008000);
  });

  it('additional records other than OPT are dropped, wherever the OPT is', () => {
    const w = rebuilt(query({ additionals: [TXT('a.pypi.org', 'additional-secret'), opt(1232), TXT('b.pypi.org', 'more-secret')] }));
    assert.ok(!w.includes('secret'));
    assert.deepEqual(dnsPacket.decode(w).additionals!.map((r) => r.type), ['OPT']);
    const none = rebuilt(query({ additionals: [TXT('a.pypi.org', 'additional-secret')] }));
    assert.equal(none.readUInt16BE(10), 0);
    assert.ok(!none.includes('secret'));
  });

  it('a query of 4 KiB comes out at the size of its question and OPT', () => {
    const q = query({ additionals: [TXT('x.pypi.org', 'z'.repeat(250)), TXT('y.pypi.org', 'z'.repeat(250)), ...Array.from({ length: 14 }, () => TXT('w.pypi.org', 'z'.repeat(250))), opt(1232)] });
    assert.ok(q.length > 4000);
    assert.equal(rebuilt(q).length, 12 + 10 + 4 + 11);
  });

  it('the rebuilt query has a cache key even when the asked one had EDNS options, the same for every size above the clamp', () => {
    const withOptions = query({ additionals: [opt(4096, { options: [{ code: 10, data: Buffer.alloc(8, 1) }] })] });
    assert.equal(cacheKey(withOptions), undefined, 'as asked: not shareable');
    assert.equal(cacheKey(rebuilt(withOptions)), cacheKey(rebuilt(query({ additionals: [opt(1232)] }))));
  });
});

describe('upstreamQuery: what is refused', () => {
  const withOpcode = (opcode: number) => {
    const q = query();
    q[2] = (q[2] & 0x87) | (opcode << 3);
    return q;
  };

  it('any opcode but QUERY: REFUSED', () => {
    for (const opcode of [1, 2, 4, 5, 6, 15]) assert.deepEqual(refusal(withOpcode(opcode)), { rcode: RCODE_REFUSED, reason: `opcode ${opcode}: only QUERY is forwarded` });
  });

  it('answer or authority records: FORMERR', () => {
    assert.equal(refusal(query({ answers: [TXT('pypi.org', 'secret')] })).rcode, RCODE_FORMERR);
    assert.equal(refusal(query({ authorities: [TXT('pypi.org', 'secret')] })).rcode, RCODE_FORMERR);
  });

  it('not exactly one question, a response, a question with a compression pointer, a truncated message: FORMERR', () => {
    const two = dnsPacket.encode({ type: 'query', id: 1, questions: [{ type: 'A', name: 'a.org' }, { type: 'A', name: 'b.org' }] });
    const none = dnsPacket.encode({ type: 'query', id: 1, questions: [] });
    const response = dnsPacket.encode({ type: 'response', id: 1, questions: [{ type: 'A', name: 'a.org' }] });
    const pointer = Buffer.from([0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1]);
    const cut = query().subarray(0, 20);
    for (const q of [two, none, response, pointer, cut, Buffer.alloc(5)]) assert.equal(refusal(q).rcode, RCODE_FORMERR, q.toString('hex'));
  });

  it('two OPT records, an OPT not at the root, or an additional record running past the end: FORMERR', () => {
    assert.equal(refusal(query({ additionals: [opt(1232), opt(512)] })).rcode, RCODE_FORMERR);
    // An OPT owned by "a." (dns-packet will not encode one): name, type 41, size 1232, TTL 0, no data.
    const notRoot = Buffer.concat([query(), Buffer.from([1, 0x61, 0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0])]);
    notRoot.writeUInt16BE(1, 10);
    assert.equal(refusal(notRoot).rcode, RCODE_FORMERR);
    const q = query({ additionals: [TXT('a.pypi.org', 'secret')] });
    assert.equal(refusal(q.subarray(0, q.length - 3)).rcode, RCODE_FORMERR);
  });
});
