// The name a new TCP connection names in what its client sends first: the SNI of a TLS
// ClientHello (on any port) or the Host of an HTTP/1.x request head. For a sandbox whose
// policy has a domain allow-list, DNS admits an address, but many names share an address
// (a CDN edge, a virtual host): the first flight is where the client says which one it
// wants, so that is what the daemon checks before letting the connection's bytes out. Pure.
//
// Incremental by re-reading: the caller keeps everything the client sent so far, in order,
// and calls again after each segment until the answer is not 'more'. Re-reading keeps no
// state to get wrong; each call costs up to some tens of microseconds on a full 16 KB, so a
// client that dribbles bytes one segment at a time makes the caller pay per segment: it
// should bound the segments it feeds per connection as well as the bytes.
//
// Strict where servers disagree, since a check that reads a name the server does not use
// checks nothing: two Host headers, two different SNI host_names, a folded header line,
// whitespace before a header's colon, a bare CR, an absolute-form target whose host is not
// the Host header's: all 'malformed', which the caller refuses. Bytes that are neither TLS
// nor HTTP are 'other' (the caller's policy says what to do with SSH, h2c prior knowledge...).

export type FirstFlight =
  | { kind: 'more' }
  | { kind: 'tls'; name: string | undefined; ech: boolean }
  | { kind: 'http'; name: string | undefined }
  | { kind: 'other' }
  | { kind: 'malformed'; why: string };

/** Bytes we are willing to buffer before deciding: one full TLS record (a ClientHello with post-quantum key shares is 1.5-2 KB). */
export const FIRST_FLIGHT_MAX = 16 * 1024 + 5;

/** TLS extension types read here. */
const EXT_SERVER_NAME = 0x0000;
const EXT_ENCRYPTED_CLIENT_HELLO = 0xfe0d;
/** A TLS record's largest plaintext fragment (RFC 8446 5.1). */
const MAX_RECORD = 1 << 14;

/** The methods that make bytes an HTTP/1.x request (each followed by a space). */
const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'OPTIONS', 'PATCH', 'CONNECT', 'TRACE'];

const MORE: FirstFlight = { kind: 'more' };
const OTHER: FirstFlight = { kind: 'other' };

/** Thrown inside this module only, caught by parseFirstFlight: the bytes are broken. */
class Malformed extends Error {}
const bad = (why: string): never => {
  throw new Malformed(why);
};

/** Decides what `bytes` (everything the client sent so far, in order) is, or asks for more. Never throws. */
export function parseFirstFlight(bytes: Buffer): FirstFlight {
  // Only the first FIRST_FLIGHT_MAX bytes can decide; 'more' at that size would need more than we buffer.
  const b = bytes.length > FIRST_FLIGHT_MAX ? bytes.subarray(0, FIRST_FLIGHT_MAX) : bytes;
  let f: FirstFlight;
  try {
    f = decide(b);
  } catch (e) {
    if (e instanceof Malformed) return { kind: 'malformed', why: e.message };
    throw e;
  }
  if (f.kind === 'more' && bytes.length >= FIRST_FLIGHT_MAX) return { kind: 'malformed', why: `no decision within ${FIRST_FLIGHT_MAX} bytes` };
  return f;
}

/** The name a decided flight names (SNI or Host), if any. */
export function nameOfFlight(f: FirstFlight): string | undefined {
  return f.kind === 'tls' || f.kind === 'http' ? f.name : undefined;
}

function decide(b: Buffer): FirstFlight {
  if (b.length === 0) return MORE;
  if (b[0] === 0x16) {
    if (b.length < 2) return MORE;
    return b[1] === 3 ? tlsFlight(b) : OTHER;
  }
  return httpFlight(b);
}

// ---- TLS -------------------------------------------------------------------------------

