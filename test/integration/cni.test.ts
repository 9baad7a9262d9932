// toastnet-cni driven as the spec's execution contract says a runtime drives a plugin: a
// process per call, the config on stdin, CNI_* in the environment. Namespaces are made the
// way a runtime makes them (ours are never touched but for the link), packets are sent
// from inside them, and the reference plugin `tuning` is chained after toastnet.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { ChildProcess, spawn, spawnSync } from 'node:child_process';
import { ToastnetClient } from '../../src/api/client.js';
import { SERVERS, Testbed, WAN } from '../testbed/testbed.js';
import { waitFor } from '../helpers/wait.js';
import { CNI_BIN, CniList, TOASTNET_CNI, execPlugin, execPluginAsync } from '../helpers/cni-runtime.js';

const IP = /^10\.166\.\d+\.\d+$/;

describe('toastnet-cni: the execution contract', () => {
  let tb: Testbed;
  const I = `c${Date.now().toString(36)}`;
  let cl: ToastnetClient;
  let daemon: ChildProcess | undefined;
  let conf: Record<string, unknown>;
  const made: string[] = [];

  /** A namespace as a runtime makes one (/run/netns/<run>-NAME), with a resolv.conf for `ip netns exec` from the result. */
  function runtimeNs(name: string): string {
    const ns = `${tb.run}-${name}`;
    spawnSync('ip', ['netns', 'add', ns]);
    made.push(ns);
    return `/run/netns/${ns}`;
  }
  const nsName = (p: string) => path.basename(p);
  function inNs(p: string, cmd: string[], timeoutMs = 15_000) {
    const r = spawnSync('ip', ['netns', 'exec', nsName(p), ...cmd], { encoding: 'utf8', timeout: timeoutMs });
    return { code: r.status ?? 128, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
  }
  /** What a runtime does with the result's dns: the container's resolv.conf. */
  function writeResolvConf(p: string, result: Record<string, unknown>): void {
    const dir = path.join('/etc/netns', nsName(p));
    fs.mkdirSync(dir, { recursive: true });
    const ns = ((result.dns as { nameservers: string[] }).nameservers);
    fs.writeFileSync(path.join(dir, 'resolv.conf'), ns.map((n) => `nameserver ${n}\n`).join(''));
  }
  const cni = (c: unknown, e: Parameters<typeof execPlugin>[3]) => execPlugin(tb.hostNs, TOASTNET_CNI, c, e);

  async function startDaemon(): Promise<void> {
    daemon = tb.startDaemon(I);
    let out = '';
    daemon.stderr?.on('data', (d) => (out += d));
    await waitFor(async () => {
      if (daemon!.exitCode !== null) throw new Error(`daemon exited: ${out}`);
      return cl.ping();
    }, () => `the daemon to answer: ${out}`);
  }

  before(async () => {
    tb = await Testbed.create();
    tb.flags(I); // registers the instance for cleanup
    cl = new ToastnetClient(tb.socketPath(I));
    conf = { cniVersion: '1.0.0', name: 'tnet', type: 'toastnet-cni', runDir: path.dirname(tb.socketPath(I)), subnet: '10.166.0.0/16' };
  });
  after(async () => {
    await tb?.destroy();
  });

  it('without the daemon: STATUS says 50, ADD says 11 (try again later), VERSION answers', async () => {
    const st = cni({ ...conf, cniVersion: '1.1.0' }, { command: 'STATUS' });
    assert.equal(st.code, 1);
    assert.equal(st.out?.code, 50);
    assert.match(String(st.out?.msg), /daemon is not running/);
    const add = cni(conf, { command: 'ADD', containerId: 'early', netns: runtimeNs('early'), ifname: 'eth0' });
    assert.equal(add.code, 1);
    assert.equal(add.out?.code, 11);
    assert.equal(add.out?.cniVersion, '1.0.0');
    const v = cni({ cniVersion: '1.1.0' }, { command: 'VERSION' });
    assert.equal(v.code, 0);
    assert.deepEqual(v.out?.supportedVersions, ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0']);
    await startDaemon();
    const up = cni({ ...conf, cniVersion: '1.1.0' }, { command: 'STATUS' });
    assert.equal(up.code, 0, up.raw);
    assert.equal(up.raw, '');
  });

  it('ADD attaches the runtime\'s namespace: a 1.0.0 result, internet by name through the gateway, the rest blocked', async () => {
    const nsA = runtimeNs('a');
    const nsB = runtimeNs('b');
    const a = cni(conf, { command: 'ADD', containerId: 'ctr-a', netns: nsA, ifname: 'eth0', args: 'IgnoreUnknown=1;K8S_POD_NAME=web-0;K8S_POD_NAMESPACE=team' });
    assert.equal(a.code, 0, a.raw);
    const r = a.out!;
    assert.equal(r.cniVersion, '1.0.0');
    const ifs = r.interfaces as { name: string; sandbox?: string; mac?: string }[];
    const ips = r.ips as { address: string; gateway: string; interface: number; version?: string }[];
    assert.equal(ifs[ips[0].interface].name, 'eth0');
    assert.equal(ifs[ips[0].interface].sandbox, nsA);
    assert.equal(ips[0].gateway, '10.166.0.1');
    assert.equal(ips[0].version, undefined, '1.0.0 ips have no version');
    assert.match(ips[0].address.split('/')[0], IP);
    assert.deepEqual(r.routes, [{ dst: '0.0.0.0/0', gw: '10.166.0.1' }]);
    assert.deepEqual((r.dns as { nameservers: string[] }).nameservers, ['10.166.0.1']);
    writeResolvConf(nsA, r);
    const b = cni(conf, { command: 'ADD', containerId: 'ctr-b', netns: nsB, ifname: 'eth0' });
    assert.equal(b.code, 0, b.raw);
    const ipB = (b.out!.ips as { address: string }[])[0].address.split('/')[0];
    tb.background(nsName(nsB), [process.execPath, SERVERS, `http:${ipB}:80:ctr-b`]);

    const inside = JSON.parse(inNs(nsA, ['ip', '-j', 'addr', 'show', 'eth0']).stdout)[0];
    assert.equal(inside.addr_info.find((x: { family: string }) => x.family === 'inet').local, ips[0].address.split('/')[0]);
    assert.equal(inside.address, ifs[ips[0].interface].mac);
    // The internet by name: the container's resolver is the gateway (its policy applies).
    assert.equal(inNs(nsA, ['curl', '-sS', '--max-time', '5', 'http://example.test/']).stdout, 'internet');
    assert.match(inNs(nsA, ['dig', '+short', '+time=2', '+tries=1', 'example.test']).stdout, /203\.0\.113\.10/);
    for (const url of [`http://${WAN.metadata}/`, `http://${WAN.vpc}/`, `http://${WAN.private10}/`, 'http://10.166.0.1:8080/', `http://${WAN.hostUplink}:8080/`, `http://${ipB}/`]) {
      assert.notEqual(inNs(nsA, ['curl', '-sS', '--max-time', '3', url]).code, 0, `${url} must be blocked`);
    }
    // ls, inspect, stats show it with the runtime's ids.
    const ls = JSON.parse(tb.toastnet(I, ['ls', '--json']).stdout) as { name: string; netns: string; attachment?: Record<string, string> }[];
    const mine = ls.find((s) => s.attachment?.containerId === 'ctr-a')!;
    assert.ok(mine, JSON.stringify(ls));
    assert.equal(mine.netns, nsA);
    assert.deepEqual([mine.attachment!.ifname, mine.attachment!.podName, mine.attachment!.podNamespace, mine.attachment!.network], ['eth0', 'web-0', 'team', 'tnet']);
    assert.deepEqual(tb.toastnet(I, ['ls', '-q', '--filter', 'pod=team/*']).stdout.trim(), mine.name);
    const text = tb.toastnet(I, ['ls']).stdout;
    assert.match(text, /ctr-a/);
    assert.match(text, /ctr-a eth0 \(pod team\/web-0\)/);
    const stats = JSON.parse(tb.toastnet(I, ['stats', mine.name, '--json']).stdout);
    assert.ok(stats.sent.packets > 0 && stats.blocked.packets > 0, JSON.stringify(stats));
    const ev = await cl.events({ sandbox: mine.name });
    assert.ok(ev.some((e) => e.dst === WAN.metadata), 'denials are attributed to the attachment');
  });

  it('CHECK validates the live state against prevResult; DEL removes the link only, twice, and with the namespace gone', () => {
    const ns = runtimeNs('chk');
    const e = { containerId: 'ctr-chk', netns: ns, ifname: 'net1' };
    const add = cni({ ...conf, cniVersion: '0.4.0' }, { command: 'ADD', ...e });
    assert.equal(add.code, 0, add.raw);
    assert.equal((add.out!.ips as { version: string }[])[0].version, '4', '0.4.0 ips carry a version');
    const ok = cni({ ...conf, cniVersion: '0.4.0', prevResult: add.out }, { command: 'CHECK', ...e });
    assert.equal(ok.code, 0, ok.raw);
    const addr = (add.out!.ips as { address: string }[])[0].address;
    inNs(ns, ['ip', 'addr', 'del', addr, 'dev', 'net1']);
    const bad = cni({ ...conf, cniVersion: '0.4.0', prevResult: add.out }, { command: 'CHECK', ...e });
    assert.equal(bad.code, 1);
    assert.equal(bad.out?.code, 100);
    assert.match(String(bad.out?.msg), /lacks/);
    const unknown = cni({ ...conf, cniVersion: '0.4.0', prevResult: add.out }, { command: 'CHECK', ...e, containerId: 'nobody' });
    assert.equal(unknown.out?.code, 3);
    // A process of the runtime's in the namespace: toastnet must not end it.
    const sleeper = spawn('ip', ['netns', 'exec', nsName(ns), 'sleep', '300'], { stdio: 'ignore' });
    try {
      for (let i = 0; i < 2; i++) {
        const del = cni({ ...conf, cniVersion: '0.4.0', prevResult: add.out }, { command: 'DEL', ...e });
        assert.equal(del.code, 0, del.raw);
      }
      assert.ok(fs.existsSync(ns), 'the runtime\'s namespace stays');
      assert.equal(inNs(ns, ['ip', 'link', 'show', 'net1']).code, 1, 'the link is gone');
      assert.equal(sleeper.exitCode, null, 'the runtime\'s process lives');
      assert.ok(!JSON.parse(tb.toastnet(I, ['ls', '--json']).stdout).some((s: { attachment?: { containerId: string } }) => s.attachment?.containerId === 'ctr-chk'));
    } finally {
      sleeper.kill('SIGKILL');
    }
    // DEL after the runtime removed the namespace, and DEL of what was never added.
    const ns2 = runtimeNs('gone');
    assert.equal(cni(conf, { command: 'ADD', containerId: 'ctr-gone', netns: ns2, ifname: 'eth0' }).code, 0);
    spawnSync('ip', ['netns', 'del', nsName(ns2)]);
    assert.equal(cni(conf, { command: 'DEL', containerId: 'ctr-gone', netns: ns2, ifname: 'eth0' }).code, 0);
    assert.equal(cni(conf, { command: 'DEL', containerId: 'ctr-gone', netns: '', ifname: 'eth0' }).code, 0);
    assert.equal(cni(conf, { command: 'DEL', containerId: 'never', ifname: 'eth0' }).code, 0);
  });

  it('ADD right after DEL in the same namespace and interface (the old link may still be going)', async () => {
    const ns = runtimeNs('again');
    const e = { containerId: 'ctr-again', netns: ns, ifname: 'eth0' };
    for (let i = 0; i < 3; i++) {
      const a = cni(conf, { command: 'ADD', ...e });
      assert.equal(a.code, 0, a.raw);
      assert.equal(inNs(ns, ['ip', 'link', 'show', 'eth0']).code, 0);
      assert.equal(cni(conf, { command: 'DEL', ...e }).code, 0);
    }
    await waitFor(() => inNs(ns, ['ip', 'link', 'show', 'eth0']).code !== 0, 'the last link to go');
  });

  it('chains with the reference plugin tuning after it (ADD, CHECK, DEL through the list)', { skip: !fs.existsSync(path.join(CNI_BIN, 'tuning')) }, () => {
    const ns = runtimeNs('chain');
    const list = new CniList(tb.hostNs, { cniVersion: '1.0.0', name: 'tnet', plugins: [{ type: 'toastnet-cni', runDir: conf.runDir }, { type: 'tuning', mtu: 1400, sysctl: { 'net.ipv4.conf.eth0.rp_filter': '2' } }] });
    const e = { containerId: 'ctr-chain', netns: ns, ifname: 'eth0' };
    const { result, failed } = list.add(e);
    assert.ok(result, failed?.raw);
    assert.equal(JSON.parse(inNs(ns, ['ip', '-j', 'link', 'show', 'eth0']).stdout)[0].mtu, 1400, 'tuning worked on toastnet\'s interface');
    for (const a of list.run('CHECK', e, result)) assert.equal(a.code, 0, a.raw);
    for (const a of list.run('DEL', e, result)) assert.equal(a.code, 0, a.raw);
    assert.equal(inNs(ns, ['ip', 'link', 'show', 'eth0']).code, 1);
  });

  it('bandwidth (CNI units) becomes the attachment\'s limits; a 1.1.0 config gets a 1.1.0 result', async () => {
    const ns = runtimeNs('bw');
    const c = { ...conf, cniVersion: '1.1.0', capabilities: { bandwidth: true }, runtimeConfig: { bandwidth: { egressRate: 8_000_000, egressBurst: 800_000, ingressRate: 16_000_000, ingressBurst: 1_600_000 } } };
    const add = cni(c, { command: 'ADD', containerId: 'ctr-bw', netns: ns, ifname: 'eth0' });
    assert.equal(add.code, 0, add.raw);
    assert.equal(add.out!.cniVersion, '1.1.0');
    const s = (await cl.list()).find((x) => x.attachment?.containerId === 'ctr-bw')!;
    const st = await cl.stats(s.name);
    assert.deepEqual([st.limits.egressRate, st.limits.egressBurst, st.limits.ingressRate, st.limits.ingressBurst], [1_000_000, 100_000, 2_000_000, 200_000]);
    assert.equal(cni(c, { command: 'DEL', containerId: 'ctr-bw', netns: ns, ifname: 'eth0' }).code, 0);
  });

  it('portMappings publish the container\'s port to the outside; the pod annotation toastnet.dev/policy applies; DEL closes both', async () => {
    const ns = runtimeNs('pub');
    const c = {
      ...conf,
      capabilities: { portMappings: true, 'io.kubernetes.cri.pod-annotations': true },
      runtimeConfig: {
        portMappings: [{ hostPort: 18081, containerPort: 8080, protocol: 'tcp', hostIP: '' }, { hostPort: 18081, containerPort: 8080, protocol: 'tcp', hostIP: '::' }],
        'io.kubernetes.cri.pod-annotations': { 'toastnet.dev/policy': JSON.stringify({ egress: { internet: false } }) },
      },
    };
    const add = cni(c, { command: 'ADD', containerId: 'ctr-pub', netns: ns, ifname: 'eth0' });
    assert.equal(add.code, 0, add.raw);
    const ip = (add.out!.ips as { address: string }[])[0].address.split('/')[0];
    tb.background(nsName(ns), [process.execPath, SERVERS, `http:${ip}:8080:ctr-pub`]);
    const fromWan = () => tb.try(tb.wanNs, ['curl', '-sS', '--max-time', '3', `http://${WAN.hostUplink}:18081/`]).stdout;
    await waitFor(() => fromWan() === 'ctr-pub', 'the published port from the wan');
    assert.notEqual(inNs(ns, ['curl', '-sS', '--max-time', '3', `http://${WAN.internet}/`]).code, 0, 'the annotation closed the internet');
    const s = (await cl.list()).find((x) => x.attachment?.containerId === 'ctr-pub')!;
    assert.deepEqual(s.publish, [{ hostPort: 18081, containerPort: 8080, protocol: 'tcp' }]);
    assert.equal(cni(c, { command: 'DEL', containerId: 'ctr-pub', netns: ns, ifname: 'eth0' }).code, 0);
    assert.equal(fromWan(), '', 'the port is closed with the attachment');
  });

  it('GC with cni.dev/valid-attachments drops the attachment not listed, and only this network\'s', async () => {
    const ids = ['g1', 'g2', 'g3'];
    for (const id of ids) assert.equal(cni(conf, { command: 'ADD', containerId: id, netns: runtimeNs(id), ifname: 'eth0' }).code, 0);
    const other = { ...conf, name: 'othernet' };
    assert.equal(cni(other, { command: 'ADD', containerId: 'g9', netns: runtimeNs('g9'), ifname: 'eth0' }).code, 0);
    const gc = cni({ ...conf, cniVersion: '1.1.0', 'cni.dev/valid-attachments': [{ containerID: 'g1', ifname: 'eth0' }, { containerID: 'g3', ifname: 'eth0' }, { containerID: 'ctr-a', ifname: 'eth0' }, { containerID: 'ctr-b', ifname: 'eth0' }] }, { command: 'GC' });
    assert.equal(gc.code, 0, gc.raw);
    const left = (await cl.list()).map((s) => s.attachment?.containerId).filter(Boolean);
    assert.ok(left.includes('g1') && left.includes('g3') && left.includes('g9'), left.join());
    assert.ok(!left.includes('g2'), 'g2 was not listed');
    assert.equal(inNs(`/run/netns/${tb.run}-g2`, ['ip', 'link', 'show', 'eth0']).code, 1);
    for (const id of ['g1', 'g3']) assert.equal(cni(conf, { command: 'DEL', containerId: id, ifname: 'eth0' }).code, 0);
    assert.equal(cni(other, { command: 'DEL', containerId: 'g9', ifname: 'eth0' }).code, 0);
  });

  it('8 concurrent ADDs (and DELs) as separate processes succeed with distinct addresses', async () => {
    const nss = Array.from({ length: 8 }, (_, i) => runtimeNs(`p${i}`));
    const adds = await Promise.all(nss.map((ns, i) => execPluginAsync(tb.hostNs, TOASTNET_CNI, conf, { command: 'ADD', containerId: `par${i}`, netns: ns, ifname: 'eth0' })));
    for (const a of adds) assert.equal(a.code, 0, a.raw);
    const addrs = new Set(adds.map((a) => (a.out!.ips as { address: string }[])[0].address));
    assert.equal(addrs.size, 8);
    const dels = await Promise.all(nss.map((ns, i) => execPluginAsync(tb.hostNs, TOASTNET_CNI, conf, { command: 'DEL', containerId: `par${i}`, netns: ns, ifname: 'eth0' })));
    for (const d of dels) assert.equal(d.code, 0, d.raw);
    const latency = (await cl.status()).latency ?? {};
    assert.ok((latency.cni_add?.count ?? 0) >= 8 && (latency.cni_del?.count ?? 0) >= 8, JSON.stringify(latency));
  });

  it('bad input: one clear error in the spec\'s form, nothing half-made', async () => {
    const before = (await cl.list()).length;
    const ns = runtimeNs('bad');
    const wrongSubnet = cni({ ...conf, subnet: '10.99.0.0/16' }, { command: 'ADD', containerId: 'bad', netns: ns, ifname: 'eth0' });
    assert.equal(wrongSubnet.out?.code, 7);
    assert.match(String(wrongSubnet.out?.msg), /subnet/);
    const badPolicy = cni({ ...conf, policy: { egress: { internet: 'yes' } } }, { command: 'ADD', containerId: 'bad', netns: ns, ifname: 'eth0' });
    assert.equal(badPolicy.out?.code, 7);
    const noNs = cni(conf, { command: 'ADD', containerId: 'bad', netns: '/run/netns/does-not-exist', ifname: 'eth0' });
    assert.equal(noNs.out?.code, 4);
    const version = cni({ ...conf, cniVersion: '9.9.9' }, { command: 'ADD', containerId: 'bad', netns: ns, ifname: 'eth0' });
    assert.equal(version.out?.code, 1);
    const garbage = execPlugin(tb.hostNs, TOASTNET_CNI, 'not json', { command: 'ADD', containerId: 'bad', netns: ns, ifname: 'eth0' });
    assert.equal(garbage.out?.code, 6);
    // An ifname already in the namespace.
    assert.equal(inNs(ns, ['ip', 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'other0']).code, 0);
    const taken = cni(conf, { command: 'ADD', containerId: 'bad', netns: ns, ifname: 'eth0' });
    assert.equal(taken.code, 1);
    assert.match(String(taken.out?.msg), /already has an interface eth0/);
    assert.equal((await cl.list()).length, before, 'no sandbox left behind');
  });

  it('the daemon killed: STATUS 50, ADD 11, attached containers keep their network; restarted: they are still attached', async () => {
    const ns = runtimeNs('crash');
    const e = { containerId: 'ctr-crash', netns: ns, ifname: 'eth0' };
    const add = cni(conf, { command: 'ADD', ...e });
    assert.equal(add.code, 0, add.raw);
    writeResolvConf(ns, add.out!);
    daemon!.kill('SIGKILL');
    await waitFor(async () => !(await cl.ping()), 'the daemon to be gone');
    assert.equal(cni({ ...conf, cniVersion: '1.1.0' }, { command: 'STATUS' }).out?.code, 50);
    assert.equal(cni(conf, { command: 'ADD', containerId: 'ctr-crash2', netns: runtimeNs('crash2'), ifname: 'eth0' }).out?.code, 11);
    assert.equal(inNs(ns, ['curl', '-sS', '--max-time', '5', `http://${WAN.internet}/`]).stdout, 'internet', 'forwarding needs no daemon');
    await startDaemon();
    assert.equal(cni({ ...conf, cniVersion: '1.1.0' }, { command: 'STATUS' }).code, 0);
    assert.ok((await cl.list()).some((x) => x.attachment?.containerId === 'ctr-crash'), 'the restart kept the attachment (its namespace lives)');
    assert.equal(cni({ ...conf, prevResult: add.out }, { command: 'CHECK', ...e }).code, 0);
    assert.equal(inNs(ns, ['curl', '-sS', '--max-time', '5', 'http://example.test/']).stdout, 'internet', 'DNS through the restarted daemon');
    assert.equal(cni(conf, { command: 'DEL', ...e }).code, 0);
  });

  it('rm of an attached sandbox and the daemon\'s gc leave the runtime\'s namespace and processes alone', async () => {
    const ns = runtimeNs('rm');
    const add = cni(conf, { command: 'ADD', containerId: 'ctr-rm', netns: ns, ifname: 'eth0' });
    assert.equal(add.code, 0, add.raw);
    const s = (await cl.list()).find((x) => x.attachment?.containerId === 'ctr-rm')!;
    const sleeper = spawn('ip', ['netns', 'exec', nsName(ns), 'sleep', '300'], { stdio: 'ignore' });
    try {
      await cl.gc();
      assert.ok((await cl.list()).some((x) => x.name === s.name), 'gc keeps a live attachment');
      assert.equal(tb.toastnet(I, ['rm', s.name]).code, 0);
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(sleeper.exitCode, null);
      assert.ok(fs.existsSync(ns));
      assert.equal(inNs(ns, ['ip', 'link', 'show', 'eth0']).code, 1);
      // A container gone without DEL: gc takes what was toastnet's.
      assert.equal(cni(conf, { command: 'ADD', containerId: 'ctr-rm2', netns: ns, ifname: 'eth0' }).code, 0);
      sleeper.kill('SIGKILL');
      spawnSync('ip', ['netns', 'del', nsName(ns)]);
      await waitFor(async () => {
        await cl.gc();
        return !(await cl.list()).some((x) => x.attachment?.containerId === 'ctr-rm2');
      }, 'gc to drop the attachment whose namespace went');
    } finally {
      sleeper.kill('SIGKILL');
    }
  });
});
