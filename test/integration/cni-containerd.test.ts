// A real CNI client nobody here wrote: containerd's `ctr run --cni` (Debian's containerd and
// runc) runs a busybox container on a toastnet network. Packets from inside the container:
// the internet by name through the gateway's resolver, metadata, the host, private space and
// another sandbox blocked; ls/stats show the container while it runs; the runtime's DEL at
// its end removes everything toastnet made for it.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { ChildProcess } from 'node:child_process';
import { ToastnetClient } from '../../src/api/client.js';
import { linkPrefix } from '../../src/core/names.js';
import { Testbed, WAN } from '../testbed/testbed.js';
import { waitFor } from '../helpers/wait.js';
import { CNI_BIN, TOASTNET_CNI } from '../helpers/cni-runtime.js';
import { Containerd, clientVersions, containerdAvailable } from '../helpers/containerd.js';

describe('toastnet-cni under containerd (ctr run --cni)', { skip: !containerdAvailable() && 'containerd, runc or busybox-static missing (scripts/install-deps.sh installs them)' }, () => {
  let tb: Testbed;
  let ctr: Containerd;
  let cl: ToastnetClient;
  let daemon: ChildProcess;
  const I = `k${Date.now().toString(36)}`;
  let confDir: string;
  let pluginDir: string;

  before(async () => {
    tb = await Testbed.create();
    cl = new ToastnetClient(tb.socketPath(I));
    daemon = tb.startDaemon(I);
    let out = '';
    daemon.stderr?.on('data', (d) => (out += d));
    await waitFor(async () => {
      if (daemon.exitCode !== null) throw new Error(`daemon exited: ${out}`);
      return cl.ping();
    }, () => `the daemon: ${out}`);
    confDir = path.join(tb.dir, 'net.d');
    pluginDir = path.join(tb.dir, 'cni-bin');
    fs.mkdirSync(confDir);
    fs.mkdirSync(pluginDir);
    // The plugin linked into the runtime's plugin directory, as an operator installs it.
    fs.symlinkSync(TOASTNET_CNI, path.join(pluginDir, 'toastnet-cni'));
    for (const p of fs.readdirSync(CNI_BIN)) fs.symlinkSync(path.join(CNI_BIN, p), path.join(pluginDir, p));
    fs.writeFileSync(path.join(confDir, '10-toastnet.conflist'), JSON.stringify({
      cniVersion: '1.0.0',
      name: 'toastnet',
      plugins: [{ type: 'toastnet-cni', runDir: path.dirname(tb.socketPath(I)), subnet: '10.166.0.0/16', policy: { limits: { egressRate: '80mbit' } } }],
    }));
    ctr = new Containerd(tb);
    await ctr.start();
    process.stderr.write(`# client: ${clientVersions()}\n`);
  });
  after(async () => {
    ctr?.stop();
    await tb?.destroy();
  });

  it('a container reaches the internet by name, nothing else; ls and stats show it; its end removes everything', async () => {
    const other = await cl.create({ name: 'neighbour' });
    await tb.serveInSandbox(I, 'neighbour', [`http:${other.ip}:80:neighbour`]);
    const probe = (url: string) => `if timeout 5 wget -qO- ${url} >/dev/null 2>&1; then echo "open ${url}"; else echo "closed ${url}"; fi`;
    const script = [
      'ip -o -4 addr show eth0',
      'nslookup example.test',
      'timeout 5 wget -qO- http://example.test/; echo',
      ...[`http://${WAN.metadata}/`, 'http://10.166.0.1:8080/', `http://${WAN.hostUplink}:8080/`, `http://${WAN.vpc}/`, `http://${WAN.private10}/`, `http://${other.ip}/`].map(probe),
      'echo ready; sleep 4',
    ].join('; ');
    const running = ctr.run(confDir, pluginDir, 'web1', ['sh', '-c', script]);
    // While it runs: toastnet lists it under the runtime's container id, and counts it.
    let name = '';
    await waitFor(async () => {
      const s = (await cl.list()).find((x) => x.attachment?.containerId === ctr.containerId('web1'));
      if (s) name = s.name;
      return s !== undefined && (await cl.stats(s.name)).sent.packets > 0;
    }, 'the container to be listed and to send', 30_000, 100);
    const listed = (await cl.list()).find((x) => x.name === name)!;
    assert.match(listed.attachment!.netns, /^\/proc\/\d+\/ns\/net$/);
    assert.equal(listed.attachment!.ifname, 'eth0');
    const st = await cl.stats(name);
    assert.equal(st.limits.egressRate, 10_000_000, 'the network config\'s policy applies');
    const r = await running;
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`inet ${listed.ip.replace(/\./g, '\\.')}/16`));
    assert.match(r.stdout, /Address:?\s+203\.0\.113\.10/, 'the name resolved through the gateway');
    assert.match(r.stdout, /^internet$/m);
    for (const url of [`http://${WAN.metadata}/`, 'http://10.166.0.1:8080/', `http://${WAN.hostUplink}:8080/`, `http://${WAN.vpc}/`, `http://${WAN.private10}/`, `http://${other.ip}/`]) {
      assert.match(r.stdout, new RegExp(`closed ${url.replace(/[.]/g, '\\.')}`), `${url} must be blocked:\n${r.stdout}`);
    }
    const ev = await cl.events({ sandbox: name });
    assert.ok(ev.some((e) => e.dst === WAN.metadata), 'the metadata attempt is an event of the container');
    // ctr's DEL at the container's end (CNI_NETNS empty by then): nothing of it is left.
    assert.ok(!(await cl.list()).some((x) => x.attachment), 'its sandbox is gone');
    const links = tb.sh(tb.hostNs, ['ip', '-o', 'link']).split('\n').filter((l) => l.includes(`${linkPrefix(I)}`));
    const hostLink = listed.hostLink!;
    assert.ok(!links.some((l) => l.includes(`${hostLink}@`) || l.includes(`${hostLink}:`)), `host link ${hostLink} is gone`);
    assert.ok(!tb.sh(tb.hostNs, ['ip', 'route']).includes(`${listed.ip} `), 'its route is gone');
    assert.equal((await cl.status()).sandboxes, 1, 'only the neighbour is left');
  });

  it('containers one after another and at once, without errors', async () => {
    const runs = await Promise.all(['a1', 'a2', 'a3', 'a4'].map((id) => ctr.run(confDir, pluginDir, id, ['sh', '-c', 'timeout 5 wget -qO- http://example.test/'])));
    for (const r of runs) {
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, 'internet');
    }
    assert.ok(!(await cl.list()).some((x) => x.attachment));
  });
});
