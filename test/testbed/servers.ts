// Servers of the testbed, started inside a test namespace with nsenter:
//   node servers.js http:IP:PORT:BODY (IP any6 = every v4 and v6 address) ... tcp:IP:PORT:BODY ... dns:IP:PORT[:FILE]
// HTTP servers answer BODY; TCP servers write BODY and close; hold servers keep writing BODY; the DNS server answers the
// fixed zone below (and, given FILE, appends every query it receives to it, one line
// each: "udp" or "tcp" and the message in hex, before answering); udpecho (datagrams sent
// back) and sink (swallows TCP, reports the byte count over HTTP on the next port);
// tls:IP:PORT:CERTDIR (HTTPS for several names on one address, the certificate chosen by SNI:
// answers "tls sni=<SNI or -> cert=<certificate's name> host=<Host or ->") and vhost:IP:PORT
// (plain HTTP answering "vhost host=<every Host header, comma-joined, or ->"): what name checks on
// the first flight are tested against. Prints "ready" once every listener is bound.
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import path from 'node:path';
import tls from 'node:tls';
import net from 'node:net';
import dgram from 'node:dgram';
import dnsPacket from 'dns-packet';

/** The fake internet's zone. */
export const ZONE: Record<string, string[]> = {
  'example.test': ['203.0.113.10'],
  'www.example.test': ['203.0.113.10'],
  'other.test': ['203.0.113.20'],
  'short.test': ['203.0.113.20'],
  'metadata.test': ['169.254.169.254'],
  'private.test': ['172.16.5.5'],
  'rebind.test': ['10.99.0.5'],
  'edge.cdn-provider.test': ['203.0.113.20'],
  'spoofed.test': ['203.0.113.20'],
  'spoofed2.test': ['203.0.113.20'],
};

/** CNAMEs: the asked name decides, the chain's end has the addresses (the CDN case). */
const CNAMES: Record<string, string> = {
  'cdn.test': 'edge.cdn-provider.test',
  'sneaky.test': 'edge.cdn-provider.test',
};

const TTL: Record<string, number> = { 'short.test': 2 };

/**
 * Every name under slow.test exists (203.0.113.20) and is answered this late: the answer
 * arrives after what a test does meanwhile (remove the sandbox that asked, change its policy).
 */
const SLOW = { suffix: '.slow.test', ms: 6000 };

/** A name's addresses, or undefined if there is no such name. */
function addressesOf(name: string): string[] | undefined {
  if (name in ZONE) return ZONE[name];
  // 60 A records: over 512 bytes, so UDP answers are truncated and clients retry over TCP.
  if (name === 'big.test') return Array.from({ length: 60 }, (_, i) => `203.0.113.${100 + i}`);
  // Every name under load.test exists (the DNS bench asks unique names to miss caches).
  if (name.endsWith('.load.test')) return ['203.0.113.10'];
  if (name.endsWith(SLOW.suffix)) return ['203.0.113.20'];
  return undefined;
}

/**
 * A tls server's CERTDIR holds NAME.crt and NAME.key per name, and this one for a ClientHello
 * without SNI or with a name it has no certificate for (testbed.ts tlsCerts writes them; it
 * repeats the name, since importing this file starts its servers).
 */
const DEFAULT_CERT = '_default';

/** Every Host header of a request, comma-joined (two mean a client that tries to confuse someone), or "-". */
function hostHeaders(req: http.IncomingMessage): string {
  const values: string[] = [];
  for (let i = 0; i < req.rawHeaders.length; i += 2) if (req.rawHeaders[i].toLowerCase() === 'host') values.push(req.rawHeaders[i + 1]);
  return values.length ? values.join(',') : '-';
}

/** Sends `reply` now, or after `ms` (a timer, even of 0 ms, would add a millisecond to every answer the DNS bench times). */
function later(ms: number, reply: () => void): void {
  if (ms > 0) setTimeout(reply, ms);
  else reply();
}

/** The answer to `query`, and how long to hold it (ms). */
function answer(query: Buffer, overUdp: boolean): { wire: Buffer; delayMs: number } {
  const q = dnsPacket.decode(query);
  const question = q.questions?.[0];
  const name = question?.name?.toLowerCase() ?? '';
  const delayMs = name.endsWith(SLOW.suffix) ? SLOW.ms : 0;
  const target = CNAMES[name];
  const final = target ?? name;
  const addresses = addressesOf(final);
  const known = addresses !== undefined;
  const ips = question?.type === 'A' ? (addresses ?? []) : [];
  let answers: dnsPacket.Answer[] = ips.map((ip) => ({ type: 'A' as const, name: final, ttl: TTL[final] ?? 60, class: 'IN' as const, data: ip }));
  if (target) answers = [{ type: 'CNAME', name, ttl: 60, class: 'IN', data: target }, ...answers];
  let flags = dnsPacket.AUTHORITATIVE_ANSWER | (known ? 0 : 3 /* NXDOMAIN */);
  const full = dnsPacket.encode({ id: q.id, type: 'response', flags, questions: q.questions, answers });
  if (overUdp && full.length > 512) {
    answers = [];
    flags |= dnsPacket.TRUNCATED_RESPONSE;
    return { wire: dnsPacket.encode({ id: q.id, type: 'response', flags, questions: q.questions, answers }), delayMs };
  }
  return { wire: full, delayMs };
}