/** Gathers the handshake records' fragments until the first handshake message is whole. */
function tlsFlight(b: Buffer): FirstFlight {
  // Fragments as [start, end) offsets into b: a message split into 1-byte records is thousands of them.
  const spans: number[] = [];
  let have = 0;
  let msgLen = -1;
  let off = 0;
  for (;;) {
    if (off + 5 > b.length) return MORE;
    if (b[off] !== 0x16) bad(`record type ${b[off]} before the ClientHello ended`);
    if (b[off + 1] !== 3) bad(`record version ${b[off + 1]}.${b[off + 2]}`);
    const len = b.readUInt16BE(off + 3);
    if (len === 0) bad('empty handshake record');
    if (len > MAX_RECORD) bad(`record of ${len} bytes (most ${MAX_RECORD})`);
    const start = off + 5;
    const end = Math.min(start + len, b.length);
    if (have === 0 && end > start && b[start] !== 1) bad(`handshake type ${b[start]}, not ClientHello`);
    spans.push(start, end);
    have += end - start;
    if (msgLen < 0 && have >= 4) {
      msgLen = handshake(b, spans, 4).readUIntBE(1, 3);
      if (9 + msgLen > FIRST_FLIGHT_MAX) bad(`ClientHello of ${msgLen} bytes (most ${FIRST_FLIGHT_MAX - 9})`);
    }
    if (msgLen >= 0 && have >= 4 + msgLen) return clientHello(handshake(b, spans, 4 + msgLen).subarray(4));
    if (end - start < len) return MORE;
    off += 5 + len;
  }
}

/** The first `n` handshake bytes, joined from the fragments' spans. */
function handshake(b: Buffer, spans: number[], n: number): Buffer {
  if (spans[1] - spans[0] >= n) return b.subarray(spans[0], spans[0] + n);
  const out = Buffer.alloc(n);
  for (let i = 0, at = 0; at < n; i += 2) at += b.copy(out, at, spans[i], Math.min(spans[i + 1], spans[i] + n - at));
  return out;
}

/** A cursor over a length-checked buffer: every read past the end is malformed. */
class Reader {
  private off = 0;
  constructor(private readonly b: Buffer, private readonly what: string) {}
  get left(): number {
    return this.b.length - this.off;
  }
  u8(): number {
    this.need(1);
    return this.b[this.off++];
  }
  u16(): number {
    this.need(2);
    const v = this.b.readUInt16BE(this.off);
    this.off += 2;
    return v;
  }
  bytes(n: number): Buffer {
    this.need(n);
    const v = this.b.subarray(this.off, this.off + n);
    this.off += n;
    return v;
  }
  /** A vector with a 1- or 2-byte length, whose length is within [min, max]. */
  vector(lenBytes: 1 | 2, min: number, max: number, what: string): Buffer {
    const n = lenBytes === 1 ? this.u8() : this.u16();
    if (n < min || n > max) bad(`${what} length ${n} outside ${min}..${max}`);
    if (n > this.left) bad(`${what} length ${n} overruns ${this.what} (${this.left} left)`);
    return this.bytes(n);
  }
  private need(n: number): void {
    if (this.left < n) bad(`${this.what} truncated`);
  }
}

/** The ClientHello body (RFC 8446 4.1.2): its SNI host_name and whether it offers ECH. */
function clientHello(body: Buffer): FirstFlight {
  const r = new Reader(body, 'ClientHello');
  const major = r.u8();
  r.u8();
  if (major !== 3) bad(`ClientHello legacy_version major ${major}`);
  r.bytes(32); // random
  r.vector(1, 0, 32, 'session_id');
  const suites = r.vector(2, 2, 0xfffe, 'cipher_suites');
  if (suites.length % 2 !== 0) bad('cipher_suites of odd length');
  r.vector(1, 1, 0xff, 'compression_methods');
  // Before TLS 1.2 extensions could be absent altogether; a ClientHello without them has no SNI.
  if (r.left === 0) return { kind: 'tls', name: undefined, ech: false };
  const exts = new Reader(r.vector(2, 0, 0xffff, 'extensions'), 'extensions');
  if (r.left !== 0) bad(`${r.left} bytes after the extensions`);
  let name: string | undefined;
  let sniSeen = false;
  let ech = false;
  while (exts.left > 0) {
    const type = exts.u16();
    const data = exts.vector(2, 0, 0xffff, `extension ${type}`);
    if (type === EXT_SERVER_NAME) {
      if (sniSeen) bad('two server_name extensions');
      sniSeen = true;
      name = serverName(data);
    } else if (type === EXT_ENCRYPTED_CLIENT_HELLO) {
      ech = true;
    }
  }
  return { kind: 'tls', name, ech };
}

