import { beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ToastnetError } from '../../src/errors.js';
import { route, type ApiBackend, type CreateSandboxBody, type EventQuery } from '../../src/api/routes.js';
import type { GcReport, PolicyView, SandboxInfo, Status } from '../../src/service/engine.js';
import type { DenialEvent, DnsQueryRecord } from '../../src/service/events.js';
import type { SandboxStats } from '../../src/service/accounting.js';

/** An in-memory backend: no kernel, no socket. Records the calls it receives. */
class FakeBackend implements ApiBackend {
  sandboxes = new Map<string, SandboxInfo>();
  /** Each sandbox's own policy document, as the backend received it. */
  policies = new Map<string, unknown>();
  calls: string[] = [];
  nextId = 1;
  /** When set, every method throws it. */
  fail: unknown;

  private check(call: string): void {
    this.calls.push(call);
    if (this.fail !== undefined) throw this.fail;
  }
  status(): Status {
    this.check('status');
    return {
      version: '1.2.3', instance: 'toastnet', up: true, subnet: '10.166.0.0/16', gateway: '10.166.0.1', table: 'toastnet', gatewayLink: 'tn727bg',
      forwarding: true, sandboxes: this.sandboxes.size, addresses: { capacity: 65533, used: this.sandboxes.size, free: 65533 - this.sandboxes.size, releasing: 0 },
      dnsUpstreams: ['192.0.2.53'], stateFile: '/tmp/state.db', socket: '/tmp/toastnet.sock', daemon: { pid: 1 }, pool: { idle: 0 },
    };
  }
  stats(name?: string): SandboxStats[] {
    this.check(name === undefined ? 'stats' : `stats ${name}`);
    const names = name === undefined ? [...this.sandboxes.keys()] : [this.get(name).name];
    return names.map((n) => ({ name: n, ip: this.sandboxes.get(n)!.ip, sent: { packets: 1, bytes: 100 }, received: { packets: 2, bytes: 200 }, blocked: { packets: 0, logged: {} }, quota: {}, limits: {} }));
  }
  list(): SandboxInfo[] {
    this.check('list');
    return [...this.sandboxes.values()];
  }
  get(name: string): SandboxInfo {
    this.check(`get ${name}`);
    const s = this.sandboxes.get(name);
    if (!s) throw new ToastnetError('not_found', `no sandbox "${name}"`);
    return s;
  }
  inspect(name: string): unknown {
    this.check(`inspect ${name}`);
    return { ...this.get(name), kernel: { links: [] } };
  }
  create(body: CreateSandboxBody): SandboxInfo {
    this.check(`create ${JSON.stringify(body)}`);
    const id = this.nextId++;
    const name = body.name ?? `sbx-${id}`;
    if (this.sandboxes.has(name)) throw new ToastnetError('conflict', `sandbox "${name}" exists`);
    const ip = `10.166.0.${id + 1}`;
    const s: SandboxInfo = {
      name, id, ip, gateway: '10.166.0.1', prefixLength: 16, netns: `toastnet-${name}`, mac: '02:74:0a:a6:00:02',
      mode: body.mode ?? 'veth', resolvConf: '/etc/netns/x/resolv.conf', createdAt: '2024-01-01T00:00:00.000Z', state: 'ready',
    };
    this.sandboxes.set(name, s);
    this.policies.set(name, body.policy ?? {});
    return s;
  }
  async remove(name: string): Promise<void> {
    this.check(`remove ${name}`);
    if (!this.sandboxes.delete(name)) throw new ToastnetError('not_found', `no sandbox "${name}"`);
  }
  policyGet(name: string): PolicyView {
    this.check(`policyGet ${name}`);
    if (!this.sandboxes.has(name)) throw new ToastnetError('not_found', `no sandbox named "${name}"`);
    return this.view(name);
  }
  policySet(name: string, policy: unknown): PolicyView {
    this.check(`policySet ${name} ${JSON.stringify(policy)}`);
    if (!this.sandboxes.has(name)) throw new ToastnetError('not_found', `no sandbox named "${name}"`);
    this.policies.set(name, policy);
    return this.view(name);
  }
  /** Effective = own over a fixed default, so a test can tell the two apart. */
  private view(name: string): PolicyView {
    const policy = this.policies.get(name) as PolicyView['policy'];
    return { name, policy, effective: { mode: 'enforce', ...policy } };
  }
  async events(q: EventQuery): Promise<DenialEvent[]> {
    this.check(`events ${JSON.stringify(q)}`);
    return [{ id: 1, time: '2024-01-01T00:00:00.000Z', sandbox: 'x', reason: 'private', rule: 'private', action: 'blocked', src: '10.166.0.2', dst: '10.0.0.1', proto: 'tcp', dport: 22 }];
  }
  async dnsQueries(q: EventQuery): Promise<DnsQueryRecord[]> {
    this.check(`dnsQueries ${JSON.stringify(q)}`);
    return [{ id: 7, time: '2024-01-01T00:00:00.000Z', sandbox: 'x', name: 'example.test', type: 'A', verdict: 'refused', answer: [], reason: 'not in egress.domains' }];
  }
  gc(): GcReport {
    this.check('gc');
    return { sandboxes: [], namespaces: ['toastnet-stale'], links: [], files: [] };
  }
  up(): Status {
    this.check('up');
    return this.status();
  }
  async down(): Promise<{ sandboxes: number }> {
    this.check('down');
    const n = this.sandboxes.size;
    this.sandboxes.clear();
    return { sandboxes: n };
  }
}

