// podman's CNI backend (Debian's podman 4.3.1, runc) as a second real client. What it adds
// over containerd: a runtime-made namespace under /run/netns (netns-<uuid>), CNI_ARGS with
// K8S_POD_NAME, its own DEL when the container stops, and a container it keeps (stop, then
// start again: DEL and ADD for the same container id).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { ChildProcess } from 'node:child_process';
import { ToastnetClient } from '../../src/api/client.js';
import { Testbed, WAN } from '../testbed/testbed.js';
import { waitFor } from '../helpers/wait.js';
import { CNI_BIN, TOASTNET_CNI } from '../helpers/cni-runtime.js';
import { buildBusyboxImage } from '../helpers/containerd.js';
import { Podman, podmanAvailable, podmanVersion } from '../helpers/podman.js';

const IMAGE = 'localhost/tnbb:latest';

describe('toastnet-cni under podman (CNI backend)', { skip: !podmanAvailable() && 'podman, runc, conmon or busybox-static missing' }, () => {
  let tb: Testbed;
  let pm: Podman;
  let cl: ToastnetClient;
  let daemon: ChildProcess;
  const I = `q${Date.now().toString(36)}`;

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
    const confDir = path.join(tb.dir, 'pm-net.d');
    const pluginDir = path.join(tb.dir, 'pm-bin');
    fs.mkdirSync(confDir);
    fs.mkdirSync(pluginDir);
    fs.symlinkSync(TOASTNET_CNI, path.join(pluginDir, 'toastnet-cni'));
    for (const p of fs.readdirSync(CNI_BIN)) fs.symlinkSync(path.join(CNI_BIN, p), path.join(pluginDir, p));
    // podman reads <name>.conflist; 1.0.0: its libcni 1.1.2 rejects 1.1.0 results.
    fs.writeFileSync(path.join(confDir, 'tnpod.conflist'), JSON.stringify({
      cniVersion: '1.0.0',
      name: 'tnpod',
      plugins: [{ type: 'toastnet-cni', runDir: path.dirname(tb.socketPath(I)), subnet: '10.166.0.0/16' }],
    }));
    pm = new Podman(tb, confDir, pluginDir);
    pm.load(buildBusyboxImage(path.join(tb.dir, 'pm-image')), IMAGE);
    process.stderr.write(`# client: ${podmanVersion()}\n`);
  });
  after(async () => {
    pm?.stop();
    await tb?.destroy();
  });

  it('a container on the network: the internet by name, the rest blocked, listed with its pod name; its end removes it', async () => {
    const probe = (url: string) => `if timeout 5 wget -qO- ${url} >/dev/null 2>&1; then echo "open ${url}"; else echo "closed ${url}"; fi`;
    const blocked = [`http://${WAN.metadata}/`, 'http://10.166.0.1:8080/', `http://${WAN.vpc}/`];
    const script = ['timeout 5 wget -qO- http://example.test/; echo', ...blocked.map(probe), 'sleep 3'].join('; ');
    const running = pm.run(['run', '--rm', '--ulimit', 'host', '--network', 'tnpod', '--dns', '10.166.0.1', '--name', 'pod1', IMAGE, 'sh', '-c', script]);
    await waitFor(async () => (await cl.list()).some((s) => s.attachment?.podName === 'pod1'), 'podman\'s container to be attached', 60_000, 100);
    const s = (await cl.list()).find((x) => x.attachment?.podName === 'pod1')!;
    assert.match(s.attachment!.netns, /^\/run\/netns\/netns-/);
    const r = await running;
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^internet$/m);
    for (const url of blocked) assert.match(r.stdout, new RegExp(`closed ${url.replace(/[.]/g, '\\.')}`), r.stdout);
    await waitFor(async () => !(await cl.list()).some((x) => x.attachment), 'podman\'s DEL to remove the attachment', 20_000);
  });

  it('a kept container stopped and started again: DEL, then ADD for the same id', async () => {
    assert.equal(pm.sync(['create', '--ulimit', 'host', '--network', 'tnpod', '--name', 'kept', IMAGE, 'sh', '-c', 'timeout 5 wget -qO- http://203.0.113.10/']).code, 0);
    for (let round = 0; round < 2; round++) {
      const r = pm.sync(['start', '-a', 'kept']);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout.trim(), 'internet');
      await waitFor(async () => !(await cl.list()).some((x) => x.attachment), 'the stopped container\'s DEL', 20_000);
    }
    assert.equal(pm.sync(['rm', 'kept']).code, 0);
  });
});
