// The HTTP+JSON API as a pure router: (method, path, body) -> (status, body). The Unix
// socket server (server.ts) is a thin shell around it, and tests call it without a socket.
// Documented in README "API"; keep it stable: orchestrators build on it.
import { z } from 'zod';
import { ToastnetError, asToastnetError } from '../errors.js';
import { isPoolMember } from '../core/names.js';
import { LINK_MODES, type SandboxMode } from '../core/link-modes.js';
import type { EventQuery, InstanceBackend, SandboxInfo } from './types.js';

export type { EventQuery };

export const CreateSandboxBody = z.strictObject({
  name: z.string().optional().describe('Sandbox name (default sbx-<id>)'),
  mode: z.enum(Object.keys(LINK_MODES) as [SandboxMode, ...SandboxMode[]]).optional().describe('how the sandbox is attached: veth (default) or macvlan'),
  policy: z.unknown().optional().describe('The sandbox\'s policy document (validated by the engine)'),
});
export type CreateSandboxBody = z.infer<typeof CreateSandboxBody>;

/** A backend whose answers may come synchronously (the daemon's engine calls) or not. */
type MaybeAsync<T> = { [K in keyof T]: T[K] extends (...a: infer A) => Promise<infer R> ? (...a: A) => R | Promise<R> : T[K] };

/** What the router serves: the instance backend the CLI uses too, plus creating sandboxes. */
export type ApiBackend = MaybeAsync<InstanceBackend & { create(body: CreateSandboxBody): Promise<SandboxInfo> }>;

export interface ApiRequest {
  method: string;
  path: string;
  body?: unknown;
}

export interface ApiResponse {
  status: number;
  body?: unknown;
}

const errorResponse = (err: unknown): ApiResponse => {
  const e = asToastnetError(err);
  return { status: e.httpStatus, body: { error: e.toJSON() } };
};

function parseBody<T>(schema: z.ZodType<T>, body: unknown): T {
  const r = schema.safeParse(body ?? {});
  if (!r.success) {
    const i = r.error.issues[0];
    const msg = i.code === 'unrecognized_keys' ? `unknown field ${i.keys.map((k) => `"${k}"`).join(', ')}` : `field "${i.path.join('.')}": ${i.message}`;
    throw new ToastnetError('invalid_argument', msg);
  }
  return r.data;
}

function eventQuery(fullPath: string): EventQuery {
  const q = new URLSearchParams(fullPath.includes('?') ? fullPath.slice(fullPath.indexOf('?') + 1) : '');
  const num = (k: string, max: number): number | undefined => {
    const v = q.get(k);
    if (v === null) return undefined;
    if (!/^\d+$/.test(v) || Number(v) > max) throw new ToastnetError('invalid_argument', `query "${k}": want a whole number up to ${max}`);
    return Number(v);
  };
  return { sandbox: q.get('sandbox') ?? undefined, since: num('since', Number.MAX_SAFE_INTEGER), limit: num('limit', 10_000), waitMs: num('wait', 60_000) };
}

export async function route(b: ApiBackend, req: ApiRequest): Promise<ApiResponse> {
  try {
    const path = req.path.replace(/\?.*$/, '').replace(/\/+$/, '');
    const m = /^\/v1\/sandboxes\/([^/]+)(\/inspect|\/policy|\/stats)?$/.exec(path);
    let name: string | undefined;
    try {
      name = m ? decodeURIComponent(m[1]) : undefined;
    } catch {
      throw new ToastnetError('invalid_argument', `malformed sandbox name in path ${path}`);
    }
    // Idle pool members are no sandboxes: not to be read, changed or removed by name.
    if (name !== undefined && isPoolMember(name)) throw new ToastnetError('not_found', `no sandbox named "${name}"`);
    switch (`${req.method} ${m ? `/v1/sandboxes/:name${m[2] ?? ''}` : path}`) {
      case 'GET /v1/status':
        return { status: 200, body: await b.status() };
      case 'GET /v1/sandboxes':
        return { status: 200, body: { sandboxes: await b.list() } };
      case 'POST /v1/sandboxes':
        return { status: 201, body: await b.create(parseBody(CreateSandboxBody, req.body)) };
      case 'GET /v1/sandboxes/:name':
        return { status: 200, body: await b.get(name!) };
      case 'GET /v1/sandboxes/:name/inspect':
        return { status: 200, body: await b.inspect(name!) };
      case 'GET /v1/sandboxes/:name/policy':
        return { status: 200, body: await b.policyGet(name!) };
      case 'PUT /v1/sandboxes/:name/policy':
        return { status: 200, body: await b.policySet(name!, req.body ?? {}) };
      case 'GET /v1/sandboxes/:name/stats':
        return { status: 200, body: (await b.stats(name!))[0] };
      case 'GET /v1/stats':
        return { status: 200, body: { sandboxes: await b.stats() } };
      case 'DELETE /v1/sandboxes/:name':
        await b.remove(name!);
        return { status: 204 };
      case 'GET /v1/events':
        return { status: 200, body: { events: await b.events(eventQuery(req.path)) } };
      case 'GET /v1/dns-queries':
        return { status: 200, body: { queries: await b.dnsQueries(eventQuery(req.path)) } };
      case 'POST /v1/gc':
        return { status: 200, body: await b.gc() };
      case 'POST /v1/up':
        return { status: 200, body: await b.up() };
      case 'POST /v1/down':
        return { status: 200, body: await b.down() };
      default:
        return { status: 404, body: { error: { code: 'not_found', message: `no route ${req.method} ${path}` } } };
    }
  } catch (err) {
    return errorResponse(err);
  }
}
