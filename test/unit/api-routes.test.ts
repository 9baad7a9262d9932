import { beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ToastnetError } from '../../src/errors.js';
import { route } from '../../src/api/routes.js';
import type { SandboxInfo, Status } from '../../src/service/engine.js';
import type { DenialEvent, DnsQueryRecord } from '../../src/service/events.js';
import type { FlowList } from '../../src/api/types.js';
import { FakeBackend } from '../helpers/fake-backend.js';

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

  it('POST /v1/sandboxes with labels: the sandbox carries them; a bad label is 400 with one line naming it', async () => {
    const res = await route(b, { method: 'POST', path: '/v1/sandboxes', body: { name: 'web', labels: { team: 'ml' } } });
    assert.equal(res.status, 201);
    assert.deepEqual((res.body as SandboxInfo).labels, { team: 'ml' });
    assert.deepEqual(((await route(b, { method: 'GET', path: '/v1/sandboxes/web' })).body as SandboxInfo).labels, { team: 'ml' });
    assertError(await route(b, { method: 'POST', path: '/v1/sandboxes', body: { labels: { team: 'a b' } } }), 400, 'invalid_argument', /^labels: "team": a label value is empty or 1-63[^\n]*$/);
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

  it('404 for an unknown path, whatever the method, without calling the backend', async () => {
    const cases: [string, string][] = [
      ['GET', '/v1/nothing'], ['GET', '/'], ['POST', '/'], ['GET', '/v2/sandboxes'], ['GET', '/v1/sandboxes/a/b'],
      ['GET', '/v1/sandboxes/x/inspect/more'], ['GET', '/v1/sandboxes/x/policy/more'], ['DELETE', '/v1/sandboxes/x/policy/more'],
      ['GET', '/v1/sandboxes/policy/x'], ['GET', 'constructor'], ['GET', '/__proto__'],
    ];
    for (const [method, path] of cases) {
      const res = await route(b, { method, path });
      assertError(res, 404, 'not_found', new RegExp(`no route ${method}`));
      assert.equal(res.headers, undefined);
    }
    assert.deepEqual(b.calls, []);
  });

  it('405 with an Allow header of the path\'s methods for a known path and a wrong method, without calling the backend', async () => {
    const cases: [string, string, string][] = [
      ['PUT', '/v1/sandboxes', 'GET, POST'], ['DELETE', '/v1/sandboxes/', 'GET, POST'], ['POST', '/v1/sandboxes/x', 'GET, DELETE'],
      ['PUT', '/v1/sandboxes/x', 'GET, DELETE'], ['POST', '/v1/status', 'GET'], ['POST', '/v1/sandboxes/x/policy', 'GET, PUT'],
      ['DELETE', '/v1/sandboxes/x/policy', 'GET, PUT'], ['PUT', '/v1/sandboxes/x/inspect', 'GET'], ['GET', '/v1/gc?x=1', 'POST'],
      ['GET', '/v1/down', 'POST'], ['HEAD', '/v1/events', 'GET'], ['post', '/v1/sandboxes', 'GET, POST'],
      // The path decides, not whether the name could exist.
      ['POST', '/v1/sandboxes/.pool-1', 'GET, DELETE'],
    ];
    for (const [method, path, allow] of cases) {
      const res = await route(b, { method, path });
      assertError(res, 405, 'method_not_allowed', new RegExp(`^${method} .*method not allowed \\(allowed: ${allow}\\)$`));
      assert.deepEqual(res.headers, { allow }, `${method} ${path}`);
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

  it('GET /v1/flows: 200 {"flows":[...],"counts":{...}}, query parsed like events (wait in ms)', async () => {
    const res = await route(b, { method: 'GET', path: '/v1/flows?sandbox=x&since=4&wait=250' });
    assert.equal(res.status, 200);
    const body = res.body as FlowList;
    assert.equal(body.flows[0].dport, 80);
    assert.deepEqual(body.counts?.dropped, { kernel: 0, daemon: 0 });
    assert.deepEqual(b.calls, ['flows {"sandbox":"x","since":4,"waitMs":250}']);
    assert.equal((await route(b, { method: 'GET', path: '/v1/flows?wait=600001' })).status, 400);
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
