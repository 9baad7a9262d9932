// The API contract as an OpenAPI 3.1 document, generated from the zod schemas the API
// validates requests with and describes responses with (schemas.ts), so the document is the
// code's own description. Served at GET /v1/openapi.json and checked in as
// docs/openapi.json (`npm run openapi` writes it; a unit test fails when it is stale, another
// when a route in routes.ts has no entry here). A new route is one entry in OPERATIONS.
import { z } from 'zod';
import { PolicySchema } from '../core/policy.js';
import { LabelsSchema } from '../core/labels.js';
import * as S from './schemas.js';

/** Every schema the document names, under #/components/schemas/<key>. */
const COMPONENTS = {
  CreateSandboxBody: S.CreateSandboxBodySchema,
  Policy: PolicySchema,
  Labels: LabelsSchema,
  Error: S.ErrorBodySchema,
  SandboxInfo: S.SandboxInfoSchema,
  SandboxList: S.SandboxListSchema,
  SandboxInspection: S.SandboxInspectionSchema,
  SandboxStats: S.SandboxStatsSchema,
  StatsList: S.StatsListSchema,
  DenialEvent: S.DenialEventSchema,
  EventList: S.EventListSchema,
  DnsQueryRecord: S.DnsQueryRecordSchema,
  DnsQueryList: S.DnsQueryListSchema,
  FlowRecord: S.FlowRecordSchema,
  FlowCounts: S.FlowCountsSchema,
  FlowList: S.FlowListSchema,
  PolicyView: S.PolicyViewSchema,
  DownReport: S.DownReportSchema,
  GcReport: S.GcReportSchema,
  ResolverCounters: S.ResolverCountersSchema,
  Status: S.StatusSchema,
  Attachment: S.AttachmentSchema,
  TapOptions: S.TapOptionsSchema,
  TapInfo: S.TapInfoSchema,
  CniRequest: S.CniRequestSchema,
  CniResult: S.CniResultSchema,
  CniError: S.CniErrorSchema,
  OpenApiDocument: z.looseObject({ openapi: z.string(), info: z.looseObject({ title: z.string(), version: z.string() }), paths: z.record(z.string(), z.unknown()) }),
} satisfies Record<string, z.ZodType>;

type Component = keyof typeof COMPONENTS;

const whole = (max: number) => z.number().int().min(0).max(max);
/** Query parameters of the two log reads (routes.ts eventQuery). */
const LOG_QUERY = {
  sandbox: z.string().describe('only this sandbox'),
  since: whole(Number.MAX_SAFE_INTEGER).describe('only entries with a larger id'),
  limit: whole(10_000).describe('at most this many, the newest'),
  wait: whole(60_000).describe('ms to wait for new entries when there are none (long polling)'),
};

interface Operation {
  summary: string;
  /** The request body's schema (JSON). */
  body?: Component;
  query?: Record<string, z.ZodType>;
  /** The status of success, and the body it comes with (none: no body). */
  ok: { status: number; body?: Component; description: string };
  /** Another success without a body (CNI calls with nothing to print). */
  okEmpty?: { status: number; description: string };
  /** The body of a failure, when it is not the API's Error. */
  error?: Component;
}

