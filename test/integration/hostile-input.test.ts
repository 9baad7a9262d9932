// Hostile input at scale against a real daemon in the testbed:
// - the API: hundreds of malformed, mistyped, oversized and misrouted requests, and clients
//   that never finish their headers. Every answer is a 4xx with one clear line, the daemon
//   never restarts, and nothing changes: the sandbox list and the instance's nftables table
//   are the same afterwards;
// - the resolver: a sandbox sending thousands of random, truncated, corrupted and oversized
//   DNS messages over UDP and lying TCP streams, while its neighbour times ordinary queries:
//   every neighbour query is answered, no datagram overflows the resolver's buffer, and the
//   neighbour's median barely moves (`npm run bench:hostile` gives the p99 on a quiet machine).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ChildProcess } from 'node:child_process';
import { ToastnetClient } from '../../src/api/client.js';
import { Testbed } from '../testbed/testbed.js';
import { waitFor } from '../helpers/wait.js';
import { prng, intIn } from '../unit/prng.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const DNS_FUZZ = path.join(here, 'helpers', 'dns-fuzz.js');
const DNS_LATENCY = path.join(here, 'helpers', 'dns-latency.js');

interface Answer { status: number; body: string }

function request(socket: string, method: string, p: string, body?: string | Buffer, headers: Record<string, string> = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath: socket, method, path: p, agent: false, headers }, (res) => {
      let text = '';
      res.on('data', (d) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

const VALID_CREATE = { name: 'fuzzed', policy: { egress: { internet: true, domains: ['example.test'] }, limits: { egressRate: '10mbit' } } };

/**
 * Requests that must all be refused: each mutation breaks the body or the route in a way the
 * API has to notice (wrong types, unknown keys, bad syntax, sizes, names, methods).
 */
function hostileRequests(seed: number, n: number): { method: string; path: string; body?: string | Buffer; why: string }[] {
  const rnd = prng(seed);
  const pick = <T>(xs: T[]): T => xs[intIn(rnd, 0, xs.length - 1)];
  const junk = () => pick([null, true, 0, -1, 1e309, 'x', '', [], [[[]]], '\u0000', '😀'.repeat(50)]);
  const text = JSON.stringify(VALID_CREATE);
  const out: { method: string; path: string; body?: string | Buffer; why: string }[] = [];
  while (out.length < n) {
    switch (intIn(rnd, 0, 11)) {
      case 0: out.push({ method: 'POST', path: '/v1/sandboxes', body: text.slice(0, intIn(rnd, 1, text.length - 1)), why: 'truncated JSON' }); break;
      case 1: out.push({ method: 'POST', path: '/v1/sandboxes', body: Buffer.from(Array.from({ length: intIn(rnd, 1, 400) }, () => intIn(rnd, 0, 255))), why: 'random bytes' }); break;
      case 2: {
        const field = pick(['name', 'policy', 'mode']);
        out.push({ method: 'POST', path: '/v1/sandboxes', body: JSON.stringify({ ...VALID_CREATE, [field]: field === 'policy' ? pick([1, 'x', [], true]) : pick([1, [], {}, true, '', '../etc', 'a'.repeat(300), 'bad name']) }), why: `wrong ${field}` });
        break;
      }
      case 3: out.push({ method: 'POST', path: '/v1/sandboxes', body: JSON.stringify({ ...VALID_CREATE, [pick(['__proto__', 'constructor', 'extra', 'Name'])]: junk() }), why: 'unknown key' }); break;
      case 4: out.push({ method: 'POST', path: '/v1/sandboxes', body: JSON.stringify({ ...VALID_CREATE, policy: { egress: { allow: [pick(['10.0.0.0/33', '1.2.3', '0.0.0.0/0:99999', 'x/8', '203.0.113.0/24:5-1'])] } } }), why: 'bad CIDR rule' }); break;
      case 5: out.push({ method: 'POST', path: '/v1/sandboxes', body: JSON.stringify({ ...VALID_CREATE, policy: { limits: { egressRate: pick([-1, 0, '10 parsecs', 'mbit', 1e309, 'NaN']) } } }), why: 'bad limit' }); break;
      case 6: out.push({ method: 'POST', path: '/v1/sandboxes', body: '['.repeat(intIn(rnd, 1000, 5000)), why: 'deep nesting' }); break;
      case 7: out.push({ method: pick(['PATCH', 'PUT', 'DELETE', 'OPTIONS', 'TRACE']), path: pick(['/v1/sandboxes', '/v1/status', '/v1/gc', '/v1/up']), why: 'wrong method' }); break;
      case 8: out.push({ method: pick(['GET', 'DELETE']), path: `/v1/sandboxes/${pick(['nope', '..%2F..%2Fetc', '%00', 'a'.repeat(200), '%E0%A4%A'])}`, why: 'unknown or malformed name' }); break;
      case 9: out.push({ method: 'PUT', path: '/v1/sandboxes/nope/policy', body: JSON.stringify({ egress: { internet: false } }), why: 'policy of a sandbox that does not exist' }); break;
      case 10: out.push({ method: 'GET', path: pick(['/v1/events?limit=-5', '/v1/events?since=yesterday', '/v1/events?limit=1e9', '/v1/dns-queries?wait=forever', '/v1/../../etc/passwd', '/v2/status']), why: 'bad query or path' }); break;
      default: out.push({ method: 'POST', path: '/v1/sandboxes', body: JSON.stringify(junk()), why: 'not an object' }); break;
    }
  }
  return out;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

describe('hostile input', () => {
  let tb: Testbed;
  const I = `h${Date.now().toString(36)}`;
  let cl: ToastnetClient;
  let daemon: ChildProcess;
  let socket: string;

  before(async () => {
    tb = await Testbed.create();
    socket = tb.socketPath(I);
    cl = new ToastnetClient(socket);
    assert.equal(tb.toastnet(I, ['up']).code, 0);
    daemon = tb.startDaemon(I);
    await waitFor(() => cl.ping(), 'the daemon to answer');
  });
  after(async () => {
    tb?.toastnet(I, ['down']);
    await tb?.destroy();
  });

  /** What the instance is: its sandboxes and its nftables table without counters (which traffic moves). */
  const stateOf = () => ({
    sandboxes: JSON.parse(tb.toastnet(I, ['ls', '--json']).stdout),
    table: tb.sh(tb.hostNs, ['nft', 'list', 'table', 'inet', I]).replace(/(counter|quota) packets \d+ bytes \d+|used \d+ bytes|expires \S+/g, ''),
  });

  it('refuses every malformed, mistyped or misrouted request with a 4xx and one line, and changes nothing', async () => {
    assert.equal(tb.toastnet(I, ['create', 'keep']).code, 0);
    const before = stateOf();
    const pid = (await cl.status()).daemon?.pid;
    const cases = hostileRequests(1207, 400);
    const byWhy = new Map<string, number>();
    for (const c of cases) {
      const a = await request(socket, c.method, c.path, c.body, c.body === undefined ? {} : { 'content-type': 'application/json' });
      assert.ok(a.status >= 400 && a.status < 500, `${c.why}: ${c.method} ${c.path} answered ${a.status}: ${a.body}`);
      const err = JSON.parse(a.body).error as { code: string; message: string };
      assert.match(err.code, /^[a-z_]+$/, `${c.why}: an error code`);
      assert.ok(err.message.length > 0 && !err.message.includes('\n'), `${c.why}: one line, got ${JSON.stringify(err.message)}`);
      byWhy.set(c.why, (byWhy.get(c.why) ?? 0) + 1);
    }
    assert.ok(byWhy.size >= 14, `the cases cover the kinds: ${[...byWhy.keys()]}`);
    assert.equal((await cl.status()).daemon?.pid, pid, 'the same daemon still serves');
    assert.deepEqual(stateOf(), before, 'no sandbox, element or rule changed');
  });

  it('a body past the limit is refused before it is read whole', async () => {
    const before = stateOf();
    // 64 MiB announced and streamed: the answer must come long before it could all be read.
    const answer = await new Promise<string>((resolve) => {
      const c = net.connect(socket);
      let text = '';
      c.on('data', (d) => (text += d));
      c.on('close', () => resolve(text));
      // Writing on after the server answered and closed fails (EPIPE): what counts is the answer.
      c.on('error', () => undefined);
      c.write('POST /v1/sandboxes HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 67108864\r\n\r\n');
      // None of the 64 MiB is sent: the answer must come from the Content-Length alone. (A
      // server closing with body bytes unread resets the connection over a Unix socket, and the
      // client may lose the answer with it: the limit is best met before sending the body.)
    });
    assert.match(answer, /^HTTP\/1\.1 413 /);
    assert.deepEqual(stateOf(), before);
  });

  it('clients that never finish their headers are cut off, and do not hold up others', async () => {
    const slow: net.Socket[] = [];
    const closed: Promise<number>[] = [];
    const t0 = Date.now();
    for (let i = 0; i < 50; i++) {
      const c = net.connect(socket);
      c.on('error', () => undefined);
      c.write('GET /v1/status HTTP/1.1\r\nHost: x\r\n');
      // One more header byte every second: never a whole request.
      const drip = setInterval(() => c.write('X'), 1000);
      closed.push(new Promise((res) => c.on('close', () => {
        clearInterval(drip);
        res(Date.now() - t0);
      })));
      slow.push(c);
    }
    // Meanwhile others are served at once.
    for (let i = 0; i < 5; i++) {
      const t = Date.now();
      assert.equal((await request(socket, 'GET', '/v1/status')).status, 200);
      assert.ok(Date.now() - t < 1000, 'a normal request is not queued behind the slow ones');
    }
    const after = await Promise.all(closed);
    // The header timeout is 10 s (api/server.ts REQUEST_TIMEOUTS), checked every second.
    assert.ok(Math.max(...after) < 15_000, `slow clients were cut off (last after ${Math.max(...after)} ms)`);
    for (const c of slow) c.destroy();
  });

  it('a sandbox fuzzing the resolver does not take DNS from its neighbour', async () => {
    assert.equal(tb.toastnet(I, ['create', 'fuzzer']).code, 0);
    assert.equal(tb.toastnet(I, ['create', 'neighbour']).code, 0);
    const gateway = JSON.parse(tb.toastnet(I, ['inspect', 'neighbour', '--json']).stdout).gateway as string;
    const probe = async (count: number) => {
      const r = await tb.toastnetAsync(I, ['exec', 'neighbour', '--', process.execPath, DNS_LATENCY, gateway, 'example.test', String(count)], 120_000);
      assert.equal(r.code, 0, r.stderr);
      return JSON.parse(r.stdout).rtts as (number | null)[];
    };
    const pid = (await cl.status()).daemon?.pid;
    /** A counter of the host namespace's UDP stack (/proc/net/snmp). */
    const udpCounter = (key: string) => {
      const [keys, values] = tb.sh(tb.hostNs, ['cat', '/proc/net/snmp']).split('\n').filter((l) => l.startsWith('Udp:')).map((l) => l.split(/\s+/));
      return Number(values[keys.indexOf(key)]);
    };
    const rcvbufErrors = () => udpCounter('RcvbufErrors');
    const quiet = await probe(300);
    const errorsBefore = rcvbufErrors();
    const [fuzz, loaded] = await Promise.all([
      tb.toastnetAsync(I, ['exec', 'fuzzer', '--', process.execPath, DNS_FUZZ, gateway, '2026', '20000', '60'], 120_000),
      probe(600),
    ]);
    assert.equal(fuzz.code, 0, fuzz.stderr);
    const sent = JSON.parse(fuzz.stdout) as { udpSent: number };
    assert.equal(sent.udpSent, 20000);
    const answered = (xs: (number | null)[]) => xs.filter((x): x is number => x !== null);
    const q = (xs: number[], f: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * f))]?.toFixed(2);
    process.stdout.write(`# resolver fuzz: ${JSON.stringify({ fuzz: JSON.parse(fuzz.stdout), overflows: rcvbufErrors() - errorsBefore, quiet: { lost: quiet.length - answered(quiet).length, p50: q(answered(quiet), 0.5), p99: q(answered(quiet), 0.99) }, loaded: { lost: loaded.length - answered(loaded).length, p50: q(answered(loaded), 0.5), p99: q(answered(loaded), 0.99), max: q(answered(loaded), 1) } })}\n`);
    assert.equal(rcvbufErrors() - errorsBefore, 0, 'no datagram overflowed a receive buffer');
    const lost = loaded.filter((x) => x === null).length;
    assert.equal(lost, 0, 'every query of the neighbour answered while the fuzzer ran');
    // The median, not the tail: a tail on a shared machine measures the machine. `npm run
    // bench:hostile` measures the p99 added, on a quiet machine, against the 2 ms target.
    const added = median(loaded as number[]) - median(quiet as number[]);
    assert.ok(added < 5, `median added by the fuzzer: ${added.toFixed(2)} ms`);
    assert.equal((await cl.status()).daemon?.pid, pid, 'the same daemon still serves');
    const after = await probe(20);
    assert.equal(after.filter((x) => x === null).length, 0, 'the resolver still answers afterwards');
  });
});