/** The server_name extension (RFC 6066 3): its host_name, lowercased, without a trailing dot. */
function serverName(data: Buffer): string | undefined {
  const r = new Reader(data, 'server_name');
  const list = new Reader(r.vector(2, 1, 0xffff, 'server_name_list'), 'server_name_list');
  if (r.left !== 0) bad(`${r.left} bytes after server_name_list`);
  let name: string | undefined;
  while (list.left > 0) {
    const type = list.u8();
    // Every name_type is read as a 2-byte-length vector (Go does; OpenSSL refuses other types).
    const raw = list.vector(2, 1, 0xffff, 'server name');
    if (type !== 0) continue;
    const n = hostName(raw.toString('latin1'), 'SNI host_name');
    if (name !== undefined && n !== name) bad(`two SNI host_names: ${name} and ${n}`);
    name = n;
  }
  return name;
}

/** Letters, digits, '.', '-', '_' only. */
const NAME_CHARS = /^[A-Za-z0-9._-]+$/;

/** A DNS name as a check compares it: lowercased, one trailing dot removed, no empty label. */
function hostName(raw: string, what: string): string {
  if (!NAME_CHARS.test(raw)) bad(`${what} with bytes outside [A-Za-z0-9._-]: ${JSON.stringify(raw.slice(0, 64))}`);
  const n = (raw.endsWith('.') ? raw.slice(0, -1) : raw).toLowerCase();
  if (n === '' || n.split('.').includes('')) bad(`${what} with an empty label: ${JSON.stringify(raw.slice(0, 64))}`);
  return n;
}

// ---- HTTP/1.x --------------------------------------------------------------------------

/** An HTTP/1.x request head: the Host it names, once the head is whole. */
function httpFlight(b: Buffer): FirstFlight {
  // Servers ignore empty lines before the request line (RFC 9112 2.2).
  let start = 0;
  while (start < b.length && (b[start] === 0x0a || (b[start] === 0x0d && (start + 1 === b.length || b[start + 1] === 0x0a)))) start++;
  if (start === b.length) return MORE;
  const method = methodAt(b, start);
  if (method === 'more') return MORE;
  if (method === undefined) return OTHER;
  const end = headEnd(b, start);
  if (end < 0) return MORE;
  return requestHead(b.subarray(start, end).toString('latin1'), method);
}

/** The method the bytes at `start` begin with (followed by a space), 'more' if they could still, else undefined. */
function methodAt(b: Buffer, start: number): string | 'more' | undefined {
  const seen = b.subarray(start, start + 8).toString('latin1');
  let could = false;
  for (const m of METHODS) {
    const want = `${m} `;
    if (seen.startsWith(want)) return m;
    if (want.startsWith(seen)) could = true;
  }
  return could ? 'more' : undefined;
}

/** Where the head's lines end (before the empty line ending it: CRLF CRLF, or bare LFs as servers accept), or -1. */
function headEnd(b: Buffer, start: number): number {
  const crlf = b.indexOf('\n\r\n', start, 'latin1');
  const lf = b.indexOf('\n\n', start, 'latin1');
  return crlf < 0 ? lf : lf < 0 ? crlf : Math.min(crlf, lf);
}

/** Field-name characters (RFC 9110 5.6.2 tchar). */
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
/** Control characters a line must not hold (HTAB is allowed in values). */
const CTL = /[\x00-\x08\x0a-\x1f\x7f]/;

