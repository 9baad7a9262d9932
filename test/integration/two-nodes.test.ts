// Two Kubernetes nodes, simulated: two host namespaces, each with its own uplink to the
// testbed's internet, set up the way deploy/kubernetes does it: the installer
// (install-cni.sh) writes each node's conflist, plugin and daemon config with the node's pod
// CIDR; the daemon runs from that config with its default paths; pods are namespaces a
// runtime made, attached by the installed plugin executed as a runtime executes it. Pods on
// both nodes reach the internet by name through their node's gateway; neither node's pods
// reach the other's, nor the other node's services.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { ChildProcess, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { ToastnetClient } from '../../src/api/client.js';
import { CLI, SERVERS, Testbed, WAN } from '../testbed/testbed.js';
import { waitFor } from '../helpers/wait.js';
import { CNI_BIN, CniList } from '../helpers/cni-runtime.js';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const INSTALLER = path.join(repo, 'deploy/kubernetes/install-cni.sh');
const PLUGIN = path.join(repo, 'dist/bin/toastnet-cni');

interface Node {
  name: string;
  ns: string;
  instance: string;
  podCidr: string;
  uplink: string;
  dirs: { bin: string; conf: string; etc: string; state: string };
  daemon?: ChildProcess;
  list?: CniList;
}

interface Pod { node: Node; id: string; ns: string; ip?: string; gateway?: string; result?: Record<string, unknown> }

