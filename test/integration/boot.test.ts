// The reboot path: `up --persist` writes a unit whose ExecStart, run as systemd would run it
// (with a NOTIFY_SOCKET to announce readiness on), brings an instance back from nothing:
// no table, no gateway links, forwarding off, as after a reboot.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { Testbed, WAN } from '../testbed/testbed.js';
import { linkPrefix } from '../../src/core/names.js';
import { waitFor } from '../helpers/wait.js';

// A stand-in for systemd's notification socket: prints every datagram it receives.
const PY_NOTIFY = String.raw`
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
print('listening', flush=True)
while True:
    print(s.recv(4096).decode().replace('\n', ' | '), flush=True)
`;

describe('boot: the unit up --persist writes starts the instance from nothing', () => {
  let tb: Testbed;
  const I = `b${Date.now().toString(36)}`;
  const flags = ['--subnet', '10.174.0.0/16'];

  before(async () => {
    tb = await Testbed.create({ hostService: false });
  });
  after(async () => {
    await tb?.destroy();
  });

  it('writes what was configured (the strict schema reads it back), a Type=notify unit that restarts always', () => {
    const root = path.join(tb.dir, 'root');
    const r = tb.toastnet(I, ['up', '--persist', '--root', root], { extraFlags: flags });
    assert.equal(r.code, 0, r.stderr);
    const saved = JSON.parse(fs.readFileSync(path.join(root, `etc/toastnet/${I}.json`), 'utf8'));
    assert.equal(saved.instance, I);
    assert.equal(saved.subnet, '10.174.0.0/16');
    assert.deepEqual(saved.dnsUpstreams, [WAN.dns], 'given on the command line, so kept');
    for (const derived of ['gateway', 'pool', 'metrics', 'logGroup', 'dnsTimeoutMs', 'given']) assert.equal(saved[derived], undefined, `${derived} is a default, resolved at start`);
    const unit = fs.readFileSync(path.join(root, `etc/systemd/system/toastnet-${I}.service`), 'utf8');
    assert.match(unit, /^Type=notify$/m);
    assert.match(unit, /^Restart=always$/m);
    assert.doesNotMatch(unit, /^(PrivateTmp|ProtectSystem|ProtectHome)=/m, 'no private mount namespace: /run/netns must stay the host\'s');
  });

  it('its ExecStart, after a "reboot", announces READY=1 only once it serves, and has recreated the host setup', async (t) => {
    const root = path.join(tb.dir, 'root');
    const unit = fs.readFileSync(path.join(root, `etc/systemd/system/toastnet-${I}.service`), 'utf8');
    // The daemon `up` ran for the persist: take everything down as a reboot would.
    const p = linkPrefix(I);
    tb.sh(tb.hostNs, ['nft', 'delete', 'table', 'inet', I]);
    tb.sh(tb.hostNs, ['nft', 'delete', 'table', 'arp', I]);
    tb.sh(tb.hostNs, ['ip', 'link', 'del', `${p}g`]);
    tb.sh(tb.hostNs, ['sysctl', '-qw', 'net.ipv4.ip_forward=0']);
    assert.notEqual(tb.try(tb.hostNs, ['nft', 'list', 'table', 'inet', I]).code, 0);

    const sock = path.join(tb.dir, 'notify.sock');
    const notify = tb.background(tb.hostNs, ['python3', '-c', PY_NOTIFY, sock]);
    let said = '';
    notify.stdout!.on('data', (d) => (said += d));
    await waitFor(() => said.includes('listening'), 'the notify socket');

    // ExecStart as written, with the config path under the test's root instead of /.
    const exec = /^ExecStart=(.*)$/m.exec(unit)![1].split(' ').map((a) => (a === `/etc/toastnet/${I}.json` ? path.join(root, a) : a));
    const daemon = spawn('nsenter', [`--net=/run/netns/${tb.hostNs}`, ...exec], { env: { ...process.env, NOTIFY_SOCKET: sock }, stdio: ['ignore', 'pipe', 'pipe'] });
    let log = '';
    daemon.stdout.on('data', (d) => (log += d));
    daemon.stderr.on('data', (d) => (log += d));
    const started = Date.now();
    try {
      await waitFor(() => said.includes('READY=1'), `READY=1 (daemon log: ${log})`, 30_000);
      // Under the unit, sandboxes are without DNS for RestartSec (1 s) plus this after a crash.
      t.diagnostic(`exec to READY=1: ${Date.now() - started} ms`);
      assert.match(said, new RegExp(`MAINPID=${daemon.pid}`));
      // Ready means serving: the API answers and the host side is back.
      const st = JSON.parse(tb.toastnet(I, ['status', '--json'], { extraFlags: flags }).stdout);
      assert.equal(st.up, true);
      assert.equal(st.daemon.pid, daemon.pid);
      assert.equal(tb.sh(tb.hostNs, ['sysctl', '-n', 'net.ipv4.ip_forward']).trim(), '1');
      assert.equal(tb.try(tb.hostNs, ['nft', 'list', 'table', 'inet', I]).code, 0);
      // And serves sandboxes: a new one resolves a name through the gateway and reaches it.
      assert.equal(tb.toastnet(I, ['create', 'after-boot'], { extraFlags: flags }).code, 0);
      assert.equal(tb.toastnet(I, ['exec', 'after-boot', '--', 'curl', '-sS', '--max-time', '3', 'http://example.test/'], { extraFlags: flags }).stdout, 'internet');
    } finally {
      daemon.kill('SIGKILL');
      notify.kill('SIGKILL');
    }
    await new Promise((r) => daemon.once('exit', r));
  });

  it('after the daemon is killed, the next exec brings the resolver back before it runs', async (t) => {
    // Without a service manager, sandboxes are without DNS from the kill until a command
    // needs the daemon: exec (as create, run and policy set) starts one first.
    const gw = JSON.parse(tb.toastnet(I, ['status', '--json'], { extraFlags: flags }).stdout).gateway;
    assert.notEqual(tb.try(tb.hostNs, ['sh', '-c', `ss -lun | grep -q '${gw}:53'`]).code, 0, 'no resolver while the daemon is dead');
    const t0 = Date.now();
    const r = tb.toastnet(I, ['exec', 'after-boot', '--', 'dig', '+short', '+time=2', '+tries=1', 'example.test'], { extraFlags: flags });
    t.diagnostic(`exec with the daemon dead, to an answered query: ${Date.now() - t0} ms`);
    assert.equal(r.stdout.trim(), WAN.internet, r.stderr);
    assert.equal(tb.toastnet(I, ['down', '--root', path.join(tb.dir, 'root')], { extraFlags: flags }).code, 0);
  });
});