function assertError(res: { status: number; body?: unknown }, status: number, code: string, message?: RegExp): void {
  assert.equal(res.status, status);
  const body = res.body as { error: { code: string; message: string } };
  assert.deepEqual(Object.keys(body), ['error']);
  assert.deepEqual(Object.keys(body.error).sort(), ['code', 'message']);
  assert.equal(body.error.code, code);
  assert.equal(typeof body.error.message, 'string');
  if (message) assert.match(body.error.message, message);
}

describe('route', () => {
  let b: FakeBackend;
  beforeEach(() => {
    b = new FakeBackend();
  });

  it('POST /v1/sandboxes creates: 201 with the sandbox', async () => {
    const res = await route(b, { method: 'POST', path: '/v1/sandboxes', body: { name: 'web', mode: 'macvlan' } });
    assert.equal(res.status, 201);
    assert.equal((res.body as SandboxInfo).name, 'web');
    assert.equal((res.body as SandboxInfo).mode, 'macvlan');
    assert.deepEqual(b.calls, ['create {"name":"web","mode":"macvlan"}']);
  });

  it('POST /v1/sandboxes without a body uses the defaults', async () => {
    const res = await route(b, { method: 'POST', path: '/v1/sandboxes' });
    assert.equal(res.status, 201);
    assert.equal((res.body as SandboxInfo).name, 'sbx-1');
    assert.deepEqual(b.calls, ['create {}']);
  });

  it('GET /v1/sandboxes lists: 200 {"sandboxes":[...]}', async () => {
    await route(b, { method: 'POST', path: '/v1/sandboxes', body: { name: 'a' } });
    await route(b, { method: 'POST', path: '/v1/sandboxes', body: { name: 'b' } });
    const res = await route(b, { method: 'GET', path: '/v1/sandboxes' });
    assert.equal(res.status, 200);
    assert.deepEqual((res.body as { sandboxes: SandboxInfo[] }).sandboxes.map((s) => s.name), ['a', 'b']);
  });

  it('GET /v1/sandboxes/{name}: 200, name URL-decoded; trailing slash and query ignored', async () => {
    await route(b, { method: 'POST', path: '/v1/sandboxes', body: { name: 'job.1' } });
    const res = await route(b, { method: 'GET', path: '/v1/sandboxes/job%2E1/?verbose=1' });
    assert.equal(res.status, 200);
    assert.equal((res.body as SandboxInfo).name, 'job.1');
    assert.deepEqual(b.calls.at(-1), 'get job.1');
  });

  it('GET /v1/sandboxes/{name}/inspect: 200', async () => {
    await route(b, { method: 'POST', path: '/v1/sandboxes', body: { name: 'x' } });
    const res = await route(b, { method: 'GET', path: '/v1/sandboxes/x/inspect' });
    assert.equal(res.status, 200);
    assert.deepEqual((res.body as { kernel: unknown }).kernel, { links: [] });
    assert.ok(b.calls.includes('inspect x'));
  });

  it('GET /v1/sandboxes/{name}/stats: 200 with one sandbox\'s figures; GET /v1/stats: all; unknown: 404', async () => {
    await route(b, { method: 'POST', path: '/v1/sandboxes', body: { name: 'x' } });
    await route(b, { method: 'POST', path: '/v1/sandboxes', body: { name: 'y' } });
    const one = await route(b, { method: 'GET', path: '/v1/sandboxes/x/stats' });
    assert.equal(one.status, 200);
    assert.equal((one.body as { name: string }).name, 'x');
    assert.deepEqual((one.body as { sent: unknown }).sent, { packets: 1, bytes: 100 });
    const all = await route(b, { method: 'GET', path: '/v1/stats' });
    assert.deepEqual((all.body as { sandboxes: { name: string }[] }).sandboxes.map((s) => s.name), ['x', 'y']);
    assertError(await route(b, { method: 'GET', path: '/v1/sandboxes/nope/stats' }), 404, 'not_found');
    assert.ok(b.calls.includes('stats x') && b.calls.includes('stats'));
  });

  it('DELETE /v1/sandboxes/{name}: 204 without a body', async () => {
    await route(b, { method: 'POST', path: '/v1/sandboxes', body: { name: 'gone' } });
    const res = await route(b, { method: 'DELETE', path: '/v1/sandboxes/gone' });
    assert.deepEqual(res, { status: 204 });
    assert.equal(b.sandboxes.has('gone'), false);
  });

  it('status, gc, up and down: 200', async () => {
    const s = await route(b, { method: 'GET', path: '/v1/status' });
    assert.equal(s.status, 200);
    assert.equal((s.body as Status).instance, 'toastnet');
    assert.equal((s.body as Status).version, '1.2.3');
    const gc = await route(b, { method: 'POST', path: '/v1/gc' });
    assert.deepEqual(gc, { status: 200, body: { sandboxes: [], namespaces: ['toastnet-stale'], links: [], files: [] } });
    assert.equal((await route(b, { method: 'POST', path: '/v1/up' })).status, 200);
    await route(b, { method: 'POST', path: '/v1/sandboxes' });
    assert.deepEqual(await route(b, { method: 'POST', path: '/v1/down' }), { status: 200, body: { sandboxes: 1 } });
  });

  it('POST /v1/sandboxes passes an optional policy document through unchanged', async () => {
    const policy = { mode: 'report', egress: { internet: false, allow: ['10.1.2.3:443/tcp'] }, group: { name: 'g', ports: [8080, '9000-9100/udp'] } };
    const res = await route(b, { method: 'POST', path: '/v1/sandboxes', body: { name: 'p', policy } });
    assert.equal(res.status, 201);
    assert.equal((res.body as SandboxInfo).name, 'p');
    assert.deepEqual(b.calls, [`create ${JSON.stringify({ name: 'p', policy })}`]);
    assert.deepEqual(b.policies.get('p'), policy);
    // The router does not judge the document: validating it is the engine's job.
    const odd = { whatever: [1, 2] };
    assert.equal((await route(b, { method: 'POST', path: '/v1/sandboxes', body: { name: 'q', policy: odd } })).status, 201);
    assert.deepEqual(b.calls.at(-1), `create ${JSON.stringify({ name: 'q', policy: odd })}`);
  });

  it('GET /v1/sandboxes/{name}/policy: 200 with the backend\'s view', async () => {
    const policy = { egress: { internet: false } };
    await route(b, { method: 'POST', path: '/v1/sandboxes', body: { name: 'job.1', policy } });
    const res = await route(b, { method: 'GET', path: '/v1/sandboxes/job%2E1/policy/' });
    assert.deepEqual(res, { status: 200, body: { name: 'job.1', policy, effective: { mode: 'enforce', ...policy } } });
    assert.deepEqual(b.calls.at(-1), 'policyGet job.1');
  });

  it('PUT /v1/sandboxes/{name}/policy: the body goes to the backend as is; 200 with the new view', async () => {
    await route(b, { method: 'POST', path: '/v1/sandboxes', body: { name: 'web' } });
    const policy = { mode: 'report', inbound: { enabled: true, ports: ['8080/tcp'] }, unknownToTheRouter: 1 };
    const res = await route(b, { method: 'PUT', path: '/v1/sandboxes/web/policy', body: policy });
    assert.equal(res.status, 200);
    assert.deepEqual(res.body, { name: 'web', policy, effective: policy });
    assert.deepEqual(b.calls.at(-1), `policySet web ${JSON.stringify(policy)}`);
    assert.deepEqual(b.policies.get('web'), policy);
    // A later GET sees what was set.
    assert.deepEqual((await route(b, { method: 'GET', path: '/v1/sandboxes/web/policy' })).body, res.body);
  });

  it('PUT /v1/sandboxes/{name}/policy without a body sets the empty policy', async () => {
    await route(b, { method: 'POST', path: '/v1/sandboxes', body: { name: 'web', policy: { mode: 'report' } } });
    const res = await route(b, { method: 'PUT', path: '/v1/sandboxes/web/policy' });
    assert.deepEqual(res, { status: 200, body: { name: 'web', policy: {}, effective: { mode: 'enforce' } } });
    assert.deepEqual(b.calls.at(-1), 'policySet web {}');
  });

  it('policy routes: 404 not_found from the backend, and other backend errors mapped', async () => {
    assertError(await route(b, { method: 'GET', path: '/v1/sandboxes/nope/policy' }), 404, 'not_found', /no sandbox named "nope"/);
    assertError(await route(b, { method: 'PUT', path: '/v1/sandboxes/nope/policy', body: { mode: 'report' } }), 404, 'not_found', /no sandbox named "nope"/);
    assert.deepEqual(b.calls, ['policyGet nope', 'policySet nope {"mode":"report"}']);
    b.fail = new ToastnetError('invalid_argument', 'policy: unknown field "egress.alow"');
    assertError(await route(b, { method: 'PUT', path: '/v1/sandboxes/x/policy', body: { egress: { alow: [] } } }), 400, 'invalid_argument', /egress\.alow/);
    b.fail = new ToastnetError('kernel', 'nft: EEXIST');
    assertError(await route(b, { method: 'PUT', path: '/v1/sandboxes/x/policy', body: {} }), 500, 'kernel', /EEXIST/);
  });

  it('GET /v1/events passes the query through and answers {"events":[...]}', async () => {
    const res = await route(b, { method: 'GET', path: '/v1/events?sandbox=job.1&since=5&limit=10&wait=0' });
    assert.equal(res.status, 200);
    assert.deepEqual((res.body as { events: DenialEvent[] }).events.map((e) => e.id), [1]);
    assert.deepEqual(b.calls, ['events {"sandbox":"job.1","since":5,"limit":10,"waitMs":0}']);
    await route(b, { method: 'GET', path: '/v1/events' });
    assert.deepEqual(b.calls.at(-1), 'events {}');
  });

  it('GET /v1/events: 400 for a query value that is not a whole number in range, without calling the backend', async () => {
    for (const q of ['limit=abc', 'limit=10001', 'since=-1', 'wait=60001', 'wait=1.5', 'since=']) {
      assertError(await route(b, { method: 'GET', path: `/v1/events?${q}` }), 400, 'invalid_argument', new RegExp(`query "${q.split('=')[0]}"`));
    }
    assert.deepEqual(b.calls, []);
  });

  it('404 for an unknown route or method, without calling the backend', async () => {
    const cases: [string, string][] = [
      ['GET', '/v1/nothing'], ['GET', '/'], ['PUT', '/v1/sandboxes'], ['DELETE', '/v1/sandboxes'], ['POST', '/v1/sandboxes/x'],
      ['GET', '/v2/sandboxes'], ['GET', '/v1/sandboxes/a/b'], ['POST', '/v1/status'], ['GET', '/v1/sandboxes/x/inspect/more'],
      ['POST', '/v1/sandboxes/x/policy'], ['DELETE', '/v1/sandboxes/x/policy'], ['PUT', '/v1/sandboxes/x'],
      ['GET', '/v1/sandboxes/x/policy/more'], ['PUT', '/v1/sandboxes/x/inspect'], ['GET', '/v1/sandboxes/policy/x'],
    ];
    for (const [method, path] of cases) {
      const res = await route(b, { method, path });
      assertError(res, 404, 'not_found', new RegExp(`no route ${method}`));
    }
    assert.deepEqual(b.calls, []);
  });

  it('GET /v1/dns-queries: 200 {"queries":[...]}, query parsed like events', async () => {
    const res = await route(b, { method: 'GET', path: '/v1/dns-queries?sandbox=x&limit=5' });
    assert.equal(res.status, 200);
    assert.equal((res.body as { queries: DnsQueryRecord[] }).queries[0].verdict, 'refused');
    assert.deepEqual(b.calls, ['dnsQueries {"sandbox":"x","limit":5}']);
    const bad = await route(b, { method: 'GET', path: '/v1/dns-queries?limit=x' });
    assert.equal(bad.status, 400);
  });

  it('400 for a malformed percent-encoding in the sandbox name', async () => {
    const res = await route(b, { method: 'GET', path: '/v1/sandboxes/%E0%A4%A' });
    assertError(res, 400, 'invalid_argument', /malformed sandbox name/);
    assert.deepEqual(b.calls, []);
  });

  it('400 for an unknown body field, naming it, without calling the backend', async () => {
    const res = await route(b, { method: 'POST', path: '/v1/sandboxes', body: { name: 'a', ip: '10.166.0.9' } });
    assertError(res, 400, 'invalid_argument', /unknown field "ip"/);
    assert.deepEqual(b.calls, []);
  });

  it('400 for a bad mode or a non-string name', async () => {
    assertError(await route(b, { method: 'POST', path: '/v1/sandboxes', body: { mode: 'bridge' } }), 400, 'invalid_argument', /field "mode"/);
    assertError(await route(b, { method: 'POST', path: '/v1/sandboxes', body: { name: 7 } }), 400, 'invalid_argument', /field "name"/);
    assertError(await route(b, { method: 'POST', path: '/v1/sandboxes', body: [] }), 400, 'invalid_argument');
    assert.deepEqual(b.calls, []);
  });

  it('maps backend errors to their HTTP status and error body', async () => {
    assertError(await route(b, { method: 'GET', path: '/v1/sandboxes/nope' }), 404, 'not_found', /no sandbox "nope"/);
    assertError(await route(b, { method: 'DELETE', path: '/v1/sandboxes/nope' }), 404, 'not_found');
    await route(b, { method: 'POST', path: '/v1/sandboxes', body: { name: 'dup' } });
    assertError(await route(b, { method: 'POST', path: '/v1/sandboxes', body: { name: 'dup' } }), 409, 'conflict', /"dup" exists/);

    const table: [unknown, number, string][] = [
      [new ToastnetError('exhausted', 'full'), 507, 'exhausted'],
      [new ToastnetError('busy', 'locked'), 409, 'busy'],
      [new ToastnetError('not_ready', 'run up first'), 503, 'not_ready'],
      [new ToastnetError('kernel', 'EPERM'), 500, 'kernel'],
      [new Error('oops'), 500, 'internal'],
      ['a string', 500, 'internal'],
    ];
    for (const [err, status, code] of table) {
      b.fail = err;
      for (const req of [{ method: 'GET', path: '/v1/status' }, { method: 'POST', path: '/v1/sandboxes', body: {} }, { method: 'POST', path: '/v1/down' }]) {
        assertError(await route(b, req), status, code);
      }
    }
    b.fail = new Error('oops');
    assert.deepEqual(await route(b, { method: 'GET', path: '/v1/sandboxes' }), { status: 500, body: { error: { code: 'internal', message: 'oops' } } });
  });

  it('maps a rejected async backend call (remove) to its status', async () => {
    b.fail = new ToastnetError('kernel', 'netlink: EBUSY');
    assertError(await route(b, { method: 'DELETE', path: '/v1/sandboxes/any' }), 500, 'kernel', /EBUSY/);
  });
});
