// The testbed's servers for name checks on the first flight, with no toastnet: one address
// serving several names over HTTPS (the certificate chosen by SNI, each verifying against
// the run's own CA) and a plain HTTP virtual host, reached with curl from the testbed's
// host namespace; and destroy() leaves nothing of them behind.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { execFileSync } from 'node:child_process';
import { Testbed, VHOST_PORT, WAN } from '../testbed/testbed.js';
import { waitFor } from '../helpers/wait.js';

describe('testbed: TLS names on one address, virtual hosts', () => {
  let tb: Testbed;
  let caFile: string;
  const NAMES = ['cdn.test', 'other.test', 'edge.cdn-provider.test'];

  /** curl from the host namespace; never follows the zone's DNS (--resolve pins every name to the address). */
  const curl = (args: string[]): { code: number; stdout: string; stderr: string } => tb.try(tb.hostNs, ['curl', '-sS', '--max-time', '5', ...args]);
  const https = (name: string, extra: string[] = []) =>
    curl(['--resolve', `${name}:443:${WAN.internet2}`, '--cacert', caFile, ...extra, `https://${name}/`]);

  before(async () => {
    tb = await Testbed.create({ hostService: false });
    caFile = await tb.serveTlsNames(NAMES);
  });
  after(async () => {
    await tb?.destroy();
  });

  it('makes a CA and a certificate per name (SAN DNS:name) plus a default one, in the run\'s directory', () => {
    assert.ok(caFile.startsWith(tb.dir + '/'), caFile);
    const dir = fs.readdirSync(caFile.slice(0, caFile.lastIndexOf('/')));
    for (const n of [...NAMES, '_default']) assert.ok(dir.includes(`${n}.crt`) && dir.includes(`${n}.key`), `${n}: ${dir}`);
    const text = execFileSync('openssl', ['x509', '-in', caFile.replace('ca.crt', 'cdn.test.crt'), '-noout', '-ext', 'subjectAltName'], { encoding: 'utf8' });
    assert.match(text, /DNS:cdn\.test\b/);
  });

  it('chooses the certificate by SNI: each name verifies against the CA and is told what it asked', () => {
    for (const n of ['cdn.test', 'other.test']) {
      const r = https(n);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, `tls sni=${n} cert=${n} host=${n}`);
    }
  });

  it('SNI and Host may differ (domain fronting): the body says both', () => {
    const r = https('cdn.test', ['-H', 'Host: other.test']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'tls sni=cdn.test cert=cdn.test host=other.test');
  });

  it('no SNI (a client connecting to the address) gets the default certificate, which no name verifies', () => {
    const r = curl(['--insecure', `https://${WAN.internet2}/`]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, `tls sni=- cert=default host=${WAN.internet2}`);
    assert.notEqual(curl(['--cacert', caFile, `https://${WAN.internet2}/`]).code, 0, 'the default certificate has no IP SAN');
  });

  it('a name it has no certificate for: the default certificate, refused by a verifying client', () => {
    const r = https('example.test');
    assert.equal(r.code, 60, `curl: peer certificate not verified: ${r.stderr}`);
    assert.equal(https('example.test', ['--insecure']).stdout, 'tls sni=example.test cert=default host=example.test');
  });

  it('the virtual host answers the Host header it was sent, and names both of two', () => {
    const url = `http://${WAN.internet2}:${VHOST_PORT}/`;
    for (const h of ['cdn.test', 'sneaky.test:8088']) assert.equal(curl(['-H', `Host: ${h}`, url]).stdout, `vhost host=${h}`);
    assert.equal(curl([url]).stdout, `vhost host=${WAN.internet2}:${VHOST_PORT}`);
    // curl sends only the first of two -H Host, so the request is written by hand.
    const raw = 'GET / HTTP/1.1\\r\\nHost: cdn.test\\r\\nHost: other.test\\r\\nConnection: close\\r\\n\\r\\n';
    const client = `const c=require('net').connect(${VHOST_PORT},'${WAN.internet2}',()=>c.write('${raw}'));let b='';c.on('data',d=>b+=d);c.on('end',()=>process.stdout.write(b.split('\\r\\n\\r\\n')[1]));`;
    const two = tb.try(tb.hostNs, [process.execPath, '-e', client], 5000);
    assert.equal(two.code, 0, two.stderr);
    assert.equal(two.stdout, 'vhost host=cdn.test,other.test', 'Node serves a request with two Host headers (req.headers.host is the first)');
  });

  it('the plain HTTP server on port 80 is unchanged', () => {
    assert.equal(curl([`http://${WAN.internet2}/`]).stdout, 'internet2');
  });

  it('destroy removes the servers, the certificates and the namespaces', async () => {
    const pids = tb.sh(tb.wanNs, ['ss', '-Htlnp', `src ${WAN.internet2}`]);
    assert.match(pids, /:443\b/);
    assert.match(pids, new RegExp(`:${VHOST_PORT}\\b`));
    const serverPids = [...pids.matchAll(/pid=(\d+)/g)].map((m) => Number(m[1]));
    assert.ok(serverPids.length > 0);
    const { dir, run } = tb;
    await tb.destroy();
    assert.ok(!fs.existsSync(dir), `${dir} is left`);
    assert.deepEqual(fs.readdirSync('/run/netns').filter((n) => n.startsWith(`${run}-`)), []);
    // SIGKILLed: gone (or a zombie awaiting its reaper) once the kernel has acted.
    const alive = (pid: number): boolean => {
      try {
        return !fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].startsWith('Z');
      } catch {
        return false;
      }
    };
    await waitFor(() => !serverPids.some(alive), () => `servers ${serverPids.filter(alive)} to exit`, 5000);
  });
});
