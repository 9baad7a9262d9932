// Checks an API answer against the OpenAPI document: the operation is found by method and
// path in the document's paths, the schema by the answer's status (or `default` for errors).
import http from 'node:http';
import { validate } from './json-schema.js';

interface Doc {
  paths: Record<string, Record<string, { responses: Record<string, { content?: Record<string, { schema: Record<string, unknown> }> }> }>>;
}

/** The document's path template that `path` (query and trailing slash ignored) falls under. */
export function templateOf(doc: Doc, path: string): string | undefined {
  const p = path.replace(/\?.*$/, '').replace(/\/+$/, '');
  return Object.keys(doc.paths).find((t) => new RegExp(`^${t.replace(/\{[^}]+\}/g, '[^/]+').replace(/\./g, '\\.')}$`).test(p));
}

/** Why the answer does not match the document (empty: it does). The body is checked as JSON, as a client sees it. */
export function responseErrors(doc: unknown, method: string, path: string, status: number, body: unknown): string[] {
  const d = doc as Doc;
  const t = templateOf(d, path);
  if (!t) return [`${path}: no such path in the document`];
  const op = d.paths[t][method.toLowerCase()];
  // A method the path does not take: the 405 the document's description promises, with an error body.
  if (!op) return status === 405 ? validate(doc, { $ref: '#/components/schemas/Error' }, body, `${method} ${t} 405`) : [`${method} ${t}: not in the document`];
  const r = op.responses[String(status)] ?? op.responses.default;
  if (!r) return [`${method} ${t}: status ${status} not in the document`];
  const schema = r.content?.['application/json']?.schema;
  if (!schema) return body === undefined ? [] : [`${method} ${t} ${status}: the document says no body, got one`];
  if (body === undefined) return [`${method} ${t} ${status}: no body`];
  return validate(doc, schema, JSON.parse(JSON.stringify(body)), `${method} ${t} ${status}`);
}

/** One request on a daemon's Unix socket: the status and the parsed body as sent. */
export function askSocket(socketPath: string, method: string, path: string, body?: unknown): Promise<{ status: number; body: unknown }> {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : JSON.stringify(body);
    const req = http.request({ socketPath, method, path, headers: data ? { 'content-type': 'application/json' } : {} }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        resolve({ status: res.statusCode ?? 0, body: text ? JSON.parse(text) : undefined });
      });
    });
    req.on('error', reject);
    req.end(data);
  });
}

/** Why a request body does not match the document's requestBody for the operation (empty: it does). */
export function requestErrors(doc: unknown, method: string, path: string, body: unknown): string[] {
  const d = doc as Doc & { paths: Record<string, Record<string, { requestBody?: { content: Record<string, { schema: Record<string, unknown> }> } }>> };
  const t = templateOf(d, path);
  const rb = t ? d.paths[t][method.toLowerCase()]?.requestBody : undefined;
  if (!rb) return body === undefined ? [] : [`${method} ${path}: the document takes no body`];
  return validate(doc, rb.content['application/json'].schema, body, `${method} ${t} body`);
}