function requestHead(head: string, method: string): FirstFlight {
  const lines = head.split('\n').map((l) => (l.endsWith('\r') ? l.slice(0, -1) : l));
  if (lines.some((l) => l.includes('\r'))) bad('a bare CR in the request head');
  const m = /^([A-Z]+) ([^ ]+) (HTTP\/1\.[0-9])$/.exec(lines[0]);
  if (!m || m[1] !== method) bad(`request line ${JSON.stringify(lines[0].slice(0, 80))}`);
  const target = m![2];
  if (/[\x00-\x20\x7f]/.test(target)) bad('control character in the request-target');
  const fromTarget = targetHost(method, target);
  const hosts: string[] = [];
  for (const line of lines.slice(1)) {
    if (line[0] === ' ' || line[0] === '\t') bad('obs-fold: a header line starting with whitespace');
    const colon = line.indexOf(':');
    if (colon < 0) bad(`header line without a colon: ${JSON.stringify(line.slice(0, 80))}`);
    const field = line.slice(0, colon);
    if (!TOKEN.test(field)) bad(`header name ${JSON.stringify(field.slice(0, 80))}`);
    if (CTL.test(line)) bad(`control character in header ${field}`);
    if (field.toLowerCase() === 'host') hosts.push(line.slice(colon + 1).replace(/^[ \t]+|[ \t]+$/g, ''));
  }
  if (hosts.length > 1) bad(`${hosts.length} Host headers`);
  const fromHeader = hosts.length === 1 ? authorityHost(hosts[0], 'Host') : undefined;
  if (fromTarget === undefined) return { kind: 'http', name: fromHeader };
  // RFC 9112 3.2.2: the target's authority wins over Host; a check must see what the server uses.
  if (hosts.length === 1 && fromHeader !== fromTarget) bad(`request-target names ${fromTarget} but Host names ${fromHeader ?? '(empty)'}`);
  return { kind: 'http', name: fromTarget };
}

/** The host a request-target names: CONNECT's authority-form, or an absolute-form URI's authority. */
function targetHost(method: string, target: string): string | undefined {
  if (method === 'CONNECT') {
    const h = authorityHost(target, 'CONNECT target');
    if (h === undefined) bad('CONNECT without a host');
    return h;
  }
  if (target.startsWith('/') || (target === '*' && method === 'OPTIONS')) return undefined;
  const abs = /^[A-Za-z][A-Za-z0-9+.-]*:\/\/([^/?#]*)/.exec(target);
  if (!abs) bad(`request-target ${JSON.stringify(target.slice(0, 80))} neither origin- nor absolute-form`);
  const h = authorityHost(abs![1], 'request-target authority');
  if (h === undefined) bad('absolute-form request-target without a host');
  return h;
}

/** host[:port] or [v6]:port → the host (lowercased, no trailing dot, brackets off); undefined if empty. */
function authorityHost(a: string, what: string): string | undefined {
  if (a === '') return undefined;
  if (a.includes('@')) bad(`${what} with userinfo`);
  let host: string;
  let rest: string;
  if (a.startsWith('[')) {
    const close = a.indexOf(']');
    if (close < 0) bad(`${what} with an unclosed [`);
    host = a.slice(1, close);
    rest = a.slice(close + 1);
    if (!/^[0-9A-Fa-f:.]+$/.test(host) || !host.includes(':')) bad(`${what} with a bad IPv6 literal`);
    host = host.toLowerCase();
  } else {
    const colon = a.indexOf(':');
    host = colon < 0 ? a : a.slice(0, colon);
    rest = colon < 0 ? '' : a.slice(colon);
    host = hostName(host, what);
  }
  if (rest !== '' && !/^:[0-9]{0,5}$/.test(rest)) bad(`${what} with a bad port: ${JSON.stringify(rest.slice(0, 20))}`);
  return host;
}