/** Every operation, keyed "METHOD /path" with :name for a sandbox name, as in routes.ts. */
export const OPERATIONS: Record<string, Operation> = {
  'GET /v1/status': { summary: 'Instance status: setup, addresses, DNS, daemon, version', ok: { status: 200, body: 'Status', description: 'the status' } },
  'GET /v1/sandboxes': { summary: 'List sandboxes', ok: { status: 200, body: 'SandboxList', description: 'every sandbox' } },
  'POST /v1/sandboxes': { summary: 'Create a sandbox', body: 'CreateSandboxBody', ok: { status: 201, body: 'SandboxInfo', description: 'the sandbox, ready' } },
  'GET /v1/sandboxes/:name': { summary: 'One sandbox', ok: { status: 200, body: 'SandboxInfo', description: 'the sandbox' } },
  'DELETE /v1/sandboxes/:name': { summary: 'Remove a sandbox (its traffic stops, its name is free; processes inside are ended just after)', ok: { status: 204, description: 'removed' } },
  'GET /v1/sandboxes/:name/inspect': { summary: 'A sandbox and its network as the kernel reports it', ok: { status: 200, body: 'SandboxInspection', description: 'the sandbox with `kernel`' } },
  'GET /v1/sandboxes/:name/policy': { summary: 'A sandbox\'s policy, as given and as enforced', ok: { status: 200, body: 'PolicyView', description: 'the policy' } },
  'PUT /v1/sandboxes/:name/policy': { summary: 'Replace a sandbox\'s policy atomically; cuts connections it forbids', body: 'Policy', ok: { status: 200, body: 'PolicyView', description: 'the new policy and `cut`' } },
  'GET /v1/sandboxes/:name/stats': { summary: 'A sandbox\'s accounting', ok: { status: 200, body: 'SandboxStats', description: 'its counters' } },
  'GET /v1/stats': { summary: 'Every sandbox\'s accounting', ok: { status: 200, body: 'StatsList', description: 'all counters' } },
  'GET /v1/events': { summary: 'Denials the kernel logged, attributed to sandbox and rule', query: LOG_QUERY, ok: { status: 200, body: 'EventList', description: 'oldest first' } },
  'GET /v1/dns-queries': { summary: 'The resolver\'s query log', query: { sandbox: LOG_QUERY.sandbox, since: LOG_QUERY.since, limit: LOG_QUERY.limit }, ok: { status: 200, body: 'DnsQueryList', description: 'oldest first' } },
  'GET /v1/flows': { summary: 'The audit log of flows sandboxes opened (conntrack: open and closed records, bytes each way, the name where known)', query: LOG_QUERY, ok: { status: 200, body: 'FlowList', description: 'oldest first, with the counts of records and of events lost' } },
  'POST /v1/gc': { summary: 'Remove what no live sandbox owns', ok: { status: 200, body: 'GcReport', description: 'what was removed' } },
  'POST /v1/up': { summary: 'Re-apply the host setup', ok: { status: 200, body: 'Status', description: 'the status after' } },
  'POST /v1/down': { summary: 'Tear the instance down (the daemon then exits)', ok: { status: 200, body: 'DownReport', description: 'how many sandboxes were removed' } },
  'POST /v1/cni': {
    summary: 'One CNI call, as the toastnet-cni shim forwards it (the daemon only)', body: 'CniRequest', error: 'CniError',
    ok: { status: 200, body: 'CniResult', description: 'the result the shim prints' },
    okEmpty: { status: 204, description: 'success without output (DEL, CHECK, GC, STATUS)' },
  },
  'GET /v1/openapi.json': { summary: 'This document', ok: { status: 200, body: 'OpenApiDocument', description: 'the OpenAPI 3.1 document' } },
};

const ref = (c: Component) => ({ $ref: `#/components/schemas/${c}` });
const json = (c: Component) => ({ 'application/json': { schema: ref(c) } });

/** "/v1/sandboxes/:name/policy" -> "/v1/sandboxes/{name}/policy". */
export const openApiPath = (pattern: string) => pattern.replace(/:([a-z]+)/g, '{$1}');

function components(): Record<string, unknown> {
  const registry = z.registry<{ id: string }>();
  for (const [id, schema] of Object.entries(COMPONENTS)) registry.add(schema, { id });
  const { schemas } = z.toJSONSchema(registry, { target: 'draft-2020-12', uri: (id) => `#/components/schemas/${id}`, unrepresentable: 'any' });
  // Each is a part of this document, not a document of its own.
  for (const s of Object.values(schemas)) {
    delete (s as { $schema?: string }).$schema;
    delete (s as { $id?: string }).$id;
  }
  return schemas;
}

/** The OpenAPI 3.1 document for `version` of toastnet. */
export function openApiDocument(version: string): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const [key, op] of Object.entries(OPERATIONS)) {
    const [method, pattern] = key.split(' ');
    const parameters = [
      ...[...pattern.matchAll(/:([a-z]+)/g)].map((m) => ({ name: m[1], in: 'path', required: true, schema: { type: 'string' }, description: 'sandbox name' })),
      ...Object.entries(op.query ?? {}).map(([name, schema]) => {
        const { $schema: _, description, ...rest } = z.toJSONSchema(schema, { target: 'draft-2020-12' }) as Record<string, unknown>;
        return { name, in: 'query', required: false, schema: rest, description };
      }),
    ];
    (paths[openApiPath(pattern)] ??= {})[method.toLowerCase()] = {
      operationId: `${method.toLowerCase()}${pattern.replace(/:name/g, 'Sandbox').split(/[/.-]/).map((w) => w.charAt(0).toUpperCase() + w.slice(1)).join('')}`,
      summary: op.summary,
      ...(parameters.length ? { parameters } : {}),
      ...(op.body ? { requestBody: { required: method !== 'POST', content: json(op.body) } } : {}),
      responses: {
        [op.ok.status]: { description: op.ok.description, ...(op.ok.body ? { content: json(op.ok.body) } : {}) },
        ...(op.okEmpty ? { [op.okEmpty.status]: { description: op.okEmpty.description } } : {}),
        default: op.error
          ? { description: 'the failure as the protocol behind this route has it', content: json(op.error) }
          : { description: 'an error: its code, HTTP status and exit code are in the README\'s error table', content: json('Error') },
      },
    };
  }
  return {
    openapi: '3.1.0',
    info: {
      title: 'toastnet',
      version,
      description: 'HTTP+JSON on the daemon\'s Unix socket <runDir>/toastnet.sock (mode 0600). Bodies over 1 MiB get 413; a known path asked with another method gets 405 with Allow.',
    },
    paths,
    components: { schemas: components() },
  };
}