describe('two nodes, each its own toastnet', () => {
  let tb: Testbed;
  const stamp = Date.now().toString(36);
  const nodes: Node[] = [];
  const pods: Pod[] = [];
  const sh = (ns: string, cmd: string[], timeoutMs = 15_000) => {
    const r = spawnSync('nsenter', [`--net=/run/netns/${ns}`, ...cmd], { encoding: 'utf8', timeout: timeoutMs });
    return { code: r.status ?? 128, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
  };

  function makeNode(name: string, podCidr: string, uplink: string): Node {
    const dir = path.join(tb.dir, `node-${name}`);
    const n: Node = {
      name, podCidr, uplink,
      ns: name === 'a' ? tb.hostNs : `${tb.run}-node${name}`,
      instance: `n${name}${stamp}`,
      dirs: { bin: path.join(dir, 'opt/cni/bin'), conf: path.join(dir, 'etc/cni/net.d'), etc: path.join(dir, 'etc/toastnet'), state: path.join(dir, 'state') },
    };
    for (const d of Object.values(n.dirs)) fs.mkdirSync(d, { recursive: true });
    tb.instances.add(n.instance); // its sandbox namespaces are cleaned with the testbed
    return n;
  }

  /** Node b: a second host namespace on its own link to the wan, on a private range as cluster nodes are (172.16.9.0/24). */
  function wireNodeB(n: Node): void {
    spawnSync('ip', ['netns', 'add', n.ns]);
    const link = `${tb.run}b`;
    assert.equal(spawnSync('ip', ['link', 'add', link, 'netns', n.ns, 'type', 'veth', 'peer', 'name', 'wanb', 'netns', tb.wanNs]).status, 0);
    for (const cmd of [['ip', 'link', 'set', link, 'name', 'up0'], ['ip', 'addr', 'add', `${n.uplink}/24`, 'dev', 'up0'], ['ip', 'link', 'set', 'up0', 'up'], ['ip', 'link', 'set', 'lo', 'up'], ['ip', 'route', 'add', 'default', 'via', '172.16.9.1']]) {
      assert.equal(sh(n.ns, cmd).code, 0, cmd.join(' '));
    }
    // The wan routes between the nodes, as a cluster's network does (in the testbed's own namespace).
    for (const cmd of [['ip', 'addr', 'add', '172.16.9.1/24', 'dev', 'wanb'], ['ip', 'link', 'set', 'wanb', 'up'], ['sysctl', '-qw', 'net.ipv4.ip_forward=1']]) assert.equal(sh(tb.wanNs, cmd).code, 0);
  }

  /** What the DaemonSet's init container does on the node. */
  function install(n: Node): void {
    const r = spawnSync('sh', [INSTALLER], {
      encoding: 'utf8',
      env: { PATH: process.env.PATH, NODE_NAME: `node-${n.name}`, TOASTNET_INSTANCE: n.instance, TOASTNET_SUBNET: n.podCidr, TOASTNET_PLUGIN: PLUGIN, CNI_BIN_DIR: n.dirs.bin, CNI_CONF_DIR: n.dirs.conf, TOASTNET_ETC_DIR: n.dirs.etc },
    });
    assert.equal(r.status, 0, r.stderr);
    const conflist = JSON.parse(fs.readFileSync(path.join(n.dirs.conf, '10-toastnet.conflist'), 'utf8'));
    // The runtime runs the plugin it finds in the node's plugin directory: the installed copy.
    n.list = new CniList(n.ns, conflist, (type) => (type === 'toastnet-cni' ? path.join(n.dirs.bin, type) : path.join(CNI_BIN, type)));
  }

  /** What the DaemonSet's daemon container runs, with the config the installer wrote and the default run directory. */
  async function startDaemon(n: Node): Promise<void> {
    n.daemon = tb.background(n.ns, [process.execPath, CLI, '--config', path.join(n.dirs.etc, `${n.instance}.json`), '--state-dir', n.dirs.state, '--dns', WAN.dns, 'daemon']);
    let out = '';
    n.daemon.stderr?.on('data', (d) => (out += d));
    n.daemon.stdout?.resume(); // its log: a pipe nobody reads would block the daemon's writes
    const cl = new ToastnetClient(`/run/toastnet/${n.instance}/toastnet.sock`);
    await waitFor(async () => {
      if (n.daemon!.exitCode !== null) throw new Error(`daemon of node ${n.name} exited: ${out}`);
      return cl.ping();
    }, () => `node ${n.name}'s daemon to answer: ${out}`);
  }

  function addPod(n: Node, name: string): Pod {
    const ns = `${tb.run}-pod${n.name}${name}`;
    assert.equal(spawnSync('ip', ['netns', 'add', ns]).status, 0);
    const pod: Pod = { node: n, id: `${n.name}-${name}-${stamp}`, ns };
    pods.push(pod);
    const r = n.list!.add({ containerId: pod.id, netns: `/run/netns/${ns}`, ifname: 'eth0', args: `IgnoreUnknown=1;K8S_POD_NAMESPACE=sandboxes;K8S_POD_NAME=${name}` });
    assert.ok(r.result, `ADD on node ${n.name}: ${r.failed?.raw} ${r.failed?.stderr}`);
    pod.result = r.result;
    const ip = (r.result.ips as { address: string; gateway: string }[])[0];
    pod.ip = ip.address.split('/')[0];
    pod.gateway = ip.gateway;
    return pod;
  }

  before(async () => {
    tb = await Testbed.create({ hostService: false });
    nodes.push(makeNode('a', '10.244.1.0/24', WAN.hostUplink), makeNode('b', '10.244.2.0/24', '172.16.9.2'));
    wireNodeB(nodes[1]);
    // Each node's pod CIDR routed to the node, as a cluster's routed pod network does: only
    // toastnet stands between a pod and the other node's pods.
    for (const n of nodes) assert.equal(sh(tb.wanNs, ['ip', 'route', 'add', n.podCidr, 'via', n.uplink]).code, 0);
    for (const n of nodes) {
      install(n);
      await startDaemon(n);
    }
  });
  after(async () => {
    for (const p of pods) {
      p.node.list?.run('DEL', { containerId: p.id, netns: `/run/netns/${p.ns}`, ifname: 'eth0' }, p.result);
      spawnSync('ip', ['netns', 'del', p.ns]);
    }
    for (const n of nodes) {
      n.daemon?.kill('SIGKILL');
      if (n.name !== 'a') spawnSync('ip', ['netns', 'del', n.ns]);
      fs.rmSync(`/run/toastnet/${n.instance}`, { recursive: true, force: true });
    }
    await tb?.destroy();
  });

  it('pods on both nodes get addresses from their node\'s pod CIDR and reach the internet by name', () => {
    for (const n of nodes) {
      const pod = addPod(n, 'web');
      assert.ok(pod.ip!.startsWith(n.podCidr.split('.').slice(0, 3).join('.') + '.'), `${pod.ip} in ${n.podCidr}`);
      const dig = sh(pod.ns, ['dig', '+short', '+tries=2', '+time=2', `@${pod.gateway}`, 'example.test']);
      assert.equal(dig.stdout.trim(), WAN.internet, `node ${n.name}: DNS through its gateway: ${dig.stderr}`);
      const curl = sh(pod.ns, ['curl', '-sS', '--max-time', '5', `http://${WAN.internet}/`]);
      assert.equal(curl.stdout.trim(), 'internet', `node ${n.name}: ${curl.stderr}`);
      // The node's own daemon knows the pod by its runtime's names.
      const ls = JSON.parse(spawnSync('nsenter', [`--net=/run/netns/${n.ns}`, process.execPath, CLI, '--instance', n.instance, '--state-dir', n.dirs.state, 'ls', '--json'], { encoding: 'utf8' }).stdout);
      assert.equal(ls.length, 1);
    }
  });

  it('neither node\'s pods reach the other\'s pods, or the other node', async () => {
    const [a, b] = nodes.map((n) => pods.find((p) => p.node === n)!);
    // A server in each pod, which its own node reaches (the control).
    for (const p of [a, b]) {
      tb.background(p.ns, [process.execPath, SERVERS, `http:0.0.0.0:8080:pod-${p.node.name}`]);
      await waitFor(() => sh(p.node.ns, ['curl', '-sS', '--max-time', '2', `http://${p.ip}:8080/`]).stdout.trim() === `pod-${p.node.name}`, `pod ${p.node.name}'s server`);
    }
    for (const [from, to] of [[a, b], [b, a]]) {
      const r = sh(from.ns, ['curl', '-sS', '--max-time', '3', `http://${to.ip}:8080/`]);
      assert.notEqual(r.stdout.trim(), `pod-${to.node.name}`, `pod on ${from.node.name} reached the pod on ${to.node.name}`);
    }
    // Nor the other node: a service on node b's (private) address, which the network reaches.
    const nodeB = nodes[1];
    tb.background(nodeB.ns, [process.execPath, SERVERS, 'http:0.0.0.0:9090:node-b']);
    await waitFor(() => sh(nodes[0].ns, ['curl', '-sS', '--max-time', '2', `http://${nodeB.uplink}:9090/`]).stdout.trim() === 'node-b', 'node a itself to reach node b\'s service');
    const r = sh(a.ns, ['curl', '-sS', '--max-time', '3', `http://${nodeB.uplink}:9090/`]);
    assert.equal(r.stdout.trim(), '', 'the pod on node a reached node b');
  });

  it('the runtime\'s DEL on each node removes its pod\'s attachment', () => {
    for (const p of pods) {
      const del = p.node.list!.run('DEL', { containerId: p.id, netns: `/run/netns/${p.ns}`, ifname: 'eth0' }, p.result);
      assert.ok(del.every((x) => x.code === 0), JSON.stringify(del));
      const ls = JSON.parse(spawnSync('nsenter', [`--net=/run/netns/${p.node.ns}`, process.execPath, CLI, '--instance', p.node.instance, '--state-dir', p.node.dirs.state, 'ls', '--json'], { encoding: 'utf8' }).stdout);
      assert.deepEqual(ls, []);
      assert.equal(sh(p.ns, ['ip', '-o', 'link', 'show', 'eth0']).code, 1, 'eth0 gone from the pod');
    }
  });
});
