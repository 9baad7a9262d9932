// The API on a Unix socket (mode 0600: root only), around the pure router.
import fs from 'node:fs';
import http from 'node:http';
import { ApiBackend, route } from './routes.js';

const MAX_BODY = 1 << 20;

export function serveApi(backend: ApiBackend, socketPath: string): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY) req.destroy();
      else chunks.push(c);
    });
    req.on('end', async () => {
      let body: unknown;
      const text = Buffer.concat(chunks).toString('utf8');
      if (text.trim() !== '') {
        try {
          body = JSON.parse(text);
        } catch {
          send(res, 400, { error: { code: 'invalid_argument', message: 'request body is not valid JSON' } });
          return;
        }
      }
      const t0 = performance.now();
      const r = await route(backend, { method: req.method ?? 'GET', path: req.url ?? '/', body });
      // How long the operation itself took, apart from transport: lets callers see where time goes.
      res.setHeader('server-timing', `op;dur=${(performance.now() - t0).toFixed(3)}`);
      send(res, r.status, r.body);
    });
  });
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

function send(res: http.ServerResponse, status: number, body: unknown): void {
  if (body === undefined) {
    res.writeHead(status).end();
    return;
  }
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) }).end(text);
}
