// The API server over a real Unix socket in a temporary directory (no network, no root):
// what the pure router cannot show, namely headers, body limits and slow clients.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { MAX_BODY_BYTES, REQUEST_TIMEOUTS, serveApi } from '../../src/api/server.js';
import type { EventQuery } from '../../src/api/routes.js';
import type { DenialEvent } from '../../src/service/events.js';
import { FakeBackend } from '../helpers/fake-backend.js';

const LIMIT = 1000;
const TIMEOUTS = { headersMs: 300, requestMs: 600, checkEveryMs: 50 };

/** A backend whose events answer takes longer than a request may take to arrive. */
class SlowEventsBackend extends FakeBackend {
  override async events(q: EventQuery): Promise<DenialEvent[]> {
    await sleep(TIMEOUTS.requestMs * 2);
    return super.events(q);
  }
}

interface RawExchange {
  /** Everything the server sent before it closed the connection. */
  text: string;
  status: number;
  closedAfterMs: number;
  /** How many of the chunks were written before the server closed the connection. */
  written: number;
}

/** Writes `chunks` on a new connection (each after `gapMs`) and collects the answer until the server closes. */
function raw(socket: string, chunks: string[], gapMs = 0): Promise<RawExchange> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const s = net.connect(socket);
    let text = '';
    let written = 0;
    s.on('data', (d) => (text += d));
    s.on('error', (err: NodeJS.ErrnoException) => {
      // Writing on after the server hung up: the answer is what counts.
      if (err.code !== 'EPIPE' && err.code !== 'ECONNRESET') reject(err);
    });
    s.on('close', () => resolve({ text, status: Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0), closedAfterMs: performance.now() - t0, written }));
    void (async () => {
      for (const c of chunks) {
        if (s.destroyed) return;
        s.write(c);
        written++;
        if (gapMs) await sleep(gapMs);
      }
    })();
  });
}

const jsonOf = (x: RawExchange) => JSON.parse(x.text.slice(x.text.indexOf('\r\n\r\n') + 4)) as { error: { code: string; message: string } };

function request(socket: string, method: string, p: string, body?: string): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath: socket, method, path: p, agent: false }, (res) => {
      let text = '';
      res.on('data', (d) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

describe('serveApi over a Unix socket', () => {
  let dir: string;
  let socket: string;
  let server: http.Server;
  let backend: FakeBackend;
  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'toastnet-api-'));
    socket = path.join(dir, 'toastnet.sock');
    backend = new SlowEventsBackend();
    server = await serveApi(backend, socket, { maxBodyBytes: LIMIT, timeouts: TIMEOUTS });
  });
  after(async () => {
    server?.closeAllConnections();
    await new Promise((r) => server?.close(r));
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('answers on a socket only its owner may use; a body within the limit is read and routed', async () => {
    assert.equal(fs.statSync(socket).mode & 0o777, 0o600);
    const body = JSON.stringify({ name: 'web', policy: { note: 'x'.repeat(LIMIT - 100) } });
    assert.ok(Buffer.byteLength(body) <= LIMIT);
    const res = await request(socket, 'POST', '/v1/sandboxes', body);
    assert.equal(res.status, 201, res.body);
    assert.equal(JSON.parse(res.body).name, 'web');
    assert.match(String(res.headers['server-timing']), /^op;dur=\d/);
  });

  it('405 carries the Allow header; an unknown path is 404 without one', async () => {
    const wrong = await request(socket, 'DELETE', '/v1/status');
    assert.equal(wrong.status, 405);
    assert.equal(wrong.headers.allow, 'GET');
    assert.equal(JSON.parse(wrong.body).error.code, 'method_not_allowed');
    const unknown = await request(socket, 'GET', '/v1/nope');
    assert.equal(unknown.status, 404);
    assert.equal(unknown.headers.allow, undefined);
  });

  it('413 as soon as Content-Length says the body is over the limit, before any of it is sent; then the connection is closed', async () => {
    const calls = backend.calls.length;
    // Only the headers are sent: an answer proves the server did not wait for the body.
    const x = await raw(socket, [`POST /v1/sandboxes HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: ${LIMIT + 1}\r\n\r\n`]);
    assert.equal(x.status, 413, x.text);
    assert.match(x.text, /\r\nconnection: close\r\n/i);
    assert.deepEqual(jsonOf(x), { error: { code: 'too_large', message: `request body over ${LIMIT} bytes` } });
    assert.equal(backend.calls.length, calls);
  });

  it('413 for a chunked body once what was read passes the limit; the rest is not read', async () => {
    const calls = backend.calls.length;
    const chunk = 'x'.repeat(400);
    const chunks = [`POST /v1/sandboxes HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n`, ...Array(100).fill(`${chunk.length.toString(16)}\r\n${chunk}\r\n`)];
    const x = await raw(socket, chunks, 5);
    assert.equal(x.status, 413, x.text);
    assert.equal(jsonOf(x).error.code, 'too_large');
    // Closed while the client still had chunks to send (it takes 500+ ms over them).
    assert.ok(x.written < chunks.length, `all ${x.written} chunks written before the server closed`);
    assert.equal(backend.calls.length, calls);
  });

  it('cuts a client that does not finish its headers, or its body, in time (408, connection closed)', async () => {
    const headers = await raw(socket, ['GET /v1/status HTTP/1.1\r\nHost: t\r\n']);
    assert.equal(headers.status, 408, headers.text);
    assert.ok(headers.closedAfterMs >= TIMEOUTS.headersMs - 20 && headers.closedAfterMs < TIMEOUTS.requestMs + 500, `${headers.closedAfterMs} ms`);
    const body = await raw(socket, ['PUT /v1/sandboxes/web/policy HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n{"mo']);
    assert.equal(body.status, 408, body.text);
    assert.ok(body.closedAfterMs >= TIMEOUTS.requestMs - 20 && body.closedAfterMs < TIMEOUTS.requestMs + 500, `${body.closedAfterMs} ms`);
    assert.ok(!backend.calls.some((c) => c.startsWith('policySet')));
  });

  it('does not cut an answer that takes longer than receiving a request may (long polling)', async () => {
    const res = await request(socket, 'GET', '/v1/events?wait=5000');
    assert.equal(res.status, 200, res.body);
  });

  it('defaults: a 1 MiB body limit, and timeouts in seconds with the headers\' within the request\'s', () => {
    assert.equal(MAX_BODY_BYTES, 1 << 20);
    assert.ok(REQUEST_TIMEOUTS.headersMs >= 1000 && REQUEST_TIMEOUTS.headersMs <= REQUEST_TIMEOUTS.requestMs);
    assert.ok(REQUEST_TIMEOUTS.requestMs <= 60_000 && REQUEST_TIMEOUTS.checkEveryMs <= REQUEST_TIMEOUTS.headersMs);
  });
});
