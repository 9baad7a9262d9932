// The daemon: API over the Unix socket, crash (SIGKILL) and restart with sandboxes still
// working and listed, clean SIGTERM, and gc of what a crash leaves behind.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { ChildProcess } from 'node:child_process';
import { ToastnetClient } from '../../src/api/client.js';
import { ToastnetError } from '../../src/errors.js';
import { linkPrefix } from '../../src/core/names.js';
import { Testbed, WAN } from '../testbed/testbed.js';
import { waitFor } from '../helpers/wait.js';
import { askSocket, responseErrors } from '../helpers/openapi-check.js';
import { OPENAPI_FILE } from '../../scripts/openapi.js';

async function waitReady(cl: ToastnetClient, p: ChildProcess): Promise<void> {
  let out = '';
  p.stdout?.on('data', (d) => (out += d));
  p.stderr?.on('data', (d) => (out += d));
  await waitFor(async () => {
    if (p.exitCode !== null) throw new Error(`daemon exited ${p.exitCode}: ${out}`);
    return cl.ping();
  }, () => `the daemon to answer: ${out}`);
}

/** Whether process `pid` lives (not gone, not a zombie waiting to be reaped). */
function alive(pid: number): boolean {
  try {
    return !/^State:\s+Z/m.test(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return false;
  }
}

describe('daemon: API, crash, restart, gc', () => {
  let tb: Testbed;
  const I = `d${Date.now().toString(36)}`;
  let cl: ToastnetClient;
  let daemon: ChildProcess;

  before(async () => {
    tb = await Testbed.create();
    cl = new ToastnetClient(tb.socketPath(I));
    daemon = tb.startDaemon(I);
    await waitReady(cl, daemon);
  });
  after(async () => {
    await tb?.destroy();
  });

  it('serves the documented API', async () => {
    const s = await cl.create({ name: 'api1' });
    assert.equal(s.name, 'api1');
    assert.match(s.ip, /^10\.166\./);
    assert.deepEqual((await cl.list()).map((x) => x.name), ['api1']);
    assert.equal((await cl.get('api1')).ip, s.ip);
    const st = await cl.status();
    assert.equal(st.sandboxes, 1);
    assert.equal(st.daemon?.pid, daemon.pid, 'status names the daemon process (nsenter execs it)');
    // Errors: status and body shape.
    const raw = await cl.request('GET', '/v1/sandboxes/nope').catch((e: ToastnetError) => e) as ToastnetError;
    assert.equal(raw.code, 'not_found');
    const bad = await cl.request('POST', '/v1/sandboxes', { name: 'x', color: 'red' }).catch((e: ToastnetError) => e) as ToastnetError;
    assert.equal(bad.code, 'invalid_argument');
    assert.match(bad.message, /unknown field "color"/);
    const dup = await cl.create({ name: 'api1' }).catch((e) => e);
    assert.equal(dup.code, 'conflict');
    assert.equal(tb.curl(I, 'api1', 'http://example.test/').stdout, 'internet');
  });

  it('answers as its OpenAPI document says (the one it serves, which is the checked-in one)', async () => {
    const sock = tb.socketPath(I);
    const served = await askSocket(sock, 'GET', '/v1/openapi.json');
    assert.equal(served.status, 200);
    const doc = served.body;
    assert.deepEqual(doc, JSON.parse(fs.readFileSync(OPENAPI_FILE, 'utf8')));
    const ask = async (method: string, path: string, body?: unknown) => {
      const r = await askSocket(sock, method, path, body);
      assert.deepEqual(responseErrors(doc, method, path, r.status, r.body), [], `${method} ${path} -> ${r.status} ${JSON.stringify(r.body)}`);
      return r;
    };
    assert.equal((await ask('POST', '/v1/sandboxes', { name: 'oas1', policy: { egress: { deny: ['203.0.113.0/24'] }, limits: { egressRate: '10mbit' } } })).status, 201);
    tb.curl(I, 'oas1', 'http://example.test/'); // a DNS query to log, a denial to log, traffic to count
    await ask('GET', '/v1/sandboxes');
    await ask('GET', '/v1/sandboxes/oas1');
    await ask('GET', '/v1/sandboxes/oas1/inspect');
    await ask('GET', '/v1/sandboxes/oas1/stats');
    await ask('GET', '/v1/stats');
    await ask('GET', '/v1/sandboxes/oas1/policy');
    await ask('PUT', '/v1/sandboxes/oas1/policy', { egress: { internet: false } });
    await ask('GET', '/v1/status');
    await waitFor(async () => ((await ask('GET', '/v1/events?sandbox=oas1')).body as { events: unknown[] }).events.length > 0, () => 'a denial event of oas1');
    await waitFor(async () => ((await ask('GET', '/v1/dns-queries?sandbox=oas1')).body as { queries: unknown[] }).queries.length > 0, () => 'a DNS query of oas1');
    await ask('POST', '/v1/gc');
    assert.equal((await ask('DELETE', '/v1/sandboxes/oas1')).status, 204);
    assert.equal((await ask('GET', '/v1/sandboxes/oas1')).status, 404);
    assert.equal((await ask('PUT', '/v1/sandboxes')).status, 405);
  });

  it('the CLI uses the running daemon', async () => {
    const before = (await cl.status()).sandboxes;
    const r = tb.toastnet(I, ['create', 'cli1', '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal((await cl.get('cli1')).ip, JSON.parse(r.stdout).ip, 'the daemon made it');
    const st = JSON.parse(tb.toastnet(I, ['status', '--json']).stdout);
    assert.equal(st.sandboxes, before + 1);
    assert.equal(st.daemon?.pid, daemon.pid, 'the CLI reports the daemon this test started');
  });

  it('after SIGKILL, sandboxes keep working; a restarted daemon lists them and serves DNS again', async () => {
    // One sandbox in every single-address set: the restart rebuilds the table with their
    // elements (a set declared as a one-field concatenation refused them: the daemon did not start).
    await cl.create({ name: 'single', policy: { mode: 'report', egress: { internet: false, domains: ['example.test'] }, inbound: { ports: ['22/tcp'] } } });
    await cl.create({ name: 'closed', policy: { inbound: { enabled: false } } });
    await cl.create({ name: 'pre-crash' });
    const names = (await cl.list()).map((x) => x.name).sort();
    daemon.kill('SIGKILL');
    await new Promise((r) => daemon.once('exit', r));
    // Forwarding needs no daemon: straight into the namespace, since `toastnet exec` would
    // start a daemon first (it brings the resolver back).
    assert.equal(tb.try(`${I}-pre-crash`, ['curl', '-sS', '--max-time', '3', `http://${WAN.internet}/`]).stdout, 'internet');
    daemon = tb.startDaemon(I);
    await waitReady(cl, daemon);
    assert.deepEqual((await cl.list()).map((x) => x.name).sort(), names);
    assert.equal(tb.curl(I, 'pre-crash', 'http://example.test/').stdout, 'internet');
    await cl.remove('single');
    await cl.remove('closed');
    const again = await cl.create({ name: 'after' });
    const ips = (await cl.list()).map((x) => x.ip);
    assert.equal(new Set(ips).size, ips.length, 'addresses are unique after restart');
    await cl.remove(again.name);
  });

  it('gc removes orphans: a namespace and link nobody owns, a sandbox whose namespace vanished', async () => {
    // What a crash mid-create leaves: a namespace with the instance's prefix, a link with its sandbox prefix.
    tb.sh(tb.hostNs, ['ip', 'netns', 'add', `${I}-ghost`]);
    const orphanLink = `${linkPrefix(I)}szz`;
    tb.sh(tb.hostNs, ['ip', 'link', 'add', orphanLink, 'type', 'veth', 'peer', 'name', `${tb.run}o`]);
    const bystander = await cl.create({ name: 'bystander' });
    // A sandbox whose namespace disappeared behind toastnet's back (as after a reboot).
    const doomed = await cl.create({ name: 'doomed' });
    tb.sh(tb.hostNs, ['ip', 'netns', 'del', `${I}-doomed`]);
    const report = await cl.gc();
    assert.deepEqual(report.sandboxes, ['doomed']);
    assert.ok(report.namespaces.includes(`${I}-ghost`));
    assert.ok(report.links.includes(orphanLink));
    assert.equal(tb.sh(tb.hostNs, ['ip', 'netns', 'list']).includes(`${I}-ghost`), false);
    assert.equal(tb.try(tb.hostNs, ['ip', 'link', 'show', orphanLink]).code !== 0, true);
    assert.equal((await cl.get('doomed').catch((e) => e)).code, 'not_found');
    const set = tb.sh(tb.hostNs, ['nft', 'list', 'set', 'inet', I, 'veth_src']);
    assert.ok(!set.includes(doomed.ip), 'the vanished sandbox is no longer admitted');
    assert.ok(set.includes(bystander.ip), 'a live one still is');
    assert.equal(tb.curl(I, 'bystander', `http://${WAN.internet}/`).stdout, 'internet'); // live ones untouched
  });

  it('rm returns at once; a process left inside is ended after, and only then is its address free', async () => {
    await cl.create({ name: 'busy' });
    // A process that ignores SIGTERM: only the KILL after the grace period (2 s) ends it.
    // (tb.background: the testbed kills it if the test fails.)
    const p = tb.background(`${I}-busy`, ['python3', '-c', 'import signal,sys,time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print("ready", flush=True); time.sleep(60)']);
    const exited = new Promise<string | null>((r) => p.once('exit', (_code, sig) => r(sig)));
    await new Promise<void>((res, rej) => {
      p.stdout!.once('data', () => res());
      p.once('exit', (code) => rej(new Error(`the test process exited early (${code})`)));
    });
    const used = (await cl.status()).addresses.used;
    await cl.remove('busy');
    assert.equal(p.exitCode, null, 'rm did not wait for the process');
    assert.equal((await cl.get('busy').catch((e) => e)).code, 'not_found', 'the name is free');
    const st = await cl.status();
    assert.equal(st.addresses.used, used, 'the address is held while the process lives');
    assert.equal(st.addresses.releasing, 1);
    // The name can be taken again at once; ending the old one's processes must not touch it.
    await cl.create({ name: 'busy' });
    const newcomer = tb.background(`${I}-busy`, ['sleep', '60']);
    await waitFor(() => fs.readFileSync(`/proc/${newcomer.pid}/comm`, 'utf8').trim() === 'sleep', 'the new sandbox\'s process to run');
    assert.equal(await exited, 'SIGKILL');
    // The reaper is done with the old sandbox once its address is released.
    await waitFor(async () => (await cl.status()).addresses.releasing === 0, 'the old sandbox\'s address to be released');
    assert.ok(alive(newcomer.pid!), 'a process of the new sandbox of that name was left alone');
    newcomer.kill('SIGKILL');
    assert.equal(tb.curl(I, 'busy', 'http://example.test/').stdout, 'internet', 'the new sandbox of that name works after the old one was reaped');
    await cl.remove('busy');
    await waitFor(async () => (await cl.status()).addresses.releasing === 0, 'then the address to be free');
  });

  it('SIGTERM stops the daemon cleanly and leaves sandboxes in place', async () => {
    await cl.create({ name: 'survivor' });
    const names = (await cl.list()).map((x) => x.name).sort();
    daemon.kill('SIGTERM');
    const code = await new Promise((r) => daemon.once('exit', (c) => r(c)));
    assert.equal(code, 0);
    assert.equal(tb.try(`${I}-survivor`, ['curl', '-sS', '--max-time', '3', `http://${WAN.internet}/`]).stdout, 'internet');
    const ls = JSON.parse(tb.toastnet(I, ['ls', '--json']).stdout); // in-process: no daemon now
    assert.deepEqual(ls.map((x: { name: string }) => x.name).sort(), names);
  });

  it('a second daemon for the same instance refuses to start', async () => {
    if (!(await cl.ping())) {
      daemon = tb.startDaemon(I);
      await waitReady(cl, daemon);
    }
    const r = tb.toastnet(I, ['daemon'], { timeoutMs: 30_000 });
    assert.equal(r.code, 6, r.stderr);
    assert.match(r.stderr, /in use by another toastnet process/);
    assert.ok(await cl.ping());
  });
});