/**
 * Answers that test the resolver's check of what comes back (UDP only):
 * - spoofed.test, spoofed2.test: first an answer for another question (evil.test, pointing at an address
 *   the real answer does not have), then the real one: a spoofer who guessed port and ID;
 * - bare-refused.test: REFUSED with no question section, as some servers send errors.
 * (Not exported: importing this file starts its servers. test/integration/dns.test.ts repeats the names.)
 */
const SPOOFED = { names: ['spoofed.test', 'spoofed2.test'], forged: '203.0.113.66' };
const BARE_REFUSED = 'bare-refused.test';

function trickAnswer(query: Buffer): { wire: Buffer; thenReal: boolean } | undefined {
  const q = dnsPacket.decode(query);
  const name = q.questions?.[0]?.name?.toLowerCase();
  if (SPOOFED.names.includes(name ?? '')) {
    const evil = { type: 'A' as const, name: 'evil.test', class: 'IN' as const };
    return {
      wire: dnsPacket.encode({ id: q.id, type: 'response', flags: dnsPacket.AUTHORITATIVE_ANSWER, questions: [evil], answers: [{ ...evil, ttl: 60, data: SPOOFED.forged }] }),
      thenReal: true,
    };
  }
  if (name === BARE_REFUSED) {
    const wire = Buffer.alloc(12);
    wire.writeUInt16BE(q.id ?? 0, 0);
    wire.writeUInt16BE(0x8000 | 5 /* QR, REFUSED */, 2);
    return { wire, thenReal: false };
  }
  return undefined;
}

/** GET /bytes/N on tls and vhost servers: N bytes (at most 1 GiB), for throughput (bench/names.ts). */
function sendBytes(req: http.IncomingMessage, res: http.ServerResponse): boolean {
  const m = /^\/bytes\/(\d+)$/.exec(req.url ?? '');
  if (!m) return false;
  let left = Math.min(Number(m[1]), 2 ** 30);
  const chunk = Buffer.alloc(64 * 1024, 120);
  res.writeHead(200, { 'content-length': String(left) });
  const pump = (): void => {
    while (left > 0) {
      const piece = left >= chunk.length ? chunk : chunk.subarray(0, left);
      left -= piece.length;
      if (!res.write(piece)) {
        res.once('drain', pump);
        return;
      }
    }
    res.end();
  };
  pump();
  return true;
}

