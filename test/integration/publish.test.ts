// Published ports with real packets: from the wan namespace (outside the host) to the
// host's uplink address and a published port, a server in the sandbox answers; nothing
// else of the sandbox is reachable from there; conflicts (another sandbox's port, a host
// listener) are refused with nothing made; another sandbox cannot use the host port to get
// around its own egress or the target's policy; the host reaches it at its own uplink
// address, never at loopback; stats count the connections; rm takes it all away.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { ToastnetClient } from '../../src/api/client.js';
import { ToastnetError } from '../../src/errors.js';
import { Testbed, WAN } from '../testbed/testbed.js';
import { waitFor } from '../helpers/wait.js';

describe('publish: host ports translated to sandbox ports', () => {
  let tb: Testbed;
  const I = `pub${Date.now().toString(36)}`;
  const HOST = WAN.hostUplink;
  type Info = { name: string; ip: string; publish?: unknown[] };
  const run = (args: string[]) => tb.toastnet(I, args);
  const create = (name: string, ...flags: string[]): Info => {
    const r = run(['create', name, '--json', ...flags]);
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout) as Info;
  };
  /** HTTP GET from a namespace of the testbed: the body, or "" when it did not get through. */
  const get = (ns: string, url: string): string => tb.try(ns, ['curl', '-sS', '--max-time', '3', url]).stdout;
  const fromWan = (url: string) => get(tb.wanNs, url);
  const names = () => run(['ls', '-q']).stdout.split('\n').filter(Boolean).sort();
  /** Elements of one of the instance's publish sets (as `nft -j` lists them). */
  const elements = (set: string): unknown[] => {
    const listed = JSON.parse(tb.sh(tb.hostNs, ['nft', '-j', 'list', set === 'published' ? 'set' : 'map', 'inet', I, set])).nftables as { set?: { elem?: unknown[] }; map?: { elem?: unknown[] } }[];
    return listed.flatMap((o) => o.set?.elem ?? o.map?.elem ?? []);
  };
  const connectionsIn = (name: string): number => {
    const r = run(['stats', name, '--json']);
    assert.equal(r.code, 0, r.stderr);
    return (JSON.parse(r.stdout) as { published?: { connections: number } }).published!.connections;
  };
  let web: Info;

  before(async () => {
    tb = await Testbed.create();
    // The wan routes the sandbox subnet to the host, as a neighbour on the uplink could: so
    // "unreachable from outside" below is the filter's doing, not a missing route.
    tb.sh(tb.wanNs, ['ip', 'route', 'add', '10.166.0.0/16', 'via', HOST]);
    web = create('web', '--publish', '18080:80', '--publish', `${HOST}:18053:9999/udp`);
    await tb.serveInSandbox(I, 'web', ['http:0.0.0.0:80:sandbox-web', 'http:0.0.0.0:81:sandbox-81', 'udpecho:0.0.0.0:9999']);
  });
  after(async () => {
    await tb?.destroy();
  });

  it('from outside: the published port reaches the sandbox\'s server (TCP and UDP); ls and inspect show it', () => {
    assert.equal(fromWan(`http://${HOST}:18080/`), 'sandbox-web');
    const udp = tb.try(tb.wanNs, ['python3', '-c', [
      'import socket', 's=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)', 's.settimeout(3)',
      `s.sendto(b'ping-publish',('${HOST}',18053))`, 'print(s.recvfrom(100)[0].decode())',
    ].join('\n')]);
    assert.equal(udp.stdout.trim(), 'ping-publish', udp.stderr);
    assert.deepEqual(web.publish, [{ hostPort: 18080, containerPort: 80, protocol: 'tcp' }, { hostPort: 18053, containerPort: 9999, protocol: 'udp', hostIP: HOST }]);
    const inspected = JSON.parse(run(['inspect', 'web', '--json']).stdout) as Info;
    assert.deepEqual(inspected.publish, web.publish);
    const ls = run(['ls']).stdout;
    assert.match(ls.split('\n')[0], /PUBLISH$/);
    assert.match(ls, new RegExp(`web .*18080->80/tcp,${HOST.replaceAll('.', '\\.')}:18053->9999/udp`));
  });

  it('from outside: nothing else of the sandbox, neither other host ports nor its address', () => {
    assert.equal(fromWan(`http://${HOST}:18081/`), '', 'no translation for a port not published');
    assert.equal(fromWan(`http://${web.ip}:81/`), '', 'its address directly, another port');
    assert.equal(fromWan(`http://${web.ip}:80/`), '', 'its address directly, even the published sandbox port: only the translated flow is let in');
    assert.equal(fromWan(`http://${HOST}:18080/`), 'sandbox-web', 'control: the published port still works');
  });

  it('counts the connections that came in through its published ports', () => {
    const before = connectionsIn('web');
    assert.ok(before >= 2, `${before}`);
    for (let i = 0; i < 3; i++) assert.equal(fromWan(`http://${HOST}:18080/`), 'sandbox-web');
    assert.equal(connectionsIn('web'), before + 3);
    // Connections that were refused are not counted.
    fromWan(`http://${web.ip}:80/`);
    assert.equal(connectionsIn('web'), before + 3);
  });

  it('the host reaches it at its own uplink address, never at loopback (no route_localnet)', () => {
    assert.equal(get(tb.hostNs, `http://${HOST}:18080/`), 'sandbox-web');
    assert.equal(get(tb.hostNs, `http://127.0.0.1:18080/`), '');
    assert.equal(tb.sh(tb.hostNs, ['sysctl', '-n', 'net.ipv4.conf.all.route_localnet']).trim(), '0');
    const r = run(['create', 'loop', '--publish', '127.0.0.1:18090:80']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /loopback.*route_localnet/);
  });

  it('conflicts are refused in one line, exit non-zero, nothing made: another sandbox\'s port, an overlapping address, a host listener', () => {
    const before = { names: names(), addr: elements('publish_addr').length, published: elements('published').length };
    for (const [flag, pattern] of [
      ['18080:8080', /already published by sandbox "web"/],
      [`${HOST}:18080:80`, /already published by sandbox "web"/],
      ['18053:53/udp', /already published by sandbox "web"/],
      // The testbed's host service listens on 0.0.0.0:8080 (and [::]:8081).
      ['8080:80', /host socket listens on \*:8080\/tcp/],
      [`${HOST}:8081:80`, /host socket listens on \*:8081\/tcp/],
    ] as const) {
      const r = run(['create', 'clash', '--publish', flag]);
      assert.equal(r.code, 4, `${flag}: ${r.stderr}`);
      assert.match(r.stderr, pattern, flag);
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    }
    assert.deepEqual({ names: names(), addr: elements('publish_addr').length, published: elements('published').length }, before);
    // The same port on another protocol is free.
    create('udp-8080', '--publish', '18080:80/udp');
    assert.equal(run(['rm', 'udp-8080']).code, 0);
  });

  it('bad --publish is refused before anything is made', () => {
    const before = names();
    for (const bad of ['0:80', '65536:80', '8080:0', '8080:80/sctp', '300.1.2.3:8080:80', '8080', ':8080:80']) {
      const r = run(['create', 'bad', '--publish', bad]);
      assert.equal(r.code, 2, `${bad}: ${r.stderr}`);
      assert.match(r.stderr, /--publish/, bad);
    }
    assert.deepEqual(names(), before);
  });

  it('another sandbox cannot use the published port to get around policy: the host port stays a host port to it, its group reaches the address', () => {
    create('peer');
    assert.equal(get(tb.wanNs, `http://${HOST}:18080/`), 'sandbox-web');
    assert.equal(tb.curl(I, 'peer', `http://${HOST}:18080/`).stdout, '', 'through the host port');
    assert.equal(tb.curl(I, 'peer', `http://${web.ip}:80/`).stdout, '', 'at its address: other sandboxes stay denied');
    // One group: the group opens the address; the host port stays shut all the same.
    assert.equal(run(['policy', 'set', 'web', '--group', 'g']).code, 0);
    create('mate', '--group', 'g');
    assert.equal(tb.curl(I, 'mate', `http://${HOST}:18080/`).stdout, '', 'group peer, through the host port');
    assert.equal(tb.curl(I, 'mate', `http://${web.ip}:80/`).stdout, 'sandbox-web', 'group peer, at the address (control)');
    // The policy change kept the publishing.
    assert.equal(fromWan(`http://${HOST}:18080/`), 'sandbox-web');
  });

  it('another toastnet instance on the host cannot publish the same host port', () => {
    const J = `${I}b`;
    const other = (args: string[]) => tb.toastnet(J, args, { extraFlags: ['--subnet', '10.168.0.0/16'] });
    const r = other(['create', 'x', '--publish', `${HOST}:18080:80`]);
    assert.equal(r.code, 4, r.stderr);
    assert.match(r.stderr, new RegExp(`already published by toastnet instance "${I}" \\(\\*:18080\\)`));
    // Another port is its to publish; and then this instance cannot take that one.
    assert.equal(other(['create', 'y', '--publish', '18082:80']).code, 0);
    const back = run(['create', 'z', '--publish', '18082:80/tcp']);
    assert.equal(back.code, 4, back.stderr);
    assert.match(back.stderr, new RegExp(`already published by toastnet instance "${J}"`));
    assert.equal(other(['down']).code, 0);
  });

  it('a table rebuild (up) and gc (the sets made exactly what live sandboxes own) keep the publishing', () => {
    assert.equal(run(['up']).code, 0);
    assert.equal(fromWan(`http://${HOST}:18080/`), 'sandbox-web');
    assert.equal(run(['gc']).code, 0);
    assert.equal(fromWan(`http://${HOST}:18080/`), 'sandbox-web');
    assert.equal(elements('published').length, 2);
  });

  it('rm takes the publishing away in the same transaction as the rest; the port can be published again', () => {
    assert.equal(run(['rm', 'web']).code, 0);
    assert.equal(fromWan(`http://${HOST}:18080/`), '');
    assert.deepEqual([elements('publish_addr').length, elements('publish_port').length, elements('published').length], [0, 0, 0]);
    const again = create('web2', '--publish', '18080:81');
    assert.equal(again.publish?.length, 1);
  });
});

