// The API contract: docs/openapi.json is what the code generates (not stale), it describes
// every route the router serves and nothing else, the daemon serves it, and what the routes
// answer (run in-process over the fake backend) validates against it.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { route, routeKeys } from '../../src/api/routes.js';
import { OPERATIONS, openApiPath } from '../../src/api/openapi.js';
import { OPENAPI_FILE, openApiText } from '../../scripts/openapi.js';
import { FakeBackend } from '../helpers/fake-backend.js';
import { requestErrors, responseErrors } from '../helpers/openapi-check.js';
import { validate } from '../helpers/json-schema.js';

const checkedIn = () => JSON.parse(fs.readFileSync(OPENAPI_FILE, 'utf8')) as { paths: Record<string, Record<string, unknown>>; components: { schemas: Record<string, Record<string, unknown>> } };

describe('OpenAPI document', () => {
  it('the checked-in docs/openapi.json is what the code generates (else: npm run openapi)', () => {
    assert.equal(fs.readFileSync(OPENAPI_FILE, 'utf8'), openApiText(), 'docs/openapi.json is stale: run npm run openapi');
  });

  it('describes every route of the router (method and path), and no other', () => {
    assert.deepEqual(Object.keys(OPERATIONS).sort(), routeKeys().sort());
    const doc = checkedIn();
    const described = Object.entries(doc.paths).flatMap(([p, ms]) => Object.keys(ms).map((m) => `${m.toUpperCase()} ${p}`)).sort();
    const served = routeKeys().map((k) => k.replace(/ (.*)$/, (_m, p: string) => ` ${openApiPath(p)}`)).sort();
    assert.deepEqual(described, served);
  });

  it('is served at GET /v1/openapi.json, the same as the checked-in one', async () => {
    const res = await route(new FakeBackend(), { method: 'GET', path: '/v1/openapi.json' });
    assert.equal(res.status, 200);
    assert.deepEqual(JSON.parse(JSON.stringify(res.body)), checkedIn());
  });

  it('the validator is not blind: extra, missing and mistyped fields and unknown keywords fail', () => {
    const doc = checkedIn();
    const s = { name: 'a', id: 1, ip: '10.166.0.2', gateway: '10.166.0.1', prefixLength: 16, netns: 'n', mac: 'm', mode: 'veth', resolvConf: 'r', createdAt: 't', state: 'ready', labels: { team: 'ml' } };
    const info = { $ref: '#/components/schemas/SandboxInfo' };
    assert.deepEqual(validate(doc, info, s), []);
    assert.match(validate(doc, info, { ...s, color: 'red' }).join(), /\$\.color: not allowed/);
    const { ip: _, ...noIp } = s;
    assert.match(validate(doc, info, noIp).join(), /missing "ip"/);
    assert.match(validate(doc, info, { ...s, id: '1' }).join(), /string, want integer/);
    assert.match(validate(doc, info, { ...s, mode: 'bridge' }).join(), /not one of/);
    assert.match(validate(doc, info, { ...s, labels: { 'bad key': 'x' } }).join(), /key bad key.*does not match/);
    assert.match(validate(doc, { frobnicate: 1 }, 1).join(), /does not know the keyword "frobnicate"/);
  });

  it('every answer of the routes, success and error, validates against it', async () => {
    const doc = checkedIn();
    const b = new FakeBackend();
    const answered = new Set<string>();
    const ask = async (method: string, path: string, body?: unknown) => {
      const res = await route(b, { method, path, body });
      assert.deepEqual(responseErrors(doc, method, path, res.status, res.body), [], `${method} ${path} -> ${res.status} ${JSON.stringify(res.body)}`);
      const key = `${method} ${path.replace(/\?.*$/, '').replace(/^\/v1\/sandboxes\/[^/]+/, '/v1/sandboxes/:name')}`;
      if (res.status < 300) {
        answered.add(key);
        // What the route took, the document takes too.
        if (body !== undefined) assert.deepEqual(requestErrors(doc, method, path, body), [], `${method} ${path} body`);
      }
      return res;
    };
    await ask('POST', '/v1/sandboxes', { name: 'web', mode: 'macvlan', policy: { egress: { domains: ['pypi.org'] } }, publish: [{ hostPort: 8080, containerPort: 80 }], labels: { team: 'ml', 'app.kubernetes.io/name': 'web' } });
    await ask('POST', '/v1/sandboxes');
    await ask('GET', '/v1/sandboxes');
    await ask('GET', '/v1/sandboxes/web');
    await ask('GET', '/v1/sandboxes/web/inspect');
    await ask('GET', '/v1/sandboxes/web/policy');
    await ask('PUT', '/v1/sandboxes/web/policy', { egress: { internet: false } });
    await ask('GET', '/v1/sandboxes/web/stats');
    await ask('GET', '/v1/stats');
    await ask('GET', '/v1/events?sandbox=web&limit=5');
    await ask('GET', '/v1/dns-queries?since=3');
    await ask('GET', '/v1/flows?sandbox=web&since=2&wait=10');
    await ask('GET', '/v1/status');
    await ask('POST', '/v1/gc');
    await ask('POST', '/v1/up');
    await ask('GET', '/v1/openapi.json');
    const cniConfig = JSON.stringify({ cniVersion: '1.0.0', name: 'net', type: 'toastnet' });
    await ask('POST', '/v1/cni', { command: 'ADD', containerId: 'c1', netns: '/proc/1/ns/net', ifname: 'eth0', config: cniConfig });
    assert.equal((await ask('POST', '/v1/cni', { command: 'DEL', containerId: 'c1', ifname: 'eth0', config: cniConfig })).status, 204);
    await ask('DELETE', '/v1/sandboxes/web');
    await ask('POST', '/v1/down');
    // Errors: each the documented error body.
    assert.equal((await ask('GET', '/v1/sandboxes/web')).status, 404);
    assert.equal((await ask('POST', '/v1/sandboxes', { color: 'red' })).status, 400);
    assert.equal((await ask('POST', '/v1/sandboxes', { labels: { 'bad key': 'x' } })).status, 400);
    // ... and what it refused, the document refuses.
    assert.notDeepEqual(requestErrors(doc, 'POST', '/v1/sandboxes', { color: 'red' }), []);
    assert.notDeepEqual(requestErrors(doc, 'POST', '/v1/sandboxes', { labels: { 'bad key': 'x' } }), []);
    assert.notDeepEqual(requestErrors(doc, 'PUT', '/v1/sandboxes/web/policy', { egress: { internet: 'yes' } }), []);
    assert.equal((await ask('PATCH', '/v1/sandboxes')).status, 405);
    assert.equal((await ask('GET', '/v1/events?limit=x')).status, 400);
    assert.equal((await ask('POST', '/v1/cni', { config: '{}' })).status, 400, 'the CNI route fails with the spec\'s error object');
    assert.deepEqual([...answered].sort(), Object.keys(OPERATIONS).sort(), 'every operation answered with success at least once');
  });
});