async function main(): Promise<void> {
  const waits: Promise<void>[] = [];
  for (const spec of process.argv.slice(2)) {
    const [kind, addr, portStr, ...rest] = spec.split(':');
    const ip = addr === 'any6' ? '::' : addr; // "any6": every IPv4 and IPv6 address
    const port = Number(portStr);
    const body = rest.join(':');
    if (kind === 'http') {
      const s = http.createServer((_req, res) => res.end(body));
      waits.push(new Promise((r) => s.listen(port, ip, () => r())));
    } else if (kind === 'tls') {
      // One address, many names: the certificate is the one named by SNI, the default one without SNI or for an unknown name.
      const dir = body;
      const contexts = new Map<string, tls.SecureContext>();
      for (const f of fs.readdirSync(dir).filter((n) => n.endsWith('.crt') && n !== 'ca.crt')) {
        const name = f.slice(0, -'.crt'.length);
        contexts.set(name, tls.createSecureContext({ cert: fs.readFileSync(path.join(dir, f)), key: fs.readFileSync(path.join(dir, `${name}.key`)) }));
      }
      const fallback = contexts.get(DEFAULT_CERT);
      if (!fallback) throw new Error(`tls: no ${DEFAULT_CERT}.crt in ${dir}`);
      const certOf = (sni: string | false | null): string => {
        const name = sni ? sni.toLowerCase() : DEFAULT_CERT;
        return contexts.has(name) && name !== DEFAULT_CERT ? name : 'default';
      };
      const s = https.createServer(
        {
          cert: fs.readFileSync(path.join(dir, `${DEFAULT_CERT}.crt`)),
          key: fs.readFileSync(path.join(dir, `${DEFAULT_CERT}.key`)),
          SNICallback: (sni, cb) => cb(null, contexts.get(sni.toLowerCase()) ?? fallback),
        },
        (req, res) => {
          if (sendBytes(req, res)) return;
          const sni = (req.socket as tls.TLSSocket).servername;
          res.end(`tls sni=${sni || '-'} cert=${certOf(sni)} host=${hostHeaders(req)}`);
        },
      );
      s.on('tlsClientError', () => {}); // a client that refuses our certificate, or sends garbage
      waits.push(new Promise((r) => s.listen(port, ip, () => r())));
    } else if (kind === 'vhost') {
      const s = http.createServer((req, res) => sendBytes(req, res) || res.end(`vhost host=${hostHeaders(req)}`));
      waits.push(new Promise((r) => s.listen(port, ip, () => r())));
    } else if (kind === 'tcp') {
      const s = net.createServer((c) => c.end(body));
      waits.push(new Promise((r) => s.listen(port, ip, () => r())));
    } else if (kind === 'hold') {
      // Keeps every connection open, writing BODY every 100 ms: a long-lived flow to cut.
      const s = net.createServer((c) => {
        const t = setInterval(() => c.write(`${body}\n`), 100);
        c.on('close', () => clearInterval(t));
        c.on('error', () => clearInterval(t));
      });
      waits.push(new Promise((r) => s.listen(port, ip, () => r())));
    } else if (kind === 'dns') {
      // Written synchronously, before the answer: once a client has its answer, the file has the query.
      const record = (transport: 'udp' | 'tcp', m: Buffer) => body && fs.appendFileSync(body, `${transport} ${m.toString('hex')}\n`);
      const u = dgram.createSocket('udp4');
      u.on('message', (m, r) => {
        record('udp', m);
        try {
          const early = trickAnswer(m);
          if (early) {
            // From the right address, port and ID, ahead of the real answer: only the
            // question (or, for a bare error, the lack of one) tells them apart.
            u.send(early.wire, r.port, r.address);
            if (early.thenReal) setTimeout(() => u.send(answer(m, true).wire, r.port, r.address), 30);
            return;
          }
          const a = answer(m, true);
          later(a.delayMs, () => u.send(a.wire, r.port, r.address));
        } catch {
          // malformed query
        }
      });
      waits.push(new Promise((r) => u.bind(port, ip, () => r())));
      const t = net.createServer((c) => {
        let buf = Buffer.alloc(0);
        c.on('data', (d) => {
          buf = Buffer.concat([buf, d]);
          while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
            const q = buf.subarray(2, 2 + buf.readUInt16BE(0));
            buf = buf.subarray(2 + q.length);
            record('tcp', q);
            let a: ReturnType<typeof answer>;
            try {
              a = answer(q, false);
            } catch {
              continue; // malformed query
            }
            const h = Buffer.alloc(2);
            h.writeUInt16BE(a.wire.length);
            later(a.delayMs, () => c.write(Buffer.concat([h, a.wire])));
          }
        });
        c.on('error', () => c.destroy());
      });
      waits.push(new Promise((r) => t.listen(port, ip, () => r())));
    } else if (kind === 'udpecho') {
      // Sends every datagram back: traffic in both directions of known size and count.
      const u = dgram.createSocket('udp4');
      u.on('message', (m, r) => u.send(m, r.port, r.address));
      waits.push(new Promise((r) => u.bind(port, ip, () => r())));
    } else if (kind === 'udptick') {
      // Answers a datagram by sending BODY to its sender every 100 ms for 20 s: a UDP flow
      // that keeps delivering to that address and port, whoever holds them now.
      const u = dgram.createSocket('udp4');
      const seen = new Set<string>();
      u.on('message', (_m, r) => {
        const key = `${r.address}:${r.port}`;
        if (seen.has(key)) return;
        seen.add(key);
        const t = setInterval(() => u.send(body, r.port, r.address), 100);
        setTimeout(() => clearInterval(t), 20_000).unref();
        t.unref();
      });
      waits.push(new Promise((r) => u.bind(port, ip, () => r())));
    } else if (kind === 'sink') {
      // Swallows TCP on PORT; GET on PORT+1 answers how many bytes arrived in all.
      let total = 0;
      const s = net.createServer((c) => {
        c.on('data', (d) => (total += d.length));
        c.on('error', () => c.destroy());
      });
      waits.push(new Promise((r) => s.listen(port, ip, () => r())));
      const h = http.createServer((_req, res) => res.end(String(total)));
      waits.push(new Promise((r) => h.listen(port + 1, ip, () => r())));
    } else {
      throw new Error(`unknown server spec ${spec}`);
    }
  }
  await Promise.all(waits);
  process.stdout.write('ready\n');
}

main().catch((err) => {
  process.stderr.write(`servers: ${(err as Error).message}\n`);
  process.exit(1);
});
