// The core promise, with real packets: sandboxes reach the internet (by address and by
// name through the gateway's DNS) and nothing else: not the host, not each other, not
// private space, not metadata, not over IPv6, not with a forged source address.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Testbed, WAN } from '../testbed/testbed.js';
import { waitFor } from '../helpers/wait.js';

describe('core: default policy with real packets', () => {
  let tb: Testbed;
  const I = `c${Date.now().toString(36)}`;
  let a: { ip: string; hostLink: string; gateway: string; prefixLength: number; netns: string };
  let b: { ip: string };
  /** A sandbox of its own for a test that changes it (routes, addresses). */
  const mk = (name: string, ...flags: string[]): { ip: string; hostLink: string } => {
    const r = tb.toastnet(I, ['create', name, '--json', ...flags]);
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout);
  };

  before(async () => {
    tb = await Testbed.create();
    const up = tb.toastnet(I, ['up']);
    assert.equal(up.code, 0, up.stderr);
    const ra = tb.toastnet(I, ['create', 'a', '--json']);
    assert.equal(ra.code, 0, ra.stderr);
    a = JSON.parse(ra.stdout);
    const rb = tb.toastnet(I, ['create', 'b', '--mode', 'macvlan', '--json']);
    assert.equal(rb.code, 0, rb.stderr);
    b = JSON.parse(rb.stdout);
  });
  after(async () => {
    await tb?.destroy();
  });

  it('create --json prints the documented fields', () => {
    for (const k of ['name', 'ip', 'gateway', 'prefixLength', 'netns', 'mac', 'mode', 'resolvConf']) assert.ok(k in a, `missing ${k}`);
    assert.equal(a.gateway, '10.166.0.1');
    assert.equal(a.prefixLength, 16);
    assert.equal(a.netns, `/run/netns/${I}-a`);
  });

  it('inspect --json adds the kernel\'s view: the host link and the sandbox\'s address', () => {
    const r = JSON.parse(tb.toastnet(I, ['inspect', 'a', '--json']).stdout);
    for (const k of ['name', 'ip', 'gateway', 'prefixLength', 'netns', 'mac', 'mode', 'resolvConf']) assert.equal(r[k], (a as Record<string, unknown>)[k], k);
    assert.equal(r.kernel.host.name, a.hostLink);
    assert.ok(r.kernel.sandbox.addresses.some((x: { address: string }) => x.address === a.ip));
  });

  for (const [mode, sbx] of [['veth', 'a'], ['macvlan', 'b']] as const) {
    it(`${mode}: reaches the internet by address and by name`, () => {
      assert.equal(tb.curl(I, sbx, `http://${WAN.internet}/`).stdout, 'internet');
      assert.equal(tb.curl(I, sbx, 'http://example.test/').stdout, 'internet');
      const g = tb.inSandbox(I, sbx, ['getent', 'hosts', 'www.example.test']);
      assert.match(g.stdout, /203\.0\.113\.10/);
    });

    it(`${mode}: metadata, private ranges and CGNAT space are blocked`, () => {
      for (const url of [`http://${WAN.metadata}/`, `http://${WAN.vpc}/`, `http://${WAN.vpc}:5432/`, `http://${WAN.private10}/`, `http://${WAN.private192}/`, `http://${WAN.cgnat}/`]) {
        const r = tb.curl(I, sbx, url);
        assert.notEqual(r.code, 0, `${url} reachable from ${sbx}: ${r.stdout}`);
        assert.equal(r.stdout, '');
      }
    });

    it(`${mode}: host services are blocked on the gateway and uplink addresses`, () => {
      for (const url of ['http://10.166.0.1:8080/', `http://${WAN.hostUplink}:8080/`, 'http://127.0.0.1:8080/']) {
        const r = tb.curl(I, sbx, url);
        assert.notEqual(r.code, 0, `${url} reachable: ${r.stdout}`);
      }
    });
  }

  it('a denied TCP connection fails fast (reset), not after a timeout', () => {
    const t = Date.now();
    const r = tb.curl(I, 'a', `http://${WAN.metadata}/`);
    assert.equal(r.code, 7, r.stderr); // curl: could not connect (RST), not 28 (timeout)
    assert.ok(Date.now() - t < 2500);
  });

  it('sandboxes cannot reach each other, in either direction and either mode', async () => {
    const v = mk('peer-veth');
    const m = mk('peer-macvlan', '--mode', 'macvlan');
    await tb.serveInSandbox(I, 'peer-veth', ['http:0.0.0.0:9000:in-veth']);
    await tb.serveInSandbox(I, 'peer-macvlan', ['http:0.0.0.0:9000:in-macvlan']);
    assert.notEqual(tb.curl(I, 'peer-macvlan', `http://${v.ip}:9000/`).code, 0);
    assert.notEqual(tb.curl(I, 'peer-veth', `http://${m.ip}:9000/`).code, 0);
    // Even with an explicit route via the gateway (root in the sandbox can add one).
    tb.inSandbox(I, 'peer-veth', ['ip', 'route', 'add', `${m.ip}/32`, 'via', '10.166.0.1', 'dev', 'eth0', 'onlink']);
    assert.notEqual(tb.curl(I, 'peer-veth', `http://${m.ip}:9000/`).code, 0);
    // The host (an orchestrator) may still connect into both.
    assert.equal(tb.sh(tb.hostNs, ['curl', '-sS', '--max-time', '3', `http://${v.ip}:9000/`]), 'in-veth');
    assert.equal(tb.sh(tb.hostNs, ['curl', '-sS', '--max-time', '3', `http://${m.ip}:9000/`]), 'in-macvlan');
  });

  it('DNS works over UDP and TCP, including answers too large for UDP', () => {
    const udp = tb.inSandbox(I, 'a', ['dig', '+short', '+time=2', '+tries=1', '@10.166.0.1', 'example.test']);
    assert.equal(udp.stdout.trim(), '203.0.113.10');
    const tcp = tb.inSandbox(I, 'a', ['dig', '+tcp', '+short', '+time=2', '+tries=1', '@10.166.0.1', 'big.test']);
    assert.equal(tcp.stdout.trim().split('\n').length, 60);
    const trunc = tb.inSandbox(I, 'a', ['dig', '+short', '+time=2', '+tries=1', '@10.166.0.1', 'big.test']); // TC=1, dig retries over TCP
    assert.equal(trunc.stdout.trim().split('\n').length, 60);
    const nx = tb.inSandbox(I, 'a', ['dig', '+time=2', '+tries=1', '@10.166.0.1', 'nope.test']);
    assert.match(nx.stdout, /status: NXDOMAIN/);
  });

  it('both veth ends are created with one queue each (no shrink under RTNL)', () => {
    const queues = (json: string) => JSON.parse(json).map((l: { num_tx_queues: number; num_rx_queues: number }) => [l.num_tx_queues, l.num_rx_queues]);
    assert.deepEqual(queues(tb.sh(tb.hostNs, ['ip', '-d', '-j', 'link', 'show', a.hostLink])), [[1, 1]]);
    assert.deepEqual(queues(tb.inSandbox(I, 'a', ['ip', '-d', '-j', 'link', 'show', 'eth0']).stdout), [[1, 1]]);
  });

  it('DNS to another port of the host is refused by the filter, UDP and TCP (control: a server there answers the host)', async () => {
    await tb.serveHost(['dns:0.0.0.0:5353']);
    const dig = (run: (cmd: string[]) => { stdout: string; stderr: string }, ...extra: string[]) => run(['dig', '+time=2', '+tries=1', ...extra, '-p', '5353', '@10.166.0.1', 'example.test']);
    const fromHost = (cmd: string[]) => tb.try(tb.hostNs, cmd);
    const fromSandbox = (cmd: string[]) => tb.inSandbox(I, 'a', cmd);
    assert.match(dig(fromHost, '+short').stdout, /^203\.0\.113\.10$/m, 'control: the server answers on the gateway address over UDP');
    assert.match(dig(fromHost, '+short', '+tcp').stdout, /^203\.0\.113\.10$/m, 'control: and over TCP');
    // The filter's ICMP admin-prohibited (dig: "host unreachable"; a closed port would be "connection refused").
    const udp = dig(fromSandbox);
    assert.match(udp.stdout + udp.stderr, /communications error to 10\.166\.0\.1#5353: host unreachable/, udp.stdout);
    // And its TCP reset, where the server listens.
    const tcp = dig(fromSandbox, '+tcp');
    assert.match(tcp.stdout + tcp.stderr, /Connection to 10\.166\.0\.1#5353.*failed: connection refused/, tcp.stdout);
  });

  it('IPv6 from a sandbox is dropped: IPv6 is off on the host end, and the filter drops it if an operator turns it back on', () => {
    const v6 = mk('v6');
    const sysctl = `/proc/sys/net/ipv6/conf/${v6.hostLink}/disable_ipv6`;
    assert.equal(tb.sh(tb.hostNs, ['cat', sysctl]).trim(), '1');
    tb.inSandbox(I, 'v6', ['ip', '-6', 'addr', 'add', 'fd00:7::2/64', 'dev', 'eth0', 'nodad']);
    const hostAddr = ['ip', '-6', 'addr', 'add', 'fd00:7::1/64', 'dev', v6.hostLink, 'nodad'];
    assert.notEqual(tb.try(tb.hostNs, hostAddr).code, 0, 'the host end takes no IPv6 address');
    tb.sh(tb.hostNs, ['sh', '-c', `echo 0 > ${sysctl}`]);
    try {
      tb.sh(tb.hostNs, hostAddr);
      const r = tb.inSandbox(I, 'v6', ['curl', '-sS', '--max-time', '2', 'http://[fd00:7::1]:8081/']);
      assert.notEqual(r.code, 0, r.stdout);
      const rules = tb.sh(tb.hostNs, ['nft', 'list', 'chain', 'inet', I, 'source_check']);
      assert.match(rules, /meta nfproto ipv6 counter packets [1-9]/);
    } finally {
      tb.sh(tb.hostNs, ['sh', '-c', `echo 1 > ${sysctl}`]);
    }
  });

  it('a forged source address is dropped; the sandbox\'s own address keeps working', () => {
    mk('forger');
    // Control, first: its own address gets through (and the gateway's MAC is learnt: a first
    // packet from the forged address would have it asked for as that address, in vain).
    assert.equal(tb.curl(I, 'forger', `http://${WAN.internet}/`).stdout, 'internet');
    tb.inSandbox(I, 'forger', ['ip', 'addr', 'add', '10.166.0.200/16', 'dev', 'eth0']);
    const r = tb.inSandbox(I, 'forger', ['curl', '-sS', '--max-time', '2', '--interface', '10.166.0.200', `http://${WAN.internet}/`]);
    assert.notEqual(r.code, 0, r.stdout);
    assert.equal(tb.curl(I, 'forger', `http://${WAN.internet}/`).stdout, 'internet'); // its own address still works
  });

  it('exec passes the exit code through; run creates, runs and removes', () => {
    assert.equal(tb.inSandbox(I, 'a', ['sh', '-c', 'exit 7']).code, 7);
    const before = JSON.parse(tb.toastnet(I, ['ls', '--json']).stdout).length;
    const r = tb.toastnet(I, ['run', '--', 'sh', '-c', `curl -s --max-time 3 http://${WAN.internet}/ && exit 3`]);
    assert.equal(r.code, 3);
    assert.equal(r.stdout, 'internet');
    assert.equal(JSON.parse(tb.toastnet(I, ['ls', '--json']).stdout).length, before);
    const kept = tb.toastnet(I, ['run', '--keep', '--name', 'kept', '--', 'true']);
    assert.equal(kept.code, 0, kept.stderr);
    assert.equal(tb.toastnet(I, ['rm', 'kept']).code, 0);
  });

  it('up twice gives the same ruleset', () => {
    // Handles, counters, the rebuild's number (usage_epoch) and the kernel's own DNS meter
    // entries (dns_flood, conn_flood) are runtime values, not configuration.
    const strip = (s: string) => {
      const doc = JSON.parse(s) as { nftables: { set?: { name: string; elem?: unknown } }[] };
      for (const o of doc.nftables) if (o.set && ['usage_epoch', 'dns_flood', 'conn_flood'].includes(o.set.name)) delete o.set.elem;
      return JSON.stringify(doc).replace(/"handle":\d+,?/g, '').replace(/"counter":\{[^}]*\}/g, '"counter"');
    };
    const first = strip(tb.sh(tb.hostNs, ['nft', '-j', 'list', 'table', 'inet', I]));
    assert.equal(tb.toastnet(I, ['up']).code, 0);
    const second = strip(tb.sh(tb.hostNs, ['nft', '-j', 'list', 'table', 'inet', I]));
    assert.equal(second, first);
    assert.equal(tb.curl(I, 'a', `http://${WAN.internet}/`).stdout, 'internet'); // sandboxes kept working
  });

  it('bad input fails with one line and a non-zero code, and changes nothing', () => {
    const state = () => [tb.toastnet(I, ['ls', '--json']).stdout, tb.sh(tb.hostNs, ['nft', 'list', 'set', 'inet', I, 'veth_src']), tb.sh(tb.hostNs, ['ip', '-o', 'link'])].join('\n');
    const s0 = state();
    const cases: [string[], number, RegExp][] = [
      [['create', 'a'], 4, /already exists/],
      [['create', 'bad/name'], 2, /sandbox name/],
      [['create', '--mode', 'tun', 'x'], 2, /mode/],
      // exec and run answer 125 for toastnet's own failures, as docker does (the command's codes are its own).
      [['exec', 'nope', '--', 'true'], 125, /no sandbox named "nope"/],
      [['rm', 'nope'], 3, /no sandbox named "nope"/],
      [['inspect', 'nope'], 3, /no sandbox named "nope"/],
      [['--subnet', '10.166.0.1/16', 'status'], 2, /host bits set/],
      [['--subnet', 'banana', 'status'], 2, /not a CIDR/],
    ];
    for (const [args, code, msg] of cases) {
      const r = tb.toastnet(I, args);
      assert.equal(r.code, code, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, msg);
      assert.equal(r.stderr.trim().split('\n').length, 1, `more than one line: ${r.stderr}`);
    }
    assert.equal(state(), s0);
  });

  it('a namespace left without its sandbox (a crash) makes create say so in one line, and gc removes it', () => {
    tb.sh(tb.hostNs, ['ip', 'netns', 'add', `${I}-stale`]);
    const used = JSON.parse(tb.toastnet(I, ['status', '--json']).stdout).addresses.used;
    const r = tb.toastnet(I, ['create', 'stale']);
    assert.equal(r.code, 4, r.stderr);
    assert.match(r.stderr, /already exists without a sandbox.*toastnet gc/);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.equal(JSON.parse(tb.toastnet(I, ['status', '--json']).stdout).addresses.used, used, 'no address leaked');
    assert.ok(tb.sh(tb.hostNs, ['ip', 'netns', 'list']).includes(`${I}-stale`), 'the failed create left the namespace it did not make');
    assert.equal(tb.toastnet(I, ['gc']).code, 0);
    assert.equal(tb.toastnet(I, ['create', 'stale']).code, 0);
    assert.equal(tb.toastnet(I, ['rm', 'stale']).code, 0);
  });

  it('rm ends processes left in the sandbox and frees its address', async () => {
    const used = () => JSON.parse(tb.toastnet(I, ['status', '--json']).stdout).addresses.used as number;
    const before = used();
    assert.equal(tb.toastnet(I, ['create', 'busy']).code, 0);
    assert.equal(used(), before + 1);
    const p = await tb.serveInSandbox(I, 'busy', ['http:0.0.0.0:9100:busy']);
    const exited = new Promise((r) => p.on('exit', r));
    const r = tb.toastnet(I, ['rm', 'busy']);
    assert.equal(r.code, 0, r.stderr);
    await exited;
    assert.equal(tb.toastnet(I, ['inspect', 'busy']).code, 3);
    // The address is given back once the daemon has reaped the removal.
    await waitFor(() => used() === before, 'the address to be freed');
  });

  it('down removes everything the instance made and nothing else', () => {
    const r = tb.toastnet(I, ['down']);
    assert.equal(r.code, 0, r.stderr);
    const links = tb.sh(tb.hostNs, ['ip', '-o', 'link']);
    assert.doesNotMatch(links, /tn[0-9a-f]{4}[gms]/);
    assert.match(links, /up0/); // the testbed's own link survives
    assert.doesNotMatch(tb.sh(tb.hostNs, ['nft', 'list', 'tables']), new RegExp(`(inet|arp) ${I}\\b`));
    assert.equal(tb.sh(tb.hostNs, ['ip', 'netns', 'list']).split('\n').filter((l) => l.startsWith(`${I}-`)).length, 0);
    assert.equal(tb.sh(tb.hostNs, ['cat', '/proc/sys/net/ipv4/ip_forward']).trim(), '0');
    assert.equal(tb.sh(tb.hostNs, ['curl', '-sS', '--max-time', '3', `http://127.0.0.1:8080/`]), 'host-service');
  });
});
