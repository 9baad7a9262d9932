// The first-flight parser against real ClientHellos (written by Node's own TLS client into a
// stream, no socket), hand-built ones for what Node never sends (two records, two SNIs, bad
// names, padding), HTTP/1.x heads the ways servers read them, and a fuzz: it never throws.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import tls from 'node:tls';
import { Duplex } from 'node:stream';
import { FIRST_FLIGHT_MAX, FirstFlight, nameOfFlight, parseFirstFlight } from '../../src/core/first-flight.js';
import { intIn, prng } from './prng.js';

/** The first bytes Node's TLS client writes: its ClientHello, taken from a stream that goes nowhere. */
function nodeHello(o: tls.ConnectionOptions): Promise<Buffer> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let s: tls.TLSSocket | undefined = undefined;
    const wire = new Duplex({
      read() {},
      write(c: Buffer, _e, cb) {
        chunks.push(c);
        cb();
        setImmediate(() => {
          s?.destroy();
          resolve(Buffer.concat(chunks));
        });
      },
    });
    s = tls.connect({ ...o, socket: wire });
    s.on('error', () => {});
  });
}

const u16 = (n: number): Buffer => Buffer.from([n >> 8, n & 0xff]);
const u24 = (n: number): Buffer => Buffer.from([n >> 16, (n >> 8) & 0xff, n & 0xff]);
const vec16 = (...parts: Buffer[]): Buffer => Buffer.concat([u16(Buffer.concat(parts).length), ...parts]);
const ext = (type: number, data: Buffer): Buffer => Buffer.concat([u16(type), vec16(data)]);
/** A server_name extension listing (name_type, name) entries. */
const sni = (...entries: [number, string][]): Buffer =>
  ext(0, vec16(...entries.map(([t, n]) => Buffer.concat([Buffer.from([t]), vec16(Buffer.from(n, 'latin1'))]))));
const padding = (n: number): Buffer => ext(21, Buffer.alloc(n));

/** A ClientHello handshake message (type, length, body) with these extensions. */
function helloMessage(exts: Buffer[] | undefined): Buffer {
  const body = Buffer.concat([
    Buffer.from([3, 3]),
    Buffer.alloc(32, 7), // random
    Buffer.from([32]), Buffer.alloc(32, 9), // session_id
    vec16(Buffer.from([0x13, 0x01, 0x13, 0x02, 0xc0, 0x2f])), // cipher_suites
    Buffer.from([1, 0]), // compression_methods: null
    ...(exts ? [vec16(...exts)] : []),
  ]);
  return Buffer.concat([Buffer.from([1]), u24(body.length), body]);
}

/** Handshake bytes framed as TLS records of at most these sizes (the last size repeats). */
function records(msg: Buffer, sizes: number[] = [1 << 14]): Buffer {
  const out: Buffer[] = [];
  for (let off = 0, i = 0; off < msg.length; i++) {
    const n = Math.min(sizes[Math.min(i, sizes.length - 1)], msg.length - off);
    out.push(Buffer.from([0x16, 3, 1]), u16(n), msg.subarray(off, off + n));
    off += n;
  }
  return Buffer.concat(out);
}
const hello = (...exts: Buffer[]): Buffer => records(helloMessage(exts));

/** Feeds `b` in pieces of `size` bytes, as segments arrive: 'more' until the last piece, then the answer. */
function feed(b: Buffer, size: number): FirstFlight {
  for (let end = size; end < b.length; end += size) {
    const f = parseFirstFlight(b.subarray(0, end));
    assert.equal(f.kind, 'more', `after ${end} of ${b.length} bytes: ${JSON.stringify(f)}`);
  }
  return parseFirstFlight(b);
}

const malformed = (b: Buffer | string, why?: RegExp): void => {
  const f = parseFirstFlight(typeof b === 'string' ? Buffer.from(b, 'latin1') : b);
  assert.equal(f.kind, 'malformed', `${JSON.stringify(String(b).slice(0, 60))}: ${JSON.stringify(f)}`);
  if (why) assert.match((f as { why: string }).why, why);
};
const http = (s: string): FirstFlight => parseFirstFlight(Buffer.from(s, 'latin1'));

