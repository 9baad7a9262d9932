// The HTTP+JSON API as a pure router: (method, path, body) -> (status, body). The Unix
// socket server (server.ts) is a thin shell around it, and tests call it without a socket.
// Documented in README "API"; keep it stable: orchestrators build on it.
import { z } from 'zod';
import { ToastnetError, asToastnetError } from '../errors.js';
import { isPoolMember } from '../core/names.js';
import { toastnetVersion } from '../version.js';
import { CreateSandboxRequest } from './schemas.js';
import { openApiDocument } from './openapi.js';
import type { EventQuery, InstanceBackend, PolicyView, SandboxInfo } from './types.js';

export type { EventQuery };

// What the route accepts (schemas.ts): the policy is checked by the engine (which names the
// field at fault), so here it is any JSON. Clients send api/types' CreateSandboxBody, typed.
export const CreateSandboxBody = CreateSandboxRequest;
export type CreateSandboxBody = z.infer<typeof CreateSandboxBody>;

/** A backend whose answers may come synchronously (the daemon's engine calls) or not. */
type MaybeAsync<T> = { [K in keyof T]: T[K] extends (...a: infer A) => Promise<infer R> ? (...a: A) => R | Promise<R> : T[K] };

/**
 * What the router serves: the instance backend the CLI uses too, plus creating sandboxes.
 * A policy arrives as any JSON, for the engine to check.
 */
export type ApiBackend = MaybeAsync<Omit<InstanceBackend, 'policySet'> & {
  policySet(name: string, policy: unknown): Promise<PolicyView>;
  create(body: CreateSandboxBody): Promise<SandboxInfo>;
  /**
   * One CNI call as the toastnet-cni shim forwards it, answered whole (status 200 with the
   * result, or the spec's error object): the daemon only.
   */
  cni?(body: unknown): Promise<ApiResponse>;
}>;

export interface ApiRequest {
  method: string;
  path: string;
  body?: unknown;
}

export interface ApiResponse {
  status: number;
  body?: unknown;
  /** Extra response headers (`allow` on a 405). */
  headers?: Record<string, string>;
}

const errorResponse = (err: unknown): ApiResponse => {
  const e = asToastnetError(err);
  return { status: e.httpStatus, body: { error: e.toJSON() } };
};

/** An absent body is an empty object; a JSON `null` is not (it is checked, and refused, like any other non-object). */
function parseBody<T>(schema: z.ZodType<T>, body: unknown): T {
  const r = schema.safeParse(body === undefined ? {} : body);
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

type Handler = (b: ApiBackend, req: ApiRequest, name: string) => Promise<ApiResponse>;

/**
 * Every route, by path pattern and then method. One table serves both the dispatch and the
 * `Allow` header of a 405, so the two cannot disagree. `:name` is a sandbox name.
 */
const ROUTES: Record<string, Record<string, Handler>> = {
  '/v1/status': {
    GET: async (b) => ({ status: 200, body: await b.status() }),
  },
  '/v1/sandboxes': {
    GET: async (b) => ({ status: 200, body: { sandboxes: await b.list() } }),
    POST: async (b, req) => ({ status: 201, body: await b.create(parseBody(CreateSandboxBody, req.body)) }),
  },
  '/v1/sandboxes/:name': {
    GET: async (b, _req, name) => ({ status: 200, body: await b.get(name) }),
    DELETE: async (b, _req, name) => {
      await b.remove(name);
      return { status: 204 };
    },
  },
  '/v1/sandboxes/:name/inspect': {
    GET: async (b, _req, name) => ({ status: 200, body: await b.inspect(name) }),
  },
  '/v1/sandboxes/:name/policy': {
    GET: async (b, _req, name) => ({ status: 200, body: await b.policyGet(name) }),
    PUT: async (b, req, name) => ({ status: 200, body: await b.policySet(name, req.body ?? {}) }),
  },
  '/v1/sandboxes/:name/stats': {
    GET: async (b, _req, name) => ({ status: 200, body: (await b.stats(name))[0] }),
  },
  '/v1/stats': {
    GET: async (b) => ({ status: 200, body: { sandboxes: await b.stats() } }),
  },
  '/v1/events': {
    GET: async (b, req) => ({ status: 200, body: { events: await b.events(eventQuery(req.path)) } }),
  },
  '/v1/dns-queries': {
    GET: async (b, req) => ({ status: 200, body: { queries: await b.dnsQueries(eventQuery(req.path)) } }),
  },
  '/v1/flows': {
    GET: async (b, req) => ({ status: 200, body: await b.flows(eventQuery(req.path)) }),
  },
  '/v1/cni': {
    POST: async (b, req) => {
      if (!b.cni) throw new ToastnetError('not_ready', 'CNI calls are served by the daemon only');
      return b.cni(req.body);
    },
  },
  '/v1/gc': {
    POST: async (b) => ({ status: 200, body: await b.gc() }),
  },
  '/v1/up': {
    POST: async (b) => ({ status: 200, body: await b.up() }),
  },
  '/v1/down': {
    POST: async (b) => ({ status: 200, body: await b.down() }),
  },
  '/v1/openapi.json': {
    GET: async () => ({ status: 200, body: (openApi ??= openApiDocument(toastnetVersion())) }),
  },
};

/** The OpenAPI document, made on first request (~ms) and kept. */
let openApi: Record<string, unknown> | undefined;

/** Every route as "METHOD /path" (with :name), the keys of openapi.ts's OPERATIONS. */
export const routeKeys = (): string[] => Object.entries(ROUTES).flatMap(([p, methods]) => Object.keys(methods).map((m) => `${m} ${p}`));

/** A path's route pattern, and the raw (still encoded) sandbox name in it if any. */
function patternOf(path: string): { pattern: string; rawName?: string } {
  const m = /^\/v1\/sandboxes\/([^/]+)(\/inspect|\/policy|\/stats)?$/.exec(path);
  return m ? { pattern: `/v1/sandboxes/:name${m[2] ?? ''}`, rawName: m[1] } : { pattern: path };
}

export async function route(b: ApiBackend, req: ApiRequest): Promise<ApiResponse> {
  try {
    const path = req.path.replace(/\?.*$/, '').replace(/\/+$/, '');
    const { pattern, rawName } = patternOf(path);
    const methods = Object.hasOwn(ROUTES, pattern) ? ROUTES[pattern] : undefined;
    if (!methods) return { status: 404, body: { error: { code: 'not_found', message: `no route ${req.method} ${path}` } } };
    const handler = Object.hasOwn(methods, req.method) ? methods[req.method] : undefined;
    if (!handler) {
      // The path exists: say so, and which methods it takes (RFC 9110 requires the Allow header).
      const allow = Object.keys(methods).join(', ');
      const err = new ToastnetError('method_not_allowed', `${req.method} ${path}: method not allowed (allowed: ${allow})`);
      return { ...errorResponse(err), headers: { allow } };
    }
    let name = '';
    if (rawName !== undefined) {
      try {
        name = decodeURIComponent(rawName);
      } catch {
        throw new ToastnetError('invalid_argument', `malformed sandbox name in path ${path}`);
      }
      // Idle pool members are no sandboxes: not to be read, changed or removed by name.
      if (isPoolMember(name)) throw new ToastnetError('not_found', `no sandbox named "${name}"`);
    }
    return await handler(b, req, name);
  } catch (err) {
    return errorResponse(err);
  }
}
