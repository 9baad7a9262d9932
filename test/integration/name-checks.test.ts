// Name checks on the first flight (core/name-check.ts), with real packets against a daemon in
// the testbed: one address of the testbed's internet (203.0.113.20) serves several names
// over TLS (a certificate each, chosen by SNI) and HTTP (virtual hosts), as a CDN edge does.
// A sandbox allowed cdn.test (a CNAME to that edge) reaches it by name; naming another site
// on the same admitted address, in the ClientHello or the Host header, gets a reset and an
// event with the name; so does naming none. A sandbox without an allow-list is untouched,
// unless it asks for name checks: then it must name what its own DNS answered with the address;
// and with the daemon down a name-checked connection waits instead of passing (fail closed);
// what the gate dropped with no verdict (the daemon down, or overloaded) is said in events.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { ChildProcess } from 'node:child_process';
import { ToastnetClient } from '../../src/api/client.js';
import { Testbed, VHOST_PORT, WAN } from '../testbed/testbed.js';
import { sleep, waitFor } from '../helpers/wait.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const SPLIT_HELLO = path.join(here, 'helpers', 'split-hello.js');
const I = 'names';
const EDGE = WAN.internet2;

describe('name checks: TLS SNI and HTTP Host on a shared address', { timeout: 300_000 }, () => {
  let tb: Testbed;
  let cl: ToastnetClient;
  let daemon: ChildProcess;
  let ca: string;

  before(async () => {
    tb = await Testbed.create();
    ca = await tb.serveTlsNames(['cdn.test', 'edge.cdn-provider.test', 'other.test']);
    cl = new ToastnetClient(tb.socketPath(I));
    assert.equal(tb.toastnet(I, ['up']).code, 0);
    daemon = tb.startDaemon(I);
    await waitFor(() => cl.ping(), 'the daemon to answer');
    await cl.create({ name: 'named', policy: { egress: { domains: ['cdn.test'] } } });
    await cl.create({ name: 'open' });
  });
  after(async () => {
    tb?.toastnet(I, ['down']);
    await tb?.destroy();
  });

  const curl = (sb: string, args: string[]) => tb.inSandbox(I, sb, ['curl', '-sS', '--max-time', '4', '--cacert', ca, ...args]);
  const mismatches = async (name?: string) => (await cl.events({ sandbox: 'named' })).filter((e) => e.reason === 'name_mismatch' && (name === undefined || e.name === name));

  it('an allowed name works over TLS and HTTP on the admitted address', () => {
    const tlsOk = curl('named', ['https://cdn.test/']);
    assert.equal(tlsOk.code, 0, tlsOk.stderr);
    assert.match(tlsOk.stdout, /sni=cdn\.test/);
    const httpOk = curl('named', [`http://cdn.test:${VHOST_PORT}/`]);
    assert.equal(httpOk.code, 0, httpOk.stderr);
    assert.match(httpOk.stdout, /vhost host=cdn\.test/);
  });

  it('another name on the same admitted address is reset: TLS SNI, HTTP Host, --resolve and --connect-to tricks, and an event names it', async () => {
    assert.equal(curl('named', ['https://cdn.test/']).code, 0, 'cdn.test resolved: its address admitted');
    const before = (await mismatches()).length;
    const sni = curl('named', ['--resolve', `other.test:443:${EDGE}`, 'https://other.test/']);
    assert.notEqual(sni.code, 0, `SNI other.test got through: ${sni.stdout}`);
    assert.match(sni.stderr, /reset|35|56/i);
    const connectTo = curl('named', ['--connect-to', 'other.test:443:cdn.test:443', 'https://other.test/']);
    assert.notEqual(connectTo.code, 0, `--connect-to got through: ${connectTo.stdout}`);
    const host = curl('named', ['-H', 'Host: other.test', `http://cdn.test:${VHOST_PORT}/`]);
    assert.notEqual(host.code, 0, `Host other.test got through: ${host.stdout}`);
    assert.match(host.stderr, /reset/i);
    await waitFor(async () => (await mismatches('other.test')).length - before >= 3, 'three name_mismatch events naming other.test');
    const e = (await mismatches('other.test')).at(-1)!;
    assert.equal(e.dst, EDGE);
    assert.equal(e.action, 'blocked');
    assert.match(e.rule, /other\.test is not in egress\.domains/);
  });

  it('a ClientHello without SNI (an address as the URL) is reset', async () => {
    const noSni = curl('named', ['-k', `https://${EDGE}/`]);
    assert.notEqual(noSni.code, 0, `no SNI got through: ${noSni.stdout}`);
    await waitFor(async () => (await mismatches()).some((x) => x.name === undefined && /no SNI/.test(x.rule)), 'an event for the missing SNI');
  });

  it('a ClientHello split over many segments is judged whole: the allowed name passes, another is reset', () => {
    assert.equal(curl('named', ['https://cdn.test/']).code, 0);
    const ok = tb.inSandbox(I, 'named', [process.execPath, SPLIT_HELLO, EDGE, 'cdn.test', ca, '40']);
    assert.equal(ok.code, 0, ok.stdout + ok.stderr);
    assert.match(ok.stdout, /sni=cdn\.test/);
    const bad = tb.inSandbox(I, 'named', [process.execPath, SPLIT_HELLO, EDGE, 'other.test', ca, '40']);
    assert.notEqual(bad.code, 0, `a split hello for other.test got through: ${bad.stdout}`);
    assert.match(bad.stdout, /ECONNRESET/);
  });

  it('data in the SYN (TCP Fast Open) is judged like any first flight: the allowed name passes, another is reset', async () => {
    // A server of the testbed's internet that takes Fast Open (its namespace's sysctl, set
    // before it listens: the kernel reads it at listen()).
    assert.equal(spawnSync('nsenter', [`--net=/run/netns/${tb.wanNs}`, 'sysctl', '-qw', 'net.ipv4.tcp_fastopen=1027']).status, 0);
    const port = VHOST_PORT + 17;
    await tb.serveWan([`vhost:${EDGE}:${port}`]);
    const tfoActive = () => {
      const r = tb.inSandbox(I, 'named', ['nstat', '-az', 'TcpExtTCPFastOpenActive']);
      return Number(/TcpExtTCPFastOpenActive\s+(\d+)/.exec(r.stdout)?.[1] ?? NaN);
    };
    // The first connection fetches the cookie; the next ones send their request in the SYN.
    const url = `http://cdn.test:${port}/`;
    for (let i = 0; i < 2; i++) assert.equal(curl('named', ['--tcp-fastopen', url]).code, 0);
    const before = tfoActive();
    const ok = curl('named', ['--tcp-fastopen', url]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /vhost host=cdn\.test/);
    assert.ok(tfoActive() > before, 'the allowed request went in the SYN (TcpExtTCPFastOpenActive)');
    // The server's count of SYNs whose data it took: up for the allowed one, not for the other.
    const passive = () => {
      const r = spawnSync('nsenter', [`--net=/run/netns/${tb.wanNs}`, 'nstat', '-az', 'TcpExtTCPFastOpenPassive'], { encoding: 'utf8' });
      return Number(/TcpExtTCPFastOpenPassive\s+(\d+)/.exec(r.stdout)?.[1] ?? NaN);
    };
    const passiveBefore = passive();
    assert.ok(passiveBefore >= 1, `the server took data in a SYN: ${passiveBefore}`);
    const mismatchesBefore = (await mismatches('other.test')).length;
    const sneaky = curl('named', ['--tcp-fastopen', '-H', 'Host: other.test', url]);
    assert.notEqual(sneaky.code, 0, `Host other.test in a SYN got through: ${sneaky.stdout}`);
    assert.equal(passive(), passiveBefore, 'the SYN naming other.test never reached the server with its data');
    await waitFor(async () => (await mismatches('other.test')).length > mismatchesBefore, 'a name_mismatch event for the Host in the SYN');
  });

  it('a new connection on the addresses and ports of one just allowed is judged, not let through on its verdict', () => {
    assert.equal(curl('named', ['https://cdn.test/']).code, 0, 'cdn.test resolved: its address admitted');
    // Connection A names cdn.test, reads its answer and resets (the port is free at once);
    // B opens from the same port at once and names other.test.
    const script = `
      const net = require('net');
      const once = (host) => new Promise((res) => {
        const s = net.connect({ host: '${EDGE}', port: ${VHOST_PORT}, localPort: 41234 }, () => s.write('GET / HTTP/1.1\\r\\nHost: ' + host + '\\r\\n\\r\\n'));
        let out = '';
        s.on('data', (d) => { out += d; if (out.includes('vhost')) { s.resetAndDestroy(); res(out.slice(out.indexOf('vhost'))); } });
        s.on('error', (e) => res('error ' + e.code));
        setTimeout(() => { s.destroy(); res('timeout ' + out); }, 3000);
      });
      (async () => { const a = await once('cdn.test'); const b = await once('other.test'); console.log(JSON.stringify({ a, b })); })();`;
    const r = tb.inSandbox(I, 'named', [process.execPath, '-e', script]);
    assert.equal(r.code, 0, r.stderr);
    const { a, b } = JSON.parse(r.stdout) as { a: string; b: string };
    assert.match(a, /vhost host=cdn\.test/);
    assert.doesNotMatch(b, /other\.test/, `B got through on A's verdict: ${b}`);
    assert.match(b, /error ECONNRESET/);
  });

  it('UDP to an admitted address (QUIC) is refused, with an event', async () => {
    assert.equal(curl('named', ['https://cdn.test/']).code, 0);
    const send = tb.inSandbox(I, 'named', [process.execPath, '-e', `
      const s = require('node:dgram').createSocket('udp4');
      s.connect(443, '${EDGE}', () => { s.send(Buffer.alloc(1200, 1)); setTimeout(() => { s.send(Buffer.alloc(1200, 1)); }, 200); });
      s.on('error', (e) => { console.log(e.code); process.exit(0); });
      setTimeout(() => { console.log('no error'); process.exit(0); }, 1500);`]);
    assert.equal(send.code, 0, send.stderr);
    assert.notEqual(send.stdout.trim(), 'no error', 'the datagram was not refused');
    await waitFor(async () => (await cl.events({ sandbox: 'named' })).some((x) => x.reason === 'unnamed_udp' && x.dst === EDGE), 'an unnamed_udp event');
  });

  it('the gate\'s reader runs ahead of what sandboxes run: its thread alone has nice -10', () => {
    const nices = fs.readdirSync(`/proc/${daemon.pid}/task`).map((tid) => {
      const stat = fs.readFileSync(`/proc/${daemon.pid}/task/${tid}/stat`, 'utf8');
      return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16]); // field 19, nice
    });
    assert.equal(nices.filter((n) => n === -10).length, 1, `nice values of the daemon's threads: ${nices.join(' ')}`);
    assert.ok(nices.filter((n) => n === 0).length >= 1, 'the rest of the daemon as it was');
  });

  it('a sandbox without an allow-list is not name-checked', () => {
    const r = curl('open', ['--resolve', `other.test:443:${EDGE}`, 'https://other.test/']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /sni=other\.test/);
  });

  it('verifyNames without an allow-list: a connection must name what the sandbox\'s own DNS answered with its address; another sandbox\'s answers do not count', async () => {
    await cl.create({ name: 'bound', policy: { egress: { verifyNames: true } } });
    await cl.create({ name: 'bound2', policy: { egress: { verifyNames: true } } });
    const events = async (sb: string, reason: string) => (await cl.events({ sandbox: sb, limit: 1000 })).filter((e) => e.reason === reason);
    // Asked and named (cdn.test, a CNAME to the edge): TLS and HTTP pass.
    const tlsOk = curl('bound', ['https://cdn.test/']);
    assert.equal(tlsOk.code, 0, tlsOk.stderr);
    assert.match(tlsOk.stdout, /sni=cdn\.test/);
    const httpOk = curl('bound', [`http://cdn.test:${VHOST_PORT}/`]);
    assert.equal(httpOk.code, 0, httpOk.stderr);
    // Another name at the same address, never asked: reset, by SNI and by Host.
    const sni = curl('bound', ['--resolve', `other.test:443:${EDGE}`, 'https://other.test/']);
    assert.notEqual(sni.code, 0, `SNI other.test, never asked, got through: ${sni.stdout}`);
    assert.match(sni.stderr, /reset|35|56/i);
    const host = curl('bound', ['-H', 'Host: other.test', `http://cdn.test:${VHOST_PORT}/`]);
    assert.notEqual(host.code, 0, `Host other.test, never asked, got through: ${host.stdout}`);
    // Once the sandbox asks for it, the same connection passes.
    const asked = curl('bound', ['https://other.test/']);
    assert.equal(asked.code, 0, asked.stderr);
    assert.match(asked.stdout, /sni=other\.test/);
    // A name asked, at an address its answer did not give (other.test is 203.0.113.20, not .10): reset.
    assert.equal(curl('bound', ['http://example.test/']).stdout, 'internet', 'example.test, asked, at its own address');
    const elsewhere = curl('bound', ['-H', 'Host: other.test', `http://${WAN.internet}/`]);
    assert.notEqual(elsewhere.code, 0, `Host other.test at ${WAN.internet} got through: ${elsewhere.stdout}`);
    // An address as the URL names nothing: reset.
    const bare = curl('bound', ['-k', `https://${EDGE}/`]);
    assert.notEqual(bare.code, 0, `no SNI got through: ${bare.stdout}`);
    // Another checked sandbox never asked for cdn.test: what 'bound' was answered is not its.
    const theirs = curl('bound2', ['--resolve', `cdn.test:443:${EDGE}`, 'https://cdn.test/']);
    assert.notEqual(theirs.code, 0, `bound2 passed on bound's answer: ${theirs.stdout}`);
    assert.equal(curl('bound2', ['https://cdn.test/']).code, 0, 'bound2 passes once it asks itself');
    // UDP to the internet names nothing: refused (QUIC falls back to TCP).
    const udp = tb.inSandbox(I, 'bound', [process.execPath, '-e', `
      const s = require('node:dgram').createSocket('udp4');
      s.connect(443, '${WAN.internet}', () => { s.send(Buffer.alloc(1200, 1)); setTimeout(() => { s.send(Buffer.alloc(1200, 1)); }, 200); });
      s.on('error', (e) => { console.log(e.code); process.exit(0); });
      setTimeout(() => { console.log('no error'); process.exit(0); }, 1500);`]);
    assert.notEqual(udp.stdout.trim(), 'no error', 'the datagram was not refused');
    // Nor does ICMP (nor any protocol but TCP and UDP) go anywhere unnamed.
    const ping = tb.inSandbox(I, 'bound', ['ping', '-c', '1', '-W', '1', WAN.internet]);
    assert.notEqual(ping.code, 0, `ping got through: ${ping.stdout}`);
    await waitFor(async () => (await events('bound', 'unnamed_proto')).some((e) => e.dst === WAN.internet), 'an unnamed_proto event');
    // Events name what was seen and why; stats count it.
    await waitFor(async () => (await events('bound', 'name_mismatch')).length >= 4, 'four name_mismatch events for bound');
    const said = await events('bound', 'name_mismatch');
    assert.ok(said.some((e) => e.name === 'other.test' && e.dst === EDGE && /other\.test is not a name the sandbox's DNS answered with this address/.test(e.rule)), JSON.stringify(said));
    assert.ok(said.some((e) => e.name === 'other.test' && e.dst === WAN.internet), 'the name at an address its answer did not give');
    await waitFor(async () => (await events('bound2', 'name_mismatch')).length === 1, 'bound2\'s one name_mismatch event');
    await waitFor(async () => (await events('bound', 'unnamed_udp')).some((e) => e.dst === WAN.internet), 'an unnamed_udp event');
    const stats = await cl.stats('bound');
    assert.ok((stats.nameChecks?.allowed ?? 0) >= 4, JSON.stringify(stats.nameChecks));
    assert.ok((stats.nameChecks?.mismatched ?? 0) >= 4, JSON.stringify(stats.nameChecks));
  });

  it('turning name checks on cuts the connections they would judge: never judged, they end (their next packet is reset)', async () => {
    await cl.create({ name: 'turned' });
    const { netns } = await cl.get('turned');
    assert.equal(curl('turned', ['https://cdn.test/']).code, 0, 'asked for cdn.test before its checks come on');
    // A client that writes every 100 ms, prints what it reads, and exits 1 when the connection dies.
    const client = `const s=require('net').connect(7000,'${EDGE}');setInterval(()=>s.write('x'),100);s.on('data',d=>process.stdout.write(d));s.on('error',()=>process.exit(1));s.on('close',()=>process.exit(1));`;
    const p = spawn('nsenter', [`--net=${netns.startsWith('/') ? netns : `/run/netns/${netns}`}`, process.execPath, '-e', client], { stdio: ['ignore', 'pipe', 'ignore'] });
    let out = '';
    p.stdout!.on('data', (d) => (out += d));
    const ended = () => p.exitCode !== null || p.signalCode !== null;
    try {
      await waitFor(() => out.includes('tick') || ended(), 'the connection to deliver', 5000);
      assert.match(out, /tick/);
      const r = await cl.policySet('turned', { egress: { verifyNames: true } });
      assert.ok((r.cut ?? 0) >= 1, `cut: ${JSON.stringify(r)}`);
      await waitFor(ended, 'the client to see its connection end', 5000);
      assert.equal(p.exitCode, 1);
      // What it was answered before the checks came on counts: cdn.test, asked before, is
      // named without asking again (a client reconnecting from its own cache).
      const cached = curl('turned', ['--resolve', `cdn.test:443:${EDGE}`, 'https://cdn.test/']);
      assert.equal(cached.code, 0, `an answer from before the checks: ${cached.stderr}`);
      assert.notEqual(curl('turned', ['--resolve', `other.test:443:${EDGE}`, 'https://other.test/']).code, 0, 'a name never asked');
    } finally {
      p.kill('SIGKILL');
    }
  });

  it('with the daemon down, a name-checked connection waits (fail closed), and passes once it is back', async () => {
    const { netns: ns, ip: namedIp } = await cl.get('named');
    const nsPath = (n: string) => (n.startsWith('/') ? n : `/run/netns/${n}`);
    const eventsOf = async (sb: string, reason: string) => (await cl.events({ sandbox: sb, limit: 1000 })).filter((e) => e.reason === reason);
    assert.equal(curl('named', ['https://cdn.test/']).code, 0);
    const openNs = nsPath((await cl.get('open')).netns);
    const eventsBefore = (await eventsOf('named', 'name_unjudged')).length;
    daemon.kill('SIGKILL');
    await waitFor(async () => !(await cl.ping().catch(() => false)), 'the daemon to be gone');
    // Not through the CLI, which would start the daemon again.
    const direct = (url: string, extra: string[] = []) => spawnSync('nsenter', [`--net=${nsPath(ns)}`, 'curl', '-sS', '--max-time', '3', '--cacert', ca, ...extra, url], { encoding: 'utf8' });
    const waiting = direct('https://cdn.test/', ['--resolve', `cdn.test:443:${EDGE}`]);
    assert.equal(waiting.status, 28, `expected a timeout (28), got ${waiting.status}: ${waiting.stdout}${waiting.stderr}`);
    // Every other sandbox is unaffected: nothing of theirs waits for a name.
    const other = spawnSync('nsenter', [`--net=${openNs}`, 'curl', '-sS', '--max-time', '3', '--cacert', ca, '--resolve', `other.test:443:${EDGE}`, 'https://other.test/'], { encoding: 'utf8' });
    assert.equal(other.status, 0, `a sandbox without name checks, with the daemon down: ${other.stderr}`);
    daemon = tb.startDaemon(I);
    await waitFor(() => cl.ping(), 'the daemon to answer again');
    // What the gate dropped while no daemon read its queue is said, once the daemon is back.
    let said: Awaited<ReturnType<typeof eventsOf>> = [];
    await waitFor(async () => (said = (await eventsOf('named', 'name_unjudged')).slice(eventsBefore)).length > 0, 'an event for what the gate dropped unjudged');
    const packets = said.reduce((n, e) => n + (e.packets ?? 0), 0);
    // curl's first flight and its retransmissions within 3 s: at least 2 packets.
    assert.ok(packets >= 2, `dropped packets reported: ${packets}`);
    assert.equal(said[0].src, namedIp);
    const stats = await cl.stats('named');
    assert.equal(stats.nameChecks?.unjudged, packets, 'the sandbox\'s stats count them too');
    const back = curl('named', ['https://cdn.test/']);
    assert.equal(back.code, 0, back.stderr);
    assert.match(back.stdout, /sni=cdn\.test/);
    // What the reader knew of answers (names checked without an allow-list) is taken back from
    // the query log: 'bound' asked for other.test before the restart and, without asking
    // again, still names it; 'bound2' never asked for it.
    const takenBack = curl('bound', ['--resolve', `other.test:443:${EDGE}`, 'https://other.test/']);
    assert.equal(takenBack.code, 0, `an answer from before the restart: ${takenBack.stderr}`);
    assert.notEqual(curl('bound2', ['--resolve', `other.test:443:${EDGE}`, 'https://other.test/']).code, 0, 'nor is it another sandbox\'s after the restart');
    // Judged packets had the bit cleared by their verdict: nothing more counted as unjudged.
    await sleep(1500); // waits out the daemon's next poll of the count (every second)
    assert.equal((await eventsOf('named', 'name_unjudged')).length, eventsBefore + said.length);
  });

  it('with the daemon overloaded (its reader stopped, more first flights than its socket holds), what does not fit is dropped, and said', async () => {
    assert.equal(curl('named', ['https://cdn.test/']).code, 0, 'cdn.test resolved: its address admitted');
    const { netns, ip } = await cl.get('named');
    const before = (await cl.stats('named')).nameChecks?.unjudged ?? 0;
    // Stopped, not gone: the queue stays bound, its packets wait; past what the reader's
    // socket holds, the kernel gives them back unjudged (fail-open queue, then the drop).
    daemon.kill('SIGSTOP');
    let flood;
    try {
      // 400 connections to the admitted address, each sending 1,200 bytes at once: 480 kB of
      // first flights, over twice what the socket's receive buffer holds.
      const script = `const net=require('net');let n=0;for(let i=0;i<400;i++){const s=net.connect(443,'${EDGE}',()=>{s.write(Buffer.alloc(1200,1));n++});s.on('error',()=>{})}setTimeout(()=>{console.log(n);process.exit(0)},3000)`;
      flood = spawnSync('nsenter', [`--net=${netns.startsWith('/') ? netns : `/run/netns/${netns}`}`, process.execPath, '-e', script], { encoding: 'utf8', timeout: 20_000 });
    } finally {
      daemon.kill('SIGCONT');
    }
    assert.ok(Number(flood.stdout) >= 300, `connections opened: ${flood.stdout}${flood.stderr}`);
    await waitFor(async () => ((await cl.stats('named')).nameChecks?.unjudged ?? 0) > before, 'the overflow to be counted and reported', 15_000);
    const said = (await cl.events({ sandbox: 'named', limit: 1000 })).filter((e) => e.reason === 'name_unjudged');
    assert.ok(said.length > 0 && said.at(-1)!.src === ip && (said.at(-1)!.packets ?? 0) > 0, JSON.stringify(said.at(-1)));
    const back = curl('named', ['https://cdn.test/']);
    assert.equal(back.code, 0, `the gate works again: ${back.stderr}`);
  });
});