describe('first flight: TLS', () => {
  it("a real ClientHello's SNI, lowercased", async () => {
    const b = await nodeHello({ servername: 'API.Example.test' });
    assert.deepEqual(parseFirstFlight(b), { kind: 'tls', name: 'api.example.test', ech: false });
    assert.equal(nameOfFlight(parseFirstFlight(b)), 'api.example.test');
  });

  it('no SNI when the client connects to an address (Node omits it for IP hosts)', async () => {
    const b = await nodeHello({ host: '127.0.0.1' });
    assert.deepEqual(parseFirstFlight(b), { kind: 'tls', name: undefined, ech: false });
    assert.equal(nameOfFlight(parseFirstFlight(b)), undefined);
  });

  it('a 2.4 KB real ClientHello (long ALPN list), fed in every split: more until whole, then the same answer', async () => {
    const b = await nodeHello({ servername: 'big.example.test', ALPNProtocols: Array.from({ length: 10 }, (_, i) => `${'x'.repeat(200)}${i}`) });
    assert.ok(b.length > 2000, `${b.length} bytes`);
    const want = { kind: 'tls', name: 'big.example.test', ech: false };
    for (let end = 0; end < b.length; end++) assert.deepEqual(parseFirstFlight(b.subarray(0, end)), { kind: 'more' }, `prefix of ${end}`);
    for (const size of [1, 2, 5, 7, 100, 1448, 1460]) assert.deepEqual(feed(b, size), want, `pieces of ${size}`);
    assert.deepEqual(parseFirstFlight(b), want);
  });

  it('a hand-padded 2 KB ClientHello, fed a byte at a time', () => {
    const b = hello(sni([0, 'pad.example.test']), padding(1900));
    assert.ok(b.length > 2000);
    assert.deepEqual(feed(b, 1), { kind: 'tls', name: 'pad.example.test', ech: false });
  });

  it('a ClientHello over two and over many records, split at every byte', async () => {
    const msg = (await nodeHello({ servername: 'split.example.test' })).subarray(5);
    const want = { kind: 'tls', name: 'split.example.test', ech: false };
    for (const sizes of [[100], [msg.length - 1], [4], [1], [3, 1000], [2, 1, 50]]) {
      const b = records(msg, sizes);
      assert.ok(b.length > msg.length + 5);
      assert.deepEqual(feed(b, 1), want, `records of ${sizes}`);
    }
  });

  it('bytes after the ClientHello (early data, more records) do not change the answer', async () => {
    const b = await nodeHello({ servername: 'a.example.test' });
    const after = Buffer.concat([b, Buffer.from([0x17, 3, 3, 0, 2, 1, 2]), Buffer.alloc(FIRST_FLIGHT_MAX)]);
    assert.deepEqual(parseFirstFlight(after), { kind: 'tls', name: 'a.example.test', ech: false });
  });

  it('names ECH (0xfe0d) and keeps the outer SNI', () => {
    assert.deepEqual(parseFirstFlight(hello(sni([0, 'public.example.test']), ext(0xfe0d, Buffer.alloc(40, 1)))), { kind: 'tls', name: 'public.example.test', ech: true });
    assert.deepEqual(parseFirstFlight(hello(ext(0xfe0d, Buffer.alloc(40, 1)))), { kind: 'tls', name: undefined, ech: true });
  });

  it('SNI details: trailing dot off, an equal second host_name and other name types tolerated, no extensions at all', () => {
    assert.equal(nameOfFlight(parseFirstFlight(hello(sni([0, 'a.example.test.'])))), 'a.example.test');
    assert.equal(nameOfFlight(parseFirstFlight(hello(sni([0, 'under_score.test'])))), 'under_score.test');
    assert.equal(nameOfFlight(parseFirstFlight(hello(sni([0, 'a.test'], [0, 'A.test.'])))), 'a.test');
    assert.equal(nameOfFlight(parseFirstFlight(hello(sni([1, 'whatever!'], [0, 'a.test'])))), 'a.test');
    assert.deepEqual(parseFirstFlight(hello()), { kind: 'tls', name: undefined, ech: false });
    assert.deepEqual(parseFirstFlight(records(helloMessage(undefined))), { kind: 'tls', name: undefined, ech: false });
  });

  it('malformed: two SNI extensions (even equal), two different host_names, bad bytes or labels in the name', () => {
    malformed(hello(sni([0, 'a.test']), sni([0, 'a.test'])), /two server_name extensions/);
    malformed(hello(sni([0, 'a.test']), padding(3), sni([0, 'b.test'])), /two server_name extensions/);
    malformed(hello(sni([0, 'a.test'], [0, 'b.test'])), /two SNI host_names: a.test and b.test/);
    for (const n of ['a.test\0.evil', 'a b.test', 'a.test/', 'ä.test', 'a.test:443', '*.test']) malformed(hello(sni([0, n])), /outside/);
    for (const n of ['.', 'a..test', '.a.test', 'a.test..']) malformed(hello(sni([0, n])), /empty label/);
    malformed(hello(ext(0, vec16())), /server_name_list length 0/);
    malformed(hello(sni([0, ''])), /server name length 0/);
  });

  it('malformed: lengths that overrun, truncated fields, trailing bytes', () => {
    const good = helloMessage([sni([0, 'a.test'])]);
    // The handshake message is whole but a field inside claims more than it holds.
    const at = (msg: Buffer, off: number, v: number[]): Buffer => {
      const m = Buffer.from(msg);
      Buffer.from(v).copy(m, off);
      return records(m);
    };
    malformed(at(good, 4 + 2 + 32, [33]), /session_id length 33/);
    malformed(at(good, 4 + 2 + 32 + 33, [0xff, 0xfe]), /cipher_suites length 65534 overruns/);
    malformed(at(good, 4 + 2 + 32 + 33, [0, 3]), /odd length|compression_methods/);
    malformed(at(good, 4 + 2 + 32 + 33 + 8, [0]), /compression_methods length 0/);
    const extStart = 4 + 2 + 32 + 33 + 8 + 2;
    malformed(at(good, extStart, [0x10, 0]), /extensions length 4096 overruns/);
    malformed(at(good, extStart + 2 + 2, [0, 99]), /extension 0 length 99 overruns/);
    malformed(at(good, extStart + 2 + 4, [0, 99]), /server_name_list length 99 overruns/);
    malformed(at(good, extStart + 2 + 4 + 2 + 1, [0, 99]), /server name length 99 overruns/);
    // The handshake length is shorter than its fields: they run past the message.
    const short = Buffer.from(good);
    short.writeUIntBE(good.length - 4 - 3, 1, 3);
    malformed(records(short.subarray(0, good.length - 3)), /truncated|overruns/);
    // The handshake length is longer: bytes left over after the extensions.
    const long = Buffer.concat([good, Buffer.from([0, 0])]);
    long.writeUIntBE(good.length - 4 + 2, 1, 3);
    malformed(records(long), /2 bytes after the extensions/);
  });

  it('malformed: record and handshake framing', () => {
    malformed(Buffer.from([0x16, 3, 1, 0, 0]), /empty handshake record/);
    malformed(Buffer.from([0x16, 3, 1, 0x40, 1]), /record of 16385 bytes/);
    malformed(Buffer.from([0x16, 3, 1, 0, 4, 2, 0, 0, 0]), /handshake type 2/);
    malformed(Buffer.from([0x16, 3, 1, 0, 4, 1, 0, 0x40, 0]), /ClientHello of 16384 bytes/);
    const msg = helloMessage([sni([0, 'a.test'])]);
    const two = records(msg, [10]);
    const ccs = Buffer.concat([two.subarray(0, 15), Buffer.from([0x14, 3, 3, 0, 1, 1]), two.subarray(15)]);
    malformed(ccs, /record type 20 before the ClientHello ended/);
    const v2 = Buffer.from(two);
    v2[15 + 1] = 2;
    malformed(v2, /record version 2/);
    const legacy = Buffer.from(msg);
    legacy[4] = 2;
    malformed(records(legacy), /legacy_version major 2/);
  });

  it('not TLS: 0x16 without major version 3; SSLv2-style hello', () => {
    assert.deepEqual(parseFirstFlight(Buffer.from([0x16])), { kind: 'more' });
    assert.deepEqual(parseFirstFlight(Buffer.from([0x16, 2, 0, 0, 1])), { kind: 'other' });
    assert.deepEqual(parseFirstFlight(Buffer.from([0x80, 0x2e, 1, 3, 1])), { kind: 'other' });
  });

  it('a ClientHello that never completes within FIRST_FLIGHT_MAX is malformed, up to then more', () => {
    // Record lengths of 1: five bytes of framing per byte of message, so the whole would exceed the bound.
    const b = records(helloMessage([sni([0, 'a.test']), padding(3000)]), [1]);
    assert.ok(b.length > FIRST_FLIGHT_MAX);
    assert.equal(parseFirstFlight(b.subarray(0, FIRST_FLIGHT_MAX - 1)).kind, 'more');
    malformed(b.subarray(0, FIRST_FLIGHT_MAX), /no decision within 16389 bytes/);
    malformed(b, /no decision within/);
  });
});

