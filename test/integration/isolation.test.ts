// Adversarial tests of isolation between sandboxes, by root inside a sandbox: each attempt
// comes with a control showing that the same packets do get through when the protection
// is absent (a rule restoring the old behaviour, a MAC the attacker could not know), so a
// pass means the protection held, not that the attack was broken.
//
// A packet that must not arrive is checked after a fence: a packet sent after it, by a path
// it would share from the host on, that does arrive. Once the capture has the fence, it
// would have had the attack's packets too.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { CLI, SERVERS, Testbed, WAN } from '../testbed/testbed.js';
import { PY_PACKETS, capture } from './helpers/raw-packets.js';
import { waitFor } from '../helpers/wait.js';

describe('isolation: attacks by root in a sandbox', () => {
  let tb: Testbed;
  const I = `iso${Date.now().toString(36)}`;
  const GW = '10.166.0.1';
  type Info = { ip: string; mac: string; name: string };
  const made: Record<string, Info> = {};
  const mk = (name: string, ...flags: string[]): Info => {
    const r = tb.toastnet(I, ['create', name, '--json', ...flags]);
    assert.equal(r.code, 0, r.stderr);
    return (made[name] = JSON.parse(r.stdout));
  };
  const py = (sbx: string, script: string) => {
    const r = tb.inSandbox(I, sbx, ['python3', '-c', `${PY_PACKETS}\n${script}`]);
    assert.equal(r.code, 0, `${sbx}: ${r.stderr}`);
    return r.stdout;
  };
  const nft = (...args: string[]) => tb.sh(tb.hostNs, ['nft', ...args]);
  /** Adds `rule` at the top of `chain` of the instance table; returns a function removing it. */
  const insertRule = (chain: string, rule: string): (() => void) => {
    nft('insert', 'rule', 'inet', I, chain, ...rule.split(' '), 'comment', '"test control"');
    return () => {
      const listed = JSON.parse(nft('-j', '-a', 'list', 'chain', 'inet', I, chain)).nftables as { rule?: { handle: number; comment?: string } }[];
      for (const x of listed) if (x.rule?.comment === 'test control') nft('delete', 'rule', 'inet', I, chain, 'handle', String(x.rule.handle));
    };
  };

  before(async () => {
    tb = await Testbed.create();
    await tb.serveWan([`udpecho:${WAN.internet}:9999`, `udptick:${WAN.internet2}:9998:tick`]);
  });
  after(async () => {
    await tb?.destroy();
  });

  it('an ICMP error quoting another sandbox\'s flow does not carry data to the internet (control: accepting related packets unchecked lets it)', async () => {
    const a = mk('rel-a');
    const b = mk('rel-b', '--no-internet');
    // a's UDP flow to the internet, from a port b can name.
    py('rel-a', `s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.bind(('0.0.0.0',40001))\nfor _ in range(3): s.sendto(b'hi',('${WAN.internet}',9999)); time.sleep(0.05)`);
    // b, without internet, "reports" an undeliverable packet of that flow to the internet host, with data.
    const forge = (marker: string) => [
      `inner = ip('${WAN.internet}', '${a.ip}', 17, udp('${WAN.internet}', '${a.ip}', 9999, 40001, b''))`,
      `send(ip('${b.ip}', '${WAN.internet}', 1, icmp(3, 3, inner + b'${marker}' * 8)), '${WAN.internet}')`,
    ].join('\n');
    assert.notEqual(tb.curl(I, 'rel-b', `http://${WAN.internet}/`).stdout, 'internet', 'b has no internet of its own');

    const undo = insertRule('from_sandbox', 'ct state related accept');
    try {
      const ctl = await capture(tb, tb.wanNs, 1, 'CTLMARK');
      py('rel-b', forge('CTLMARK'));
      await waitFor(() => ctl.seen().length > 0, 'the forged error to arrive in the control');
      ctl.stop();
    } finally {
      undo();
    }
    const cap = await capture(tb, tb.wanNs, 1, 'ATKMARK');
    py('rel-b', forge('ATKMARK'));
    // Fence: an echo request a sends to the internet host afterwards.
    py('rel-a', `send(ip('${a.ip}', '${WAN.internet}', 1, icmp(8, 0, b'ATKMARKFENCE')), '${WAN.internet}')`);
    await waitFor(() => cap.seen().some((l) => l.endsWith('FENCE')), 'the fence');
    cap.stop();
    assert.deepEqual(cap.seen().filter((l) => !l.endsWith('FENCE')), [], 'a forged ICMP error rode another sandbox\'s flow to the internet');
    // Its own flows' errors still pass: a's port-unreachable for a datagram to a closed port.
    assert.match(nft('list', 'chain', 'inet', I, 'from_sandbox'), /related to a flow of others/);
  });

  it('an ICMP error quoting another sandbox\'s DNS query is not delivered to that sandbox (control: unchecked related lets it)', async () => {
    const a = mk('rel-c');
    const b = mk('rel-d');
    // c asks the gateway from a fixed port; d quotes that query back to c as undeliverable.
    py('rel-c', `s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.bind(('0.0.0.0',40053))\ns.sendto(b'not a query',('${GW}',53))`);
    const forge = (marker: string) => [
      `inner = ip('${a.ip}', '${GW}', 17, udp('${a.ip}', '${GW}', 40053, 53, b''))`,
      `send(ip('${b.ip}', '${a.ip}', 1, icmp(3, 3, inner + b'${marker}' * 8)), '${a.ip}')`,
    ].join('\n');
    const run = async (marker: string) => {
      const cap = await capture(tb, `${I}-rel-c`, 1, marker);
      py('rel-d', forge(marker));
      // Fence: an echo request the host sends c afterwards.
      tb.sh(tb.hostNs, ['python3', '-c', `${PY_PACKETS}\nsend(ip('${GW}', '${a.ip}', 1, icmp(8, 0, b'${marker}FENCE')), '${a.ip}')`]);
      await waitFor(() => cap.seen().some((l) => l.includes('FENCE')), 'the fence');
      cap.stop();
      return cap.seen().filter((l) => !l.includes('FENCE'));
    };
    const undo = insertRule('from_sandbox', 'ct state related accept');
    let control: string[];
    try {
      control = await run('CTLMARK2');
    } finally {
      undo();
    }
    assert.ok(control.length > 0, 'control: with related accepted unchecked, d\'s forged error reaches c');
    assert.deepEqual(await run('ATKMARK2'), [], 'd delivered data to c by quoting c\'s flow');
  });

  it('a new owner of a removed sandbox\'s address inherits none of its flows (control: the flow delivers while its owner lives)', async () => {
    // A small subnet of its own, so that an address comes back after a few creates.
    const J = `${I}r`;
    const run = (args: string[]) => {
      const r = tb.toastnet(J, args, { extraFlags: ['--subnet', '10.77.0.0/29'] });
      assert.equal(r.code, 0, r.stderr);
      return r.stdout;
    };
    const listen = (sbx: string, port: number, secs: number, sendFirst: boolean) => tb.toastnet(J, ['exec', sbx, '--', 'python3', '-c', [
      'import socket,time',
      `s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.bind(('0.0.0.0',${port}));s.settimeout(0.2)`,
      sendFirst ? `s.sendto(b'hello',('${WAN.internet2}',9998))` : '',
      `n=0;end=time.time()+${secs}`,
      'while time.time()<end:',
      '  try:',
      '    d,_=s.recvfrom(100);n+=d==b"tick"',
      '  except socket.timeout: pass',
      'print(n)',
    ].join('\n')], { extraFlags: ['--subnet', '10.77.0.0/29'] });
    const first = JSON.parse(run(['create', 'old', '--json']));
    const live = listen('old', 40002, 1, true);
    assert.ok(Number(live.stdout) >= 5, `control: the flow delivers ticks to its owner (${live.stdout} ${live.stderr})`);
    run(['rm', 'old']);
    // Its address is given back once the daemon has reaped the removal.
    await waitFor(() => JSON.parse(run(['status', '--json'])).addresses.releasing === 0, 'the old sandbox\'s address to be released');
    // Fresh addresses first: take the rest of the /29, then the old one comes back.
    let heir: { ip: string; name: string } | undefined;
    for (let i = 0; i < 5 && !heir; i++) {
      const made = JSON.parse(run(['create', `n${i}`, '--json', '--no-internet']));
      if (made.ip === first.ip) heir = made;
    }
    assert.ok(heir, `no sandbox got ${first.ip} back`);
    const got = listen(heir.name, 40002, 1.5, false);
    assert.equal(got.stdout.trim(), '0', `the heir at ${first.ip} received its predecessor's flow`);
    run(['down']); // its resolver holds port 53 on its gateway: the daemon-down test binds *:53
  });

  it('leaving a group cuts a former peer\'s flow into the sandbox too (control: the flow delivers before)', async () => {
    mk('g-stay', '--group', 'g1');
    const leaver = mk('g-leave', '--group', 'g1');
    await tb.serveInSandbox(I, 'g-leave', ['hold:0.0.0.0:7100:peer']);
    // g-stay opens the flow into g-leave and prints the time of every chunk it receives.
    const client = spawn('nsenter', [`--net=/run/netns/${tb.hostNs}`, process.execPath, CLI, ...tb.flags(I), 'exec', 'g-stay', '--', 'python3', '-c', [
      'import socket,time',
      `c=socket.create_connection(('${leaver.ip}',7100),timeout=2);c.settimeout(0.2)`,
      'end=time.time()+4',
      'while time.time()<end:',
      '  try:',
      '    d=c.recv(100)',
      '    if not d: break',
      '    print("%.3f"%time.time(),flush=True)',
      '  except socket.timeout: pass',
      '  except OSError: break',
    ].join('\n')], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    client.stdout!.on('data', (d) => (out += d));
    client.stderr!.on('data', (d) => (err += d));
    const exited = new Promise((r) => client.once('exit', r));
    const times = () => out.split('\n').filter(Boolean).map(Number);
    try {
      await waitFor(() => times().length >= 5 || client.exitCode !== null, 'the peer\'s flow to deliver', 5000);
      // Counted here, in this process: lines received before the cut began were printed
      // before it, whatever either process's clock says.
      const deliveredBefore = out.split('\n').length - 1;
      const exitedBefore = client.exitCode;
      const cutAt = Date.now() / 1000;
      // policy set replaces the whole policy: no flags, no group.
      const r = tb.toastnet(I, ['policy', 'set', 'g-leave']);
      assert.equal(r.code, 0, r.stderr);
      const cutDone = Date.now() / 1000;
      assert.ok(JSON.parse(r.stdout).cut >= 1, `the flow was counted as cut: ${r.stdout}`);
      await exited; // 4 s after it connected, or when the connection ends
      assert.ok(deliveredBefore >= 5, `control: the peer's flow delivered before: ${deliveredBefore} lines before the cut at ${cutAt} (client exit ${exitedBefore}): ${out} ${err}`);
      assert.deepEqual(times().filter((t) => t > cutDone + 0.2), [], `the former peer's flow still delivered after leaving the group (cut ${cutAt}-${cutDone})`);
    } finally {
      client.kill('SIGKILL');
    }
  });

  it('macvlan: a sandbox cannot send as another by computing its MAC from its address (control: with the real MAC, which it cannot learn, it could)', async () => {
    const victim = mk('mv-victim', '--mode', 'macvlan', '--allow', `${WAN.private10}/udp`);
    const attacker = mk('mv-attacker', '--mode', 'macvlan');
    const oldStyle = ['02', '74', ...victim.ip.split('.').map((o) => Number(o).toString(16).padStart(2, '0'))].join(':');
    assert.notEqual(victim.mac, oldStyle, 'the MAC is no longer derived from the address');
    const gwLink = JSON.parse(tb.toastnet(I, ['status', '--json']).stdout).gatewayLink as string;
    // The gateway's MAC: what the attacker learns from ARP.
    const gwMac = JSON.parse(tb.sh(tb.hostNs, ['ip', '-j', 'link', 'show', gwLink]))[0].address as string;
    const frame = (src: string, marker: string, from = victim.ip, to = WAN.private10) => `send_frame('eth0', mac('${gwMac}') + mac('${src}') + b'\\x08\\x00' + ip('${from}', '${to}', 17, udp('${from}', '${to}', 5555, 5555, b'${marker}')))`;
    const ctl = await capture(tb, tb.wanNs, 17, 'MVCTL');
    py('mv-attacker', frame(victim.mac, 'MVCTL'));
    await waitFor(() => ctl.seen().length > 0, 'control: a frame with the victim\'s real MAC and address gets through');
    ctl.stop();
    const cap = await capture(tb, tb.wanNs, 17, 'MVATK');
    py('mv-attacker', frame(oldStyle, 'MVATK'));
    // Fence: a frame the attacker sends as itself to the internet host afterwards.
    py('mv-attacker', frame(attacker.mac, 'MVATKFENCE', attacker.ip, WAN.internet));
    await waitFor(() => cap.seen().some((l) => l.endsWith('FENCE')), 'the fence');
    cap.stop();
    assert.deepEqual(cap.seen().filter((l) => !l.endsWith('FENCE')), [], 'frames as the victim with its computable MAC got through');
  });

  it('a sandbox allowed 10.0.0.0/8 reaches the VPC but not other sandboxes (control: the host reaches the target)', async () => {
    const target = mk('vpc-target');
    mk('vpc-user', '--allow', '10.0.0.0/8');
    await tb.serveInSandbox(I, 'vpc-target', ['http:0.0.0.0:8000:target']);
    assert.equal(tb.sh(tb.hostNs, ['curl', '-sS', '--max-time', '2', `http://${target.ip}:8000/`]), 'target', 'control: the target serves');
    assert.equal(tb.curl(I, 'vpc-user', `http://${WAN.private10}/`).stdout, 'private10', 'the allow opens private space outside the subnet');
    assert.notEqual(tb.curl(I, 'vpc-user', `http://${target.ip}:8000/`).stdout, 'target', 'an allow entry opened another sandbox');
  });

  it('packets with IP options (source routes) from a sandbox are dropped (control: the same packet without options arrives)', async () => {
    const s = mk('opts');
    const cap = await capture(tb, tb.wanNs, 17, 'OPT');
    const send = (opts: string, marker: string) => py('opts', `send(ip('${s.ip}', '${WAN.internet}', 17, udp('${s.ip}', '${WAN.internet}', 5556, 5556, b'${marker}'), ${opts}), '${WAN.internet}')`);
    // Loose source route via the metadata address; and plain no-op options.
    send(`b'\\x83\\x07\\x04' + socket.inet_aton('${WAN.metadata}') + b'\\x00'`, 'OPTLSRR');
    send("b'\\x01\\x01\\x01\\x00'", 'OPTNOP');
    // The control, sent last, is the fence too.
    send("b''", 'OPTCTL');
    await waitFor(() => cap.seen().some((l) => l.endsWith('OPTCTL')), 'the control packet');
    cap.stop();
    const tags = new Set(cap.seen().map((x) => x.split(' ')[1]));
    assert.deepEqual([...tags], ['OPTCTL'], 'only the packet without options arrived');
  });

  it('queries spoofed from the uplink with a sandbox\'s address do not spend its DNS failure budget (control: its own refused queries do)', async () => {
    const victim = mk('dns-victim', '--domain', 'example.test');
    mk('dns-control', '--domain', 'example.test');
    tb.sh(tb.wanNs, ['ip', 'route', 'replace', '10.166.0.0/16', 'via', WAN.hostUplink]);
    const query = (name: string) => `bytes.fromhex('beef01000001000000000000') + b''.join(bytes([len(l)]) + l.encode() for l in '${name}'.split('.')) + b'\\x00\\x00\\x01\\x00\\x01'`;
    const spoof = [
      PY_PACKETS,
      // Paced under the query rate (50/s): every one is judged, and refused, as the victim's.
      `r = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)`,
      `for i in range(150): r.sendto(ip('${victim.ip}', '${GW}', 17, udp('${victim.ip}', '${GW}', 30000 + i, 53, ${query('nope.test')})), ('${GW}', 0)); time.sleep(0.025)`,
    ].join('\n');
    tb.sh(tb.wanNs, ['python3', '-c', spoof]);
    const own = (sbx: string) => tb.inSandbox(I, sbx, ['dig', '+time=2', '+tries=1', '+short', 'example.test']).stdout.trim();
    assert.equal(own('dns-victim'), WAN.internet, 'the spoofed queries exhausted the sandbox\'s failure budget');
    // Control: the same number of refused queries sent by the sandbox itself does exhaust it.
    tb.inSandbox(I, 'dns-control', ['python3', '-c', `import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\nimport time\nfor i in range(150): s.sendto(${query('nope.test')},('${GW}',53)); time.sleep(0.025)`]);
    const judged = () => (JSON.parse(tb.toastnet(I, ['stats', 'dns-control', '--json']).stdout) as { dns?: { queries: number } }).dns?.queries ?? 0;
    await waitFor(() => judged() >= 150, () => `the resolver to judge the 150 queries (${judged()} so far)`);
    assert.notEqual(own('dns-control'), WAN.internet, 'control: 150 refused queries of its own exhaust the budget');
  });

  it('with the daemon down, another service on *:53 does not answer sandboxes (control: it answers the host)', async () => {
    mk('dns-down');
    const pid = Number(tb.sh(tb.hostNs, ['cat', `${tb.dir}/${I}/run/lock.pid`]).trim());
    process.kill(pid, 'SIGKILL');
    await waitFor(() => {
      try {
        process.kill(pid, 0);
        return false;
      } catch {
        return true;
      }
    }, 'the daemon to die');
    const other = tb.background(tb.hostNs, [process.execPath, SERVERS, 'dns:0.0.0.0:53']);
    try {
      await waitFor(() => tb.try(tb.hostNs, ['dig', '+time=1', '+tries=1', '+short', `@${GW}`, 'example.test']).stdout.includes(WAN.internet), 'control: the other service answers on the gateway address', 5000, 200)
        .catch((err) => {
          throw new Error(`${err.message}; listening: ${tb.try(tb.hostNs, ['ss', '-lunp']).stdout}`);
        });
      const r = tb.inSandbox(I, 'dns-down', ['dig', '+time=1', '+tries=1', '+short', `@${GW}`, 'example.test']);
      assert.doesNotMatch(r.stdout, /203\.0\.113\.10/, 'a sandbox got an answer from a service that is not toastnet\'s resolver');
    } finally {
      other.kill('SIGKILL');
    }
  });
});
