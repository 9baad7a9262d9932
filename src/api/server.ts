// The API on a Unix socket (mode 0600: root only), around the pure router. What the router
// cannot see is enforced here: the size of a request body and how long a client may take
// to send its request.
import fs from 'node:fs';
import http from 'node:http';
import { ToastnetError, asToastnetError } from '../errors.js';
import { ApiBackend, ApiResponse, route } from './routes.js';

/** The largest request body accepted: a policy document is a few KiB, so 1 MiB is ample. */
export const MAX_BODY_BYTES = 1 << 20;

/**
 * How long a client may take to send a request. Callers are the CLI and orchestrators on
 * the same host, which send a request in one go, so seconds are plenty; Node's defaults
 * (60 s for the headers, 300 s for the whole request) are sized for slow clients across
 * the internet. A client that stalls mid-request (hung, or holding connections open on
 * purpose) would otherwise keep a socket and its buffers in the daemon, which also serves
 * the sandboxes' DNS, for minutes each. Only receiving the request is timed: an answer that
 * takes long (events with `wait`, up to 60 s) is not cut.
 */
export interface RequestTimeouts {
  /** Until the request's headers are complete. */
  headersMs: number;
  /** Until the whole request, body included, is received. */
  requestMs: number;
  /** How often Node checks the two above: a stalled client is cut within this much more. */
  checkEveryMs: number;
}

export const REQUEST_TIMEOUTS: RequestTimeouts = { headersMs: 10_000, requestMs: 30_000, checkEveryMs: 1_000 };

/** A request as answered, for the daemon's log. */
export interface ApiAnswer {
  method: string;
  path: string;
  status: number;
  body?: unknown;
  /** Time in the router (the operation), as in the answer's Server-Timing. */
  ms: number;
}

export interface ServeOptions {
  timeouts?: RequestTimeouts;
  maxBodyBytes?: number;
  /** Called once per routed request after its answer is sent. */
  onAnswer?: (a: ApiAnswer) => void;
}

export function serveApi(backend: ApiBackend, socketPath: string, o: ServeOptions = {}): Promise<http.Server> {
  const timeouts = o.timeouts ?? REQUEST_TIMEOUTS;
  const maxBody = o.maxBodyBytes ?? MAX_BODY_BYTES;
  const server = http.createServer({ connectionsCheckingInterval: timeouts.checkEveryMs }, (req, res) => {
    void readBody(req, maxBody).then(async (raw) => {
      if (raw === undefined) {
        // Refused without reading the rest: the connection is closed after the answer, so
        // the client cannot go on to send the next request on it.
        res.setHeader('connection', 'close');
        req.pause();
        send(res, errorAnswer(new ToastnetError('too_large', `request body over ${maxBody} bytes`)));
        return;
      }
      let body: unknown;
      const text = raw.toString('utf8');
      if (text.trim() !== '') {
        try {
          body = JSON.parse(text);
        } catch {
          send(res, errorAnswer(new ToastnetError('invalid_argument', 'request body is not valid JSON')));
          return;
        }
      }
      const t0 = performance.now();
      const method = req.method ?? 'GET';
      const path = req.url ?? '/';
      const r = await route(backend, { method, path, body });
      const ms = performance.now() - t0;
      // How long the operation itself took, apart from transport: lets callers see where time goes.
      res.setHeader('server-timing', `op;dur=${ms.toFixed(3)}`);
      send(res, r);
      o.onAnswer?.({ method, path, status: r.status, body: r.body, ms });
    }).catch((err: unknown) => {
      // Only a bug gets here (the router answers every error it meets): still answer once.
      if (res.headersSent) res.destroy();
      else send(res, errorAnswer(asToastnetError(err)));
    });
  });
  server.headersTimeout = timeouts.headersMs;
  server.requestTimeout = timeouts.requestMs;
  // Clients keep connections (client.ts closes idle ones after 4 s): close ours later than they do.
  server.keepAliveTimeout = 10_000;
  return new Promise((resolve, reject) => {
    fs.rmSync(socketPath, { force: true }); // we hold the instance lock: any old socket is stale
    server.once('error', reject);
    const old = process.umask(0o177);
    server.listen(socketPath, () => {
      process.umask(old);
      server.off('error', reject);
      resolve(server);
    });
  });
}

/**
 * The request's body, or undefined as soon as it is known to be over `limit` bytes: at
 * once from a Content-Length that says so, else when the bytes read pass it (a chunked
 * body has no length up front). Nothing past the limit is kept.
 */
function readBody(req: http.IncomingMessage, limit: number): Promise<Buffer | undefined> {
  const declared = Number(req.headers['content-length']);
  if (declared > limit) return Promise.resolve(undefined);
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (c: Buffer) => {
      size += c.length;
      if (size <= limit) {
        chunks.push(c);
        return;
      }
      req.off('data', onData);
      req.off('end', onEnd);
      resolve(undefined);
    };
    const onEnd = () => resolve(Buffer.concat(chunks));
    req.on('data', onData);
    req.on('end', onEnd);
  });
}

const errorAnswer = (e: ToastnetError): ApiResponse => ({ status: e.httpStatus, body: { error: e.toJSON() } });

function send(res: http.ServerResponse, r: ApiResponse): void {
  for (const [k, v] of Object.entries(r.headers ?? {})) res.setHeader(k, v);
  if (r.body === undefined) {
    res.writeHead(r.status).end();
    return;
  }
  const text = JSON.stringify(r.body);
  res.writeHead(r.status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) }).end(text);
}