describe('first flight: HTTP/1.x', () => {
  it('a GET: Host lowercased, port stripped, whitespace around the value tolerated', () => {
    assert.deepEqual(http('GET / HTTP/1.1\r\nHost: example.test\r\n\r\n'), { kind: 'http', name: 'example.test' });
    assert.deepEqual(http('GET /x?y HTTP/1.1\r\nUser-Agent: t\r\nhOsT:\t WWW.Example.TEST:8080 \t\r\nAccept: */*\r\n\r\n'), { kind: 'http', name: 'www.example.test' });
    assert.deepEqual(http('HEAD / HTTP/1.0\r\nHost: a.test.\r\n\r\n'), { kind: 'http', name: 'a.test' });
    assert.deepEqual(http('POST /p HTTP/1.1\r\nHost: [2001:DB8::1]:443\r\nContent-Length: 3\r\n\r\nabc'), { kind: 'http', name: '2001:db8::1' });
    assert.deepEqual(http('GET / HTTP/1.1\r\nHost: 203.0.113.20\r\n\r\n'), { kind: 'http', name: '203.0.113.20' });
    assert.equal(nameOfFlight(http('DELETE / HTTP/1.1\r\nHost: d.test\r\n\r\n')), 'd.test');
  });

  it('every method, and no Host at all (HTTP/1.0) or an empty one', () => {
    for (const m of ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'OPTIONS', 'PATCH', 'TRACE']) assert.deepEqual(http(`${m} / HTTP/1.1\r\nHost: m.test\r\n\r\n`), { kind: 'http', name: 'm.test' }, m);
    assert.deepEqual(http('GET / HTTP/1.0\r\n\r\n'), { kind: 'http', name: undefined });
    assert.deepEqual(http('GET / HTTP/1.1\r\nAccept: */*\r\n\r\n'), { kind: 'http', name: undefined });
    assert.deepEqual(http('GET / HTTP/1.1\r\nHost:\r\n\r\n'), { kind: 'http', name: undefined });
    assert.deepEqual(http('OPTIONS * HTTP/1.1\r\nHost: o.test\r\n\r\n'), { kind: 'http', name: 'o.test' });
  });

  it('decides only at the end of the head: a partial head is more, whatever it holds', () => {
    const head = 'GET / HTTP/1.1\r\nHost: a.test\r\nAccept: */*\r\n\r\n';
    for (let end = 0; end < head.length; end++) assert.deepEqual(http(head.slice(0, end)), { kind: 'more' }, JSON.stringify(head.slice(0, end)));
    assert.deepEqual(http(head), { kind: 'http', name: 'a.test' });
    for (const p of ['G', 'GE', 'GET', 'P', 'PU', 'OPTIONS', 'CONNEC', '\r', '\r\n', '\r\n\r\nGE']) assert.deepEqual(http(p), { kind: 'more' }, p);
  });

  it('two Host headers, even equal ones, are malformed', () => {
    malformed('GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n', /2 Host headers/);
    malformed('GET / HTTP/1.1\r\nHost: a.test\r\nX: y\r\nhost: a.test\r\n\r\n', /2 Host headers/);
    // The second arrives in a later segment: the first alone never decides.
    assert.deepEqual(http('GET / HTTP/1.1\r\nHost: a.test\r\n'), { kind: 'more' });
  });

  it('pipelining: the first request decides, later ones are ignored', () => {
    assert.deepEqual(http('GET / HTTP/1.1\r\nHost: a.test\r\n\r\nGET / HTTP/1.1\r\nHost: evil.test\r\n\r\n'), { kind: 'http', name: 'a.test' });
    assert.deepEqual(http('GET / HTTP/1.1\r\nHost: a.test\r\n\r\nGET / HTTP/1.1\r\nHost: evil.test\r\nHost: x\r\n\r\n'), { kind: 'http', name: 'a.test' });
    assert.deepEqual(http('GET / HTTP/1.1\r\nHost: a.test\r\n\r\nGARBAGE'), { kind: 'http', name: 'a.test' });
  });

  it('absolute-form: the target names the host; a Host that differs is malformed', () => {
    assert.deepEqual(http('GET http://a.example/ HTTP/1.1\r\n\r\n'), { kind: 'http', name: 'a.example' });
    assert.deepEqual(http('GET http://A.example:8080/x HTTP/1.1\r\nHost: a.example\r\n\r\n'), { kind: 'http', name: 'a.example' });
    malformed('GET http://a.example/ HTTP/1.1\r\nHost: b.example\r\n\r\n', /request-target names a.example but Host names b.example/);
    malformed('GET http://a.example/ HTTP/1.1\r\nHost:\r\n\r\n', /Host names \(empty\)/);
    malformed('GET http://user@a.example/ HTTP/1.1\r\n\r\n', /userinfo/);
    malformed('GET http:///x HTTP/1.1\r\n\r\n', /without a host/);
    malformed('GET foo HTTP/1.1\r\nHost: a.test\r\n\r\n', /neither origin- nor absolute-form/);
  });

  it("CONNECT: the target's host", () => {
    assert.deepEqual(http('CONNECT api.example.test:443 HTTP/1.1\r\nHost: api.example.test:443\r\n\r\n'), { kind: 'http', name: 'api.example.test' });
    assert.deepEqual(http('CONNECT [::1]:443 HTTP/1.1\r\n\r\n'), { kind: 'http', name: '::1' });
    malformed('CONNECT a.test:443 HTTP/1.1\r\nHost: b.test:443\r\n\r\n', /names a.test but Host names b.test/);
    malformed('CONNECT :443 HTTP/1.1\r\n\r\n', /outside|empty/);
  });

  it('leading empty lines tolerated (CRLF or LF); bare-LF lines read as servers do', () => {
    assert.deepEqual(http('\r\n\r\nGET / HTTP/1.1\r\nHost: a.test\r\n\r\n'), { kind: 'http', name: 'a.test' });
    assert.deepEqual(http('\nGET / HTTP/1.1\nHost: a.test\n\n'), { kind: 'http', name: 'a.test' });
    assert.deepEqual(http('GET / HTTP/1.1\nHost: a.test\r\n\n'), { kind: 'http', name: 'a.test' });
    malformed('GET / HTTP/1.1\nHost: a.test\nHost: b.test\n\n', /2 Host headers/);
  });

  it('malformed: obs-fold, space before the colon, bare CR, control bytes, bad Host values, odd request lines', () => {
    malformed('GET / HTTP/1.1\r\nHost: a.test\r\n b.test\r\n\r\n', /obs-fold/);
    malformed('GET / HTTP/1.1\r\nX-A: 1\r\n\tHost: b.test\r\n\r\n', /obs-fold/);
    malformed('GET / HTTP/1.1\r\nHost : b.test\r\n\r\n', /header name/);
    malformed('GET / HTTP/1.1\r\nHost: a.test\rHost: b.test\r\n\r\n', /bare CR/);
    malformed('GET / HTTP/1.1\r\nX: a\0b\r\nHost: a.test\r\n\r\n', /control character/);
    malformed('GET / HTTP/1.1\r\nNoColon\r\n\r\n', /without a colon/);
    for (const h of ['a.test b.test', 'a.test,b.test', 'a.test:80:80', 'a.test:http', '[::1', '[zz]', 'a..test', 'a.test/x']) malformed(`GET / HTTP/1.1\r\nHost: ${h}\r\n\r\n`);
    malformed('GET  / HTTP/1.1\r\nHost: a.test\r\n\r\n', /request line/);
    malformed('GET / HTTP/2.0\r\nHost: a.test\r\n\r\n', /request line/);
    malformed('GET /\r\n\r\n', /request line/);
  });

  it('a head that does not end within FIRST_FLIGHT_MAX is malformed', () => {
    const b = Buffer.from(`GET / HTTP/1.1\r\nHost: a.test\r\nX: ${'y'.repeat(FIRST_FLIGHT_MAX)}`);
    assert.equal(parseFirstFlight(b.subarray(0, FIRST_FLIGHT_MAX - 1)).kind, 'more');
    malformed(b, /no decision within/);
  });
});

