// Per-sandbox policy with real packets: each field enforced both ways, precedence, groups,
// inbound, report mode, live changes.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { ToastnetClient } from '../../src/api/client.js';
import { CLI, Testbed, WAN } from '../testbed/testbed.js';
import { waitFor } from '../helpers/wait.js';
import { waitForEvents } from '../helpers/events.js';

describe('policy', () => {
  let tb: Testbed;
  const I = `q${Date.now().toString(36)}`;
  const ok = (sbx: string, url: string, body: string) => assert.equal(tb.curl(I, sbx, url).stdout, body, `${sbx} -> ${url} should pass`);
  const blocked = (sbx: string, url: string) => {
    const r = tb.curl(I, sbx, url);
    assert.notEqual(r.code, 0, `${sbx} -> ${url} should be blocked: ${r.stdout}`);
  };
  const create = (name: string, ...flags: string[]) => {
    const r = tb.toastnet(I, ['create', name, '--json', ...flags]);
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout) as { ip: string };
  };
  const fromHost = (url: string) => tb.try(tb.hostNs, ['curl', '-sS', '--max-time', '3', url]);

  before(async () => {
    tb = await Testbed.create();
  });
  after(async () => {
    await tb?.destroy();
  });
  /** The daemon (started by the first create) over its socket. */
  const api = () => new ToastnetClient(tb.socketPath(I));

  it('egress.internet false closes the internet; allow entries still open destinations', () => {
    create('offline', '--no-internet', '--allow', `${WAN.internet}:80/tcp`);
    ok('offline', `http://${WAN.internet}/`, 'internet');
    blocked('offline', `http://${WAN.internet2}/`);
    ok('offline', 'http://example.test/', 'internet'); // DNS on the gateway is not the internet
  });

  it('egress.allow opens one private port for this sandbox only; metadata stays closed', () => {
    create('db-user', '--allow', `${WAN.vpc}:5432/tcp`, '--allow', '169.254.0.0/16');
    create('other');
    ok('db-user', `http://${WAN.vpc}:5432/`, 'private-db');
    blocked('db-user', `http://${WAN.vpc}/`);
    blocked('db-user', `http://${WAN.metadata}/`);
    blocked('other', `http://${WAN.vpc}:5432/`);
    ok('other', `http://${WAN.internet2}/`, 'internet2');
  });

  it('egress.deny closes a destination; the most specific entry wins, deny on ties', () => {
    create('narrow', '--deny', '203.0.113.0/24', '--allow', `${WAN.internet}:80/tcp`);
    ok('narrow', `http://${WAN.internet}/`, 'internet');
    blocked('narrow', `http://${WAN.internet2}/`);
    create('tie', '--allow', `${WAN.internet2}/32`, '--deny', `${WAN.internet2}/32`);
    blocked('tie', `http://${WAN.internet2}/`);
    ok('tie', `http://${WAN.internet}/`, 'internet');
  });

  it('groups reach each other (on their ports); others stay apart', async () => {
    const g1 = create('g1', '--group', 'team');
    const g2 = create('g2', '--group', 'team');
    const p = path.join(tb.dir, 'g3.json');
    fs.writeFileSync(p, JSON.stringify({ group: { name: 'ports', ports: [9000] } }));
    const g3 = create('g3', '--policy', p);
    const g4 = create('g4', '--policy', p);
    for (const [s, body] of [['g1', 'in-g1'], ['g2', 'in-g2'], ['g3', 'in-g3']]) await tb.serveInSandbox(I, s, [`http:0.0.0.0:9000:${body}`, `http:0.0.0.0:9001:${body}-9001`]);
    ok('g2', `http://${g1.ip}:9000/`, 'in-g1');
    ok('g1', `http://${g2.ip}:9001/`, 'in-g2-9001');
    blocked('g3', `http://${g1.ip}:9000/`);
    blocked('g1', `http://${g3.ip}:9000/`);
    ok('g4', `http://${g3.ip}:9000/`, 'in-g3');
    blocked('g4', `http://${g3.ip}:9001/`);
    void g4;
  });

  it('inbound: closed, or only listed ports, for the host', async () => {
    const a = create('in-closed', '--no-inbound');
    const b = create('in-9000', '--inbound-port', '9000/tcp');
    await tb.serveInSandbox(I, 'in-closed', ['http:0.0.0.0:9000:closed']);
    await tb.serveInSandbox(I, 'in-9000', ['http:0.0.0.0:9000:open', 'http:0.0.0.0:9001:shut']);
    assert.notEqual(fromHost(`http://${a.ip}:9000/`).code, 0);
    assert.equal(fromHost(`http://${b.ip}:9000/`).stdout, 'open');
    assert.notEqual(fromHost(`http://${b.ip}:9001/`).code, 0);
    ok('in-closed', `http://${WAN.internet}/`, 'internet'); // its own connections out still work
  });

  it('report mode blocks nothing but logs what would have been blocked', () => {
    create('learner', '--report-only', '--no-internet');
    const reported = (chain: string) => Number(/counter packets (\d+) bytes \d+ accept comment "report mode/.exec(tb.sh(tb.hostNs, ['nft', 'list', 'chain', 'inet', I, chain]))![1]);
    const p0 = reported('deny_private');
    const i0 = reported('deny_internet');
    ok('learner', `http://${WAN.vpc}/`, 'private-web');
    ok('learner', `http://${WAN.internet2}/`, 'internet2');
    assert.ok(reported('deny_private') > p0, 'the private-space denial was reported, not enforced');
    assert.ok(reported('deny_internet') > i0, 'the internet denial was reported, not enforced');
    assert.match(tb.sh(tb.hostNs, ['nft', 'list', 'chain', 'inet', I, 'deny_private']), /log prefix "tn:private " group \d+/);
  });

  it('events record what was blocked (and reported) with the sandbox, reason and rule', async () => {
    create('ev-policy', '--deny', '203.0.113.0/24', '--allow', `${WAN.internet}:80/tcp`);
    create('ev-metadata');
    create('ev-report', '--report-only', '--no-internet');
    blocked('ev-policy', `http://${WAN.internet2}/`);
    blocked('ev-metadata', `http://${WAN.metadata}/`);
    ok('ev-report', `http://${WAN.vpc}/`, 'private-web');
    // NFLOG delivery to the daemon is asynchronous: wait until each sandbox has its event.
    const cl = api();
    try {
      for (const s of ['ev-policy', 'ev-metadata', 'ev-report']) await waitForEvents(cl, s, (e) => e.length > 0, `an event of ${s}`);
    } finally {
      cl.close();
    }
    const ev = (args: string[]) => tb.toastnet(I, ['events', '--json', ...args]).stdout.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l));
    const policy = ev(['--sandbox', 'ev-policy']);
    assert.ok(policy.some((e) => e.reason === 'policy' && e.rule === 'egress.deny 203.0.113.0/24' && e.dst === WAN.internet2 && e.dport === 80 && e.proto === 'tcp' && e.action === 'blocked'), JSON.stringify(policy));
    const metadata = ev(['--sandbox', 'ev-metadata']);
    assert.ok(metadata.some((e) => e.reason === 'metadata' && e.dst === WAN.metadata), JSON.stringify(metadata));
    assert.ok(metadata.every((e) => e.sandbox === 'ev-metadata'));
    const report = ev(['--sandbox', 'ev-report']);
    assert.ok(report.some((e) => e.reason === 'private' && e.action === 'reported'), JSON.stringify(report));
  });

  it('policy set loosens and tightens a running sandbox; set with no flags restores the defaults', () => {
    create('live', '--no-internet');
    blocked('live', `http://${WAN.internet}/`);
    let r = tb.toastnet(I, ['policy', 'set', 'live', '--allow', `${WAN.internet}:80/tcp`, '--no-internet']);
    assert.equal(r.code, 0, r.stderr);
    ok('live', `http://${WAN.internet}/`, 'internet');
    blocked('live', `http://${WAN.internet2}/`);
    r = tb.toastnet(I, ['policy', 'set', 'live']); // back to the defaults: internet on
    assert.equal(r.code, 0, r.stderr);
    ok('live', `http://${WAN.internet2}/`, 'internet2');
    const got = JSON.parse(tb.toastnet(I, ['policy', 'get', 'live']).stdout);
    assert.deepEqual(got, {});
  });

  it('tightening a policy cuts an open connection it now forbids; loosening keeps it', async () => {
    create('streamer');
    // A client that prints what it reads, writes every 100 ms, and exits 1 when the connection dies.
    const client = `const s=require('net').connect(7000,'${WAN.internet2}');setInterval(()=>s.write('x'),100);s.on('data',d=>process.stdout.write(d));s.on('error',()=>process.exit(1));s.on('close',()=>process.exit(1));`;
    const p = spawn('nsenter', [`--net=/run/netns/${tb.hostNs}`, process.execPath, CLI, ...tb.flags(I), 'exec', 'streamer', '--', process.execPath, '-e', client], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout!.on('data', (d) => (out += d));
    const ended = () => p.exitCode !== null || p.signalCode !== null;
    try {
      await waitFor(() => out.includes('tick') || ended(), 'the connection to deliver', 5000);
      assert.match(out, /tick/, 'the connection is up');
      // Loosening (an allow that changes nothing for this flow) keeps it.
      let r = tb.toastnet(I, ['policy', 'set', 'streamer', '--allow', `${WAN.vpc}:5432/tcp`]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(JSON.parse(r.stdout).cut ?? 0, 0);
      const mark = out.length;
      await waitFor(() => out.length > mark || ended(), 'more data after loosening', 5000);
      assert.equal(p.exitCode, null, 'the connection lives on after loosening');
      r = tb.toastnet(I, ['policy', 'set', 'streamer', '--deny', `${WAN.internet2}/32`]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(JSON.parse(r.stdout).cut, 1);
      // Its next packet is a new flow for the filter, which rejects it: the client sees a reset.
      await waitFor(ended, 'the client to exit', 5000);
      assert.equal(p.exitCode, 1, 'the forbidden connection was cut');
    } finally {
      p.kill('SIGKILL');
    }
  });

  it('a bad policy is refused naming the field, and changes nothing', () => {
    create('kept');
    const state = () => tb.toastnet(I, ['ls', '--json']).stdout + tb.sh(tb.hostNs, ['nft', 'list', 'map', 'inet', I, 'egress_policy']);
    const s0 = state();
    const p = path.join(tb.dir, 'bad.json');
    for (const [doc, msg] of [
      [{ egress: { allow: ['10.0.0.1/8'] } }, /egress\.allow.*host bits set/],
      [{ egress: { internet: 'yes' } }, /egress\.internet/],
      [{ inbound: { ports: ['http'] } }, /inbound\.ports/],
      [{ colour: 'red' }, /unknown field "colour"/],
    ] as const) {
      fs.writeFileSync(p, JSON.stringify(doc));
      const r = tb.toastnet(I, ['create', 'bad', '--policy', p]);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, msg);
      const u = tb.toastnet(I, ['policy', 'set', 'kept', '--policy', p]);
      assert.equal(u.code, 2, u.stderr);
    }
    assert.equal(state(), s0);
  });
});