describe('publish: through the API, on a warm-pool member', () => {
  let tb: Testbed;
  const I = `pup${Date.now().toString(36)}`;
  const HOST = WAN.hostUplink;
  let cl: ToastnetClient;
  const idle = async () => (await cl.status()).pool.idle;

  before(async () => {
    tb = await Testbed.create({ hostService: false });
    const cfg = path.join(tb.dir, 'pool.json');
    fs.writeFileSync(cfg, JSON.stringify({ poolSize: 2 }));
    cl = new ToastnetClient(tb.socketPath(I));
    tb.startDaemon(I, ['--config', cfg]);
    await waitFor(() => cl.ping(), 'the daemon', 10_000);
    await waitFor(async () => (await idle()) === 2, '2 idle members', 10_000);
  });
  after(async () => {
    await tb?.destroy();
  });

  it('an acquired member gets the publishing; a conflicting or bad one is refused and leaves the pool as it was', async () => {
    const s = await cl.create({ name: 'pooled', publish: [{ hostPort: 18100, containerPort: 80, protocol: 'tcp' }] });
    assert.deepEqual(s.publish, [{ hostPort: 18100, containerPort: 80, protocol: 'tcp' }]);
    assert.equal((await cl.status()).pool.acquired, 1, 'served by the pool');
    await tb.serveInSandbox(I, 'pooled', ['http:0.0.0.0:80:pooled-web']);
    assert.equal(tb.try(tb.wanNs, ['curl', '-sS', '--max-time', '3', `http://${HOST}:18100/`]).stdout, 'pooled-web');
    await waitFor(async () => (await idle()) === 2, 'the pool refilled', 10_000);
    const before = (await cl.status()).pool;
    const clash = await cl.create({ name: 'clash', publish: [{ hostPort: 18100, containerPort: 81, protocol: 'tcp', hostIP: HOST }] }).catch((e: ToastnetError) => e);
    assert.ok(clash instanceof ToastnetError && clash.code === 'conflict', String(clash));
    assert.match(clash.message, /already published by sandbox "pooled"/);
    const bad = await cl.create({ name: 'bad', publish: [{ hostPort: 0, containerPort: 80, protocol: 'tcp' }] }).catch((e: ToastnetError) => e);
    assert.ok(bad instanceof ToastnetError && bad.code === 'invalid_argument', String(bad));
    assert.deepEqual((await cl.status()).pool, before, 'no member taken');
    assert.deepEqual((await cl.list()).map((x) => x.name), ['pooled']);
  });
});