describe('first flight: neither', () => {
  it('SSH, h2c prior knowledge, lowercase methods, other protocols are other; nothing yet is more', () => {
    for (const s of ['SSH-2.0-x\r\n', 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'get / HTTP/1.1\r\n\r\n', 'GETS / HTTP/1.1\r\n\r\n', 'EHLO x\r\n', '\x00\x00\x00\x01']) assert.deepEqual(http(s), { kind: 'other' }, JSON.stringify(s));
    assert.deepEqual(parseFirstFlight(Buffer.alloc(0)), { kind: 'more' });
    assert.equal(nameOfFlight({ kind: 'other' }), undefined);
    assert.equal(nameOfFlight({ kind: 'malformed', why: 'x' }), undefined);
  });
});

describe('first flight: never throws', () => {
  const KINDS = new Set(['more', 'tls', 'http', 'other', 'malformed']);
  const sane = (f: FirstFlight, what: string): void => {
    assert.ok(KINDS.has(f.kind), what);
    const n = nameOfFlight(f);
    if (n !== undefined) assert.match(n, /^[a-z0-9._:-]+$/, what);
  };

  it('2,000 random buffers, some with a TLS or HTTP start', () => {
    const rnd = prng(0x5eed);
    const starts = [Buffer.alloc(0), Buffer.from([0x16, 3, 1]), Buffer.from('GET / HTTP/1.1\r\nHost: '), Buffer.from('CONNECT '), Buffer.from('\r\n')];
    for (let i = 0; i < 2000; i++) {
      const body = Buffer.from(Array.from({ length: intIn(rnd, 0, i % 10 === 0 ? 20_000 : 600) }, () => intIn(rnd, 0, 255)));
      const b = Buffer.concat([starts[i % starts.length], body]);
      let f: FirstFlight | undefined;
      assert.doesNotThrow(() => (f = parseFirstFlight(b)), `case ${i}`);
      sane(f!, `case ${i}`);
    }
  });

  it('2,000 mutated ClientHellos and HTTP heads: flipped, inserted, deleted and truncated bytes', async () => {
    const rnd = prng(42);
    const seeds = [
      await nodeHello({ servername: 'm.example.test' }),
      hello(sni([0, 'a.test'], [0, 'a.test']), ext(0xfe0d, Buffer.alloc(10)), padding(100)),
      records(helloMessage([sni([0, 'two.test'])]), [7]),
      Buffer.from('GET http://a.test/ HTTP/1.1\r\nHost: a.test:80\r\nX: y\r\n\r\n'),
      Buffer.from('CONNECT [::1]:443 HTTP/1.1\r\n\r\n'),
    ];
    for (let i = 0; i < 2000; i++) {
      const b = Buffer.from(seeds[i % seeds.length]);
      let m: Buffer = b;
      for (let k = intIn(rnd, 1, 4); k > 0; k--) {
        const at = intIn(rnd, 0, m.length - 1);
        const op = intIn(rnd, 0, 3);
        if (op === 0) m[at] = intIn(rnd, 0, 255);
        else if (op === 1) m = Buffer.concat([m.subarray(0, at), Buffer.from([intIn(rnd, 0, 255)]), m.subarray(at)]);
        else if (op === 2) m = Buffer.concat([m.subarray(0, at), m.subarray(at + 1)]);
        else m = m.subarray(0, at);
      }
      let f: FirstFlight | undefined;
      assert.doesNotThrow(() => (f = parseFirstFlight(m)), `case ${i}: ${m.toString('hex')}`);
      sane(f!, `case ${i}: ${m.toString('hex')}`);
    }
  });
});
