// Several instances and configurations on one host: side by side with different subnets,
// allowCidrs/denyCidrs, subnet exhaustion, concurrent CLI callers, DNS failover, --persist.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { CLI, Testbed, WAN } from '../testbed/testbed.js';
import { waitFor } from '../helpers/wait.js';

describe('instances and configuration', () => {
  let tb: Testbed;
  const stamp = Date.now().toString(36);
  before(async () => {
    tb = await Testbed.create();
  });
  after(async () => {
    await tb?.destroy();
  });

  it('two instances run side by side, stay apart, and down on one leaves the other intact', async () => {
    const A = `a${stamp}`;
    const B = `b${stamp}`;
    assert.equal(tb.toastnet(A, ['create', 'x']).code, 0);
    const r = tb.toastnet(B, ['create', 'y', '--json'], { extraFlags: ['--subnet', '10.167.0.0/16'] });
    assert.equal(r.code, 0, r.stderr);
    const y = JSON.parse(r.stdout);
    assert.equal(y.gateway, '10.167.0.1');
    assert.equal(tb.curl(A, 'x', 'http://example.test/').stdout, 'internet');
    assert.equal(tb.toastnet(B, ['exec', 'y', '--', 'curl', '-sS', '--max-time', '3', 'http://example.test/'], { extraFlags: ['--subnet', '10.167.0.0/16'] }).stdout, 'internet');
    await tb.serveInSandbox(B, 'y', ['http:0.0.0.0:9000:in-y']);
    assert.notEqual(tb.curl(A, 'x', `http://${y.ip}:9000/`).code, 0, 'a sandbox of A reached one of B');
    // A third instance on an overlapping subnet is refused, and makes nothing.
    const before = tb.sh(tb.hostNs, ['ip', '-o', 'link']);
    const c = tb.toastnet(`c${stamp}`, ['up'], { extraFlags: ['--subnet', '10.166.128.0/17'] });
    assert.equal(c.code, 2, c.stderr);
    assert.match(c.stderr, /overlaps route 10\.166\.0\.0\/16/);
    assert.equal(tb.sh(tb.hostNs, ['ip', '-o', 'link']), before);
    // down A: B keeps working.
    assert.equal(tb.toastnet(A, ['down']).code, 0);
    assert.equal(tb.sh(tb.hostNs, ['cat', '/proc/sys/net/ipv4/ip_forward']).trim(), '1', 'forwarding stays on for B');
    assert.equal(tb.toastnet(B, ['exec', 'y', '--', 'curl', '-sS', '--max-time', '3', 'http://example.test/'], { extraFlags: ['--subnet', '10.167.0.0/16'] }).stdout, 'internet');
    assert.match(tb.sh(tb.hostNs, ['nft', 'list', 'tables']), new RegExp(`inet ${B}`));
    assert.equal(tb.toastnet(B, ['down'], { extraFlags: ['--subnet', '10.167.0.0/16'] }).code, 0);
  });

  it('allowCidrs opens one private port and denyCidrs closes one internet port', () => {
    const I = `p${stamp}`;
    const cfg = path.join(tb.dir, 'policy.json');
    fs.writeFileSync(cfg, JSON.stringify({ allowCidrs: [`${WAN.vpc}:5432/tcp`], denyCidrs: [`${WAN.internet}:80/tcp`] }));
    const flags = ['--config', cfg, '--subnet', '10.168.0.0/16'];
    assert.equal(tb.toastnet(I, ['create', 's'], { extraFlags: flags }).code, 0);
    const curl = (url: string) => tb.toastnet(I, ['exec', 's', '--', 'curl', '-sS', '--max-time', '3', url], { extraFlags: flags });
    assert.equal(curl(`http://${WAN.vpc}:5432/`).stdout, 'private-db');
    assert.notEqual(curl(`http://${WAN.vpc}:80/`).code, 0, 'only the listed port opens');
    assert.notEqual(curl(`http://${WAN.internet}/`).code, 0, 'denyCidrs closes an internet destination');
    assert.notEqual(curl(`http://${WAN.metadata}/`).code, 0);
    assert.equal(tb.toastnet(I, ['down'], { extraFlags: flags }).code, 0);
  });

  it('defaultPolicy applies to every sandbox, each field overridable; denyAction drop fails silently', () => {
    const I = `w${stamp}`;
    const cfg = path.join(tb.dir, 'defaults.json');
    fs.writeFileSync(cfg, JSON.stringify({ denyAction: 'drop', defaultPolicy: { egress: { internet: false, allow: [`${WAN.internet}:80/tcp`] } } }));
    const flags = ['--config', cfg, '--subnet', '10.174.0.0/16'];
    const curl = (s: string, url: string) => tb.toastnet(I, ['exec', s, '--', 'curl', '-sS', '--max-time', '2', url], { extraFlags: flags });
    assert.equal(tb.toastnet(I, ['create', 'plain'], { extraFlags: flags }).code, 0);
    assert.equal(tb.toastnet(I, ['create', 'online', '--allow', `${WAN.internet2}:80/tcp`], { extraFlags: [...flags] }).code, 0);
    assert.equal(curl('plain', `http://${WAN.internet}/`).stdout, 'internet', 'the default allow applies');
    assert.equal(curl('plain', `http://${WAN.internet2}/`).code, 28, 'the default no-internet applies, and drop means a timeout (28), not a reset');
    assert.equal(curl('online', `http://${WAN.internet2}/`).stdout, 'internet2', 'its own allow list replaces the default one');
    assert.equal(curl('online', `http://${WAN.internet}/`).code, 28, 'lists are replaced, not appended');
    const eff = JSON.parse(tb.toastnet(I, ['policy', 'get', 'online', '--effective'], { extraFlags: flags }).stdout);
    assert.deepEqual(eff.egress, { internet: false, allow: [`${WAN.internet2}:80/tcp`] });
    assert.equal(tb.toastnet(I, ['down'], { extraFlags: flags }).code, 0);
  });

  it('an exhausted subnet fails clearly, changes nothing, and reuses the least recently released address', () => {
    const I = `e${stamp}`;
    const flags = ['--subnet', '10.169.0.0/29']; // .1 gateway, .2-.6 for sandboxes, .7 broadcast
    const ips: string[] = [];
    for (let i = 0; i < 5; i++) {
      const r = tb.toastnet(I, ['create', `s${i}`, '--json'], { extraFlags: flags });
      assert.equal(r.code, 0, r.stderr);
      ips.push(JSON.parse(r.stdout).ip);
    }
    assert.deepEqual(ips, ['10.169.0.2', '10.169.0.3', '10.169.0.4', '10.169.0.5', '10.169.0.6']);
    const ls = tb.toastnet(I, ['ls', '--json'], { extraFlags: flags }).stdout;
    const full = tb.toastnet(I, ['create', 'one-too-many'], { extraFlags: flags });
    assert.equal(full.code, 5, full.stderr);
    assert.match(full.stderr, /exhausted/);
    assert.equal(tb.toastnet(I, ['ls', '--json'], { extraFlags: flags }).stdout, ls);
    assert.equal(tb.try(tb.hostNs, ['ip', 'netns', 'list']).stdout.includes(`${I}-one-too-many`), false);
    assert.equal(tb.toastnet(I, ['rm', 's3', 's1'], { extraFlags: flags }).code, 0);
    const again = JSON.parse(tb.toastnet(I, ['create', 'n1', '--json'], { extraFlags: flags }).stdout);
    assert.equal(again.ip, '10.169.0.5', 's3 was released first, so its address comes back first');
    assert.equal(tb.toastnet(I, ['down'], { extraFlags: flags }).code, 0);
  });

  it('concurrent CLI creates with no daemon running all succeed, on distinct addresses, with one daemon', async () => {
    const I = `k${stamp}`;
    const flags = tb.flags(I, ['--subnet', '10.171.0.0/16']);
    const one = (n: number) => new Promise<{ code: number; out: string; err: string }>((resolve) => {
      const p = spawn('nsenter', [`--net=/run/netns/${tb.hostNs}`, process.execPath, CLI, ...flags, 'create', `c${n}`, '--json']);
      let out = '';
      let err = '';
      p.stdout.on('data', (d) => (out += d));
      p.stderr.on('data', (d) => (err += d));
      p.on('exit', (code) => resolve({ code: code ?? 1, out, err }));
    });
    const results = await Promise.all(Array.from({ length: 8 }, (_, n) => one(n)));
    for (const r of results) assert.equal(r.code, 0, r.err);
    const ips = results.map((r) => JSON.parse(r.out).ip);
    assert.equal(new Set(ips).size, 8);
    // Daemons that lost the race see the winner answer and exit.
    const daemons = () => tb.sh(tb.hostNs, ['ps', '-eo', 'args']).split('\n').filter((l) => l.includes(CLI) && l.includes(`--instance ${I}`) && / daemon( --log-file \S+)?$/.test(l.trim()));
    await waitFor(() => daemons().length <= 1, () => `the losing daemons to exit: ${daemons().join('\n')}`, 5000);
    assert.equal(daemons().length, 1, 'one daemon won');
    assert.equal(tb.toastnet(I, ['down'], { extraFlags: ['--subnet', '10.171.0.0/16'] }).code, 0);
  });

  it('DNS fails over from a dead upstream to a live one', () => {
    const I = `f${stamp}`;
    const flags = ['--subnet', '10.172.0.0/16', '--dns', `192.0.2.99,${WAN.dns}`];
    const cfg = path.join(tb.dir, 'dns.json');
    fs.writeFileSync(cfg, JSON.stringify({ dnsTimeoutMs: 300 }));
    assert.equal(tb.toastnet(I, ['create', 's'], { extraFlags: [...flags, '--config', cfg] }).code, 0);
    const t = Date.now();
    const r = tb.toastnet(I, ['exec', 's', '--', 'dig', '+short', '+time=3', '+tries=1', 'example.test'], { extraFlags: [...flags, '--config', cfg] });
    assert.equal(r.stdout.trim(), '203.0.113.10', r.stderr);
    assert.ok(Date.now() - t < 3000);
    assert.equal(tb.toastnet(I, ['down'], { extraFlags: [...flags, '--config', cfg] }).code, 0);
  });

  it('up --persist writes a unit, a sysctl drop-in and the config; down removes them', () => {
    const I = `u${stamp}`;
    const root = path.join(tb.dir, 'root');
    const flags = ['--subnet', '10.173.0.0/16'];
    const r = tb.toastnet(I, ['up', '--persist', '--root', root], { extraFlags: flags });
    assert.equal(r.code, 0, r.stderr);
    const unit = fs.readFileSync(path.join(root, `etc/systemd/system/toastnet-${I}.service`), 'utf8');
    assert.match(unit, new RegExp(`daemon --config /etc/toastnet/${I}\\.json`));
    assert.match(fs.readFileSync(path.join(root, `etc/sysctl.d/90-toastnet-${I}.conf`), 'utf8'), /net\.ipv4\.ip_forward = 1/);
    const saved = JSON.parse(fs.readFileSync(path.join(root, `etc/toastnet/${I}.json`), 'utf8'));
    assert.equal(saved.subnet, '10.173.0.0/16');
    assert.equal(tb.toastnet(I, ['down', '--root', root], { extraFlags: flags }).code, 0);
    assert.equal(fs.existsSync(path.join(root, `etc/systemd/system/toastnet-${I}.service`)), false);
    assert.equal(fs.existsSync(path.join(root, `etc/toastnet/${I}.json`)), false);
  });
});
