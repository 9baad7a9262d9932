// Escape attempts by root inside a sandbox (CAP_NET_ADMIN in its namespace): each must fail
// at the host, whatever the sandbox does to its interfaces, addresses, routes or neighbours.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Testbed, WAN } from '../testbed/testbed.js';
import { sleep } from '../helpers/wait.js';

describe('hardening: escape attempts from a root sandbox', () => {
  let tb: Testbed;
  const I = `h${Date.now().toString(36)}`;
  let a: { ip: string; mac: string };
  let m1: { ip: string; mac: string };
  let m2: { ip: string; mac: string };
  const sh = (sbx: string, script: string) => tb.inSandbox(I, sbx, ['sh', '-c', script]);
  const curl = (sbx: string, url: string, extra = '') => sh(sbx, `curl -sS --max-time 2 ${extra} ${url}`);

  before(async () => {
    tb = await Testbed.create();
    const mk = (name: string, ...flags: string[]) => {
      const r = tb.toastnet(I, ['create', name, '--json', ...flags]);
      assert.equal(r.code, 0, r.stderr);
      return JSON.parse(r.stdout);
    };
    a = mk('a');
    m1 = mk('m1', '--mode', 'macvlan');
    m2 = mk('m2', '--mode', 'macvlan');
    mk('v2');
  });
  after(async () => {
    await tb?.destroy();
  });

  it('veth: a changed MAC address gets nothing through', () => {
    assert.equal(curl('a', `http://${WAN.internet}/`).stdout, 'internet');
    const r = sh('a', `ip link set eth0 address 02:00:00:00:00:99 && curl -sS --max-time 2 http://${WAN.internet}/; c=$?; ip link set eth0 address ${a.mac}; exit $c`);
    assert.notEqual(r.code, 0, r.stdout);
    assert.equal(curl('a', `http://${WAN.internet}/`).stdout, 'internet');
  });

  it('veth: another sandbox\'s address as source gets nothing through', () => {
    const r = sh('a', `ip addr add ${m1.ip}/32 dev eth0 && curl -sS --max-time 2 --interface ${m1.ip} http://${WAN.internet}/; c=$?; ip addr del ${m1.ip}/32 dev eth0; exit $c`);
    assert.notEqual(r.code, 0, r.stdout);
  });

  it('macvlan: another sandbox\'s address, or its MAC, gets nothing through', () => {
    assert.equal(curl('m1', `http://${WAN.internet}/`).stdout, 'internet');
    // m2's address from m1's MAC: not the pair the host admits.
    const r = sh('m1', `ip addr add ${m2.ip}/32 dev eth0 && curl -sS --max-time 2 --interface ${m2.ip} http://${WAN.internet}/; c=$?; ip addr del ${m2.ip}/32 dev eth0; exit $c`);
    assert.notEqual(r.code, 0, r.stdout);
    // m2's MAC: the kernel refuses two macvlan children one address on one parent.
    const mac = sh('m1', `ip link set eth0 address ${m2.mac}`);
    assert.notEqual(mac.code, 0);
    assert.equal(curl('m2', `http://${WAN.internet}/`).stdout, 'internet');
  });

  it('the host\'s loopback is unreachable through a crafted route', () => {
    const r = sh('a', `ip route add 127.0.0.2/32 via 10.166.0.1 dev eth0 onlink 2>/dev/null; curl -sS --max-time 2 http://127.0.0.2:8080/`);
    assert.notEqual(r.code, 0, r.stdout);
  });

  it('an address the host gains after up is closed too', () => {
    tb.sh(tb.hostNs, ['ip', 'addr', 'add', '198.51.100.7/32', 'dev', 'lo']);
    assert.equal(tb.sh(tb.hostNs, ['curl', '-sS', '--max-time', '2', 'http://198.51.100.7:8080/']), 'host-service');
    assert.notEqual(curl('a', 'http://198.51.100.7:8080/').code, 0);
    assert.notEqual(curl('m1', 'http://198.51.100.7:8080/').code, 0);
  });

  it('an on-link route to the host\'s uplink address reaches no host service', () => {
    const r = sh('a', `ip route add ${WAN.hostUplink}/32 dev eth0 2>/dev/null; curl -sS --max-time 2 http://${WAN.hostUplink}:8080/`);
    assert.notEqual(r.code, 0, r.stdout);
  });

  it('ARP: a sandbox cannot learn the host\'s other addresses', () => {
    const r = sh('a', `ip route replace ${WAN.hostUplink}/32 dev eth0; curl -sS --max-time 1 http://${WAN.hostUplink}:8080/ >/dev/null 2>&1; ip neigh show ${WAN.hostUplink}`);
    assert.doesNotMatch(r.stdout, /lladdr/, `the host answered ARP for its uplink address: ${r.stdout}`);
    const gw = sh('a', 'ip neigh show 10.166.0.1');
    assert.match(gw.stdout, /lladdr/, 'the gateway is still resolvable');
  });

  it('ARP: a macvlan sandbox cannot poison the host\'s neighbour entry of another', async () => {
    const gwLink = JSON.parse(tb.toastnet(I, ['status', '--json']).stdout).gatewayLink as string;
    tb.try(tb.hostNs, ['curl', '-sS', '--max-time', '2', `http://${m2.ip}:1/`]); // the host resolves m2
    assert.match(tb.sh(tb.hostNs, ['ip', 'neigh', 'show', m2.ip, 'dev', gwLink]), new RegExp(m2.mac));
    // Waiting out the entry's locktime (1 s) is the point: within it the kernel ignores any
    // update, so a forgery sent then would fail whatever the filter does.
    await sleep(1200);
    const forge = [
      'import socket,struct,time',
      "s=socket.socket(socket.AF_PACKET,socket.SOCK_RAW);s.bind(('eth0',0))",
      `mac=bytes.fromhex('${m1.mac.replace(/:/g, '')}');ip=socket.inet_aton('${m2.ip}');gw=socket.inet_aton('10.166.0.1')`,
      "bc=bytes.fromhex('ffffffffffff')",
      "f=bc+mac+bytes.fromhex('0806')+struct.pack('!HHBBH',1,0x0800,6,4,2)+mac+ip+bc+gw",
      '[(s.send(f),time.sleep(0.05)) for _ in range(10)]',
    ].join('\n');
    if (process.env.TESTBED_NO_ARP_FILTER) tb.sh(tb.hostNs, ['nft', 'delete', 'table', 'arp', I]); // to see this test fail
    const r = tb.inSandbox(I, 'm1', ['python3', '-c', forge]);
    assert.equal(r.code, 0, r.stderr);
    const neigh = tb.sh(tb.hostNs, ['ip', 'neigh', 'show', m2.ip, 'dev', gwLink]);
    assert.doesNotMatch(neigh, new RegExp(m1.mac), `host now sends ${m2.ip}'s traffic to m1: ${neigh}`);
    assert.equal(curl('m2', `http://${WAN.internet}/`).stdout, 'internet');
  });

  it('IPv6 link-local and multicast get nowhere: toastnet links carry no IPv6 address, and the host\'s [::]:8081 service is not reached', () => {
    const links = tb.sh(tb.hostNs, ['ip', '-6', '-o', 'addr', 'show']);
    assert.doesNotMatch(links, /tn[0-9a-f]{4}/, 'toastnet links carry no IPv6 address');
    const r = sh('a', 'ip -6 addr add fe80::99/64 dev eth0 nodad 2>/dev/null; curl -sS --max-time 2 -g "http://[ff02::1%eth0]:8081/"');
    assert.notEqual(r.code, 0);
  });

  it('denied TCP fails fast with a reset, denied UDP with an ICMP error', () => {
    const t = Date.now();
    const r = curl('a', `http://${WAN.vpc}/`);
    assert.equal(r.code, 7);
    assert.ok(Date.now() - t < 1500);
    const u = tb.inSandbox(I, 'a', ['dig', '+time=2', '+tries=1', `@${WAN.vpc}`, 'example.test']);
    // ICMP admin-prohibited, which dig reports as "host unreachable" (a drop: "timed out").
    assert.match(u.stdout + u.stderr, new RegExp(`communications error to ${WAN.vpc.replaceAll('.', '\\.')}#53: host unreachable`), u.stdout + u.stderr);
  });
});
