// The Kubernetes deployment (deploy/kubernetes/) checked against the code that runs in it:
// every volume mounted, the paths the daemon and the plugin use backed by the node's own
// paths, images pinned, and the installer's files read by what reads them (the daemon's
// config loader; the conflist's plugin entry).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';
import { loadConfig } from '../../src/config/load.js';
import { socketPath } from '../../src/daemon/run.js';
import { NETNS_RUN_DIR } from '../../src/kernel/netns.js';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const MANIFEST = path.join(repo, 'deploy/kubernetes/toastnet.yaml');
const INSTALLER = path.join(repo, 'deploy/kubernetes/install-cni.sh');
const DOCKERFILE = path.join(repo, 'deploy/container/Dockerfile');

interface Mount { name: string; mountPath: string; mountPropagation?: string; readOnly?: boolean }
interface Container { name: string; image: string; command?: string[]; env?: { name: string; value?: string }[]; volumeMounts?: Mount[] }
interface Volume { name: string; hostPath?: { path: string } }
interface PodSpec { hostNetwork?: boolean; hostPID?: boolean; serviceAccountName?: string; initContainers?: Container[]; containers: Container[]; volumes?: Volume[] }

// eslint-disable-next-line @typescript-eslint/no-explicit-any
const docs = (): any[] => parseAllDocuments(fs.readFileSync(MANIFEST, 'utf8')).map((d) => {
  assert.equal(d.errors.length, 0, `YAML errors: ${d.errors.join('; ')}`);
  return d.toJS();
});
const daemonSet = () => {
  const ds = docs().find((d) => d.kind === 'DaemonSet');
  assert.ok(ds, 'a DaemonSet');
  return ds as { metadata: { namespace: string }; spec: { selector: { matchLabels: Record<string, string> }; template: { metadata: { labels: Record<string, string> }; spec: PodSpec } } };
};
const pod = () => daemonSet().spec.template.spec;
const allContainers = (p: PodSpec) => [...(p.initContainers ?? []), ...p.containers];
const daemonContainer = (p: PodSpec) => {
  const c = p.containers.find((x) => x.command?.includes('daemon'));
  assert.ok(c, 'a container runs `toastnet daemon`');
  return c;
};

/** The node path a container path lands on, through the container's hostPath mounts (longest mount wins). */
function nodePathOf(p: PodSpec, c: Container, file: string): string | undefined {
  const mounts = (c.volumeMounts ?? []).filter((m) => file === m.mountPath || file.startsWith(m.mountPath + '/'))
    .sort((a, b) => b.mountPath.length - a.mountPath.length);
  const m = mounts[0];
  const host = m && p.volumes?.find((v) => v.name === m.name)?.hostPath?.path;
  return host === undefined ? undefined : path.join(host, path.relative(m.mountPath, file));
}

test('every resource parses and the DaemonSet selects its own pods', () => {
  const kinds = docs().map((d) => d.kind);
  for (const k of ['Namespace', 'ServiceAccount', 'ClusterRole', 'ClusterRoleBinding', 'DaemonSet']) assert.ok(kinds.includes(k), k);
  const ds = daemonSet();
  for (const [k, v] of Object.entries(ds.spec.selector.matchLabels)) assert.equal(ds.spec.template.metadata.labels[k], v);
  const sa = docs().find((d) => d.kind === 'ServiceAccount');
  assert.equal(pod().serviceAccountName, sa.metadata.name);
  assert.equal(sa.metadata.namespace, ds.metadata.namespace);
  const binding = docs().find((d) => d.kind === 'ClusterRoleBinding');
  assert.deepEqual(binding.subjects, [{ kind: 'ServiceAccount', name: sa.metadata.name, namespace: sa.metadata.namespace }]);
  assert.equal(binding.roleRef.name, docs().find((d) => d.kind === 'ClusterRole').metadata.name);
});

test('every volume is mounted and every mount names a volume', () => {
  const p = pod();
  const declared = new Set((p.volumes ?? []).map((v) => v.name));
  const mounted = new Set(allContainers(p).flatMap((c) => (c.volumeMounts ?? []).map((m) => m.name)));
  for (const m of mounted) assert.ok(declared.has(m), `mount of undeclared volume ${m}`);
  for (const v of declared) assert.ok(mounted.has(v), `volume ${v} is never mounted`);
});

test('images are pinned: a tag that is not latest, the same image for installer and daemon', () => {
  const images = allContainers(pod()).map((c) => c.image);
  for (const image of images) {
    const tag = /:([^/:@]+)$/.exec(image)?.[1];
    assert.ok(tag && tag !== 'latest' || image.includes('@sha256:'), `${image} is not pinned`);
  }
  assert.equal(new Set(images).size, 1, 'one image');
  for (const line of fs.readFileSync(DOCKERFILE, 'utf8').split('\n').filter((l) => /^FROM /.test(l))) {
    const image = line.split(/\s+/)[1];
    assert.match(image, /:[0-9][^:]*$/, `${line}: base image pinned to a version`);
  }
});

test('the daemon runs in the node\'s network and process namespaces', () => {
  assert.equal(pod().hostNetwork, true);
  assert.equal(pod().hostPID, true);
});

test('the installer writes what the daemon and the plugin read, onto the node paths the pod mounts', () => {
  const p = pod();
  const install = p.initContainers?.find((c) => c.command?.some((a) => a.endsWith('install-cni.sh')));
  assert.ok(install, 'an init container runs install-cni.sh');
  const daemon = daemonContainer(p);

  // Run the installer as the init container would, in a throwaway "node" directory.
  const node = fs.mkdtempSync(path.join(os.tmpdir(), 'tn-k8s-'));
  try {
    const envOf = (name: string) => install.env?.find((e) => e.name === name)?.value;
    const inNode = (dir: string) => path.join(node, dir);
    const dirs = { CNI_BIN_DIR: '/host/opt/cni/bin', CNI_CONF_DIR: '/host/etc/cni/net.d', TOASTNET_ETC_DIR: '/host/etc/toastnet' };
    // The installer's default directories are where the init container mounts the node's paths.
    const nodeDirs = Object.fromEntries(Object.entries(dirs).map(([k, d]) => {
      const host = nodePathOf(p, install, d);
      assert.ok(host, `${d} is a hostPath mount of the init container`);
      fs.mkdirSync(inNode(host), { recursive: true });
      return [k, { container: d, host }];
    }));
    const plugin = path.join(node, 'toastnet-cni');
    fs.writeFileSync(plugin, '#!/bin/sh\nexit 0\n', { mode: 0o755 });
    const env = {
      PATH: process.env.PATH,
      NODE_NAME: 'node-a',
      TOASTNET_INSTANCE: envOf('TOASTNET_INSTANCE'),
      TOASTNET_SUBNET: '10.244.3.0/24',
      TOASTNET_PLUGIN: plugin,
      ...Object.fromEntries(Object.entries(nodeDirs).map(([k, d]) => [k, inNode(d.host)])),
    };
    const run = spawnSync('sh', [INSTALLER], { encoding: 'utf8', env });
    assert.equal(run.status, 0, run.stderr);
    const at = (k: string) => inNode(nodeDirs[k].host);

    // The plugin lands under the name the conflist's `type` gives, executable.
    const conflist = JSON.parse(fs.readFileSync(path.join(at('CNI_CONF_DIR'), '10-toastnet.conflist'), 'utf8'));
    assert.equal(conflist.cniVersion, '1.0.0', 'the version Debian\'s and most runtimes\' libcni accept');
    const entry = conflist.plugins[0];
    fs.accessSync(path.join(at('CNI_BIN_DIR'), entry.type), fs.constants.X_OK);
    assert.equal(entry.subnet, '10.244.3.0/24');

    // The daemon's --config names the file the installer wrote, seen through the daemon's mounts.
    const cmd = daemon.command ?? [];
    const configArg = cmd[cmd.indexOf('--config') + 1];
    const configOnNode = nodePathOf(p, daemon, configArg);
    assert.ok(configOnNode, `${configArg} is on a hostPath mount of the daemon`);
    const config = loadConfig({ configFile: inNode(configOnNode), env: {}, resolvConfFiles: [] });
    assert.equal(config.subnet, entry.subnet, 'daemon and plugin agree on the subnet');
    assert.equal(config.instance, entry.instance, 'daemon and plugin agree on the instance');

    // What the plugin (run by the node's runtime, outside the pod) and the daemon meet at, and
    // what the daemon keeps and shares, are node paths equal to the daemon's own paths.
    for (const [what, p2] of [['API socket', socketPath(config)], ['state store', config.stateDir], ['named namespaces', NETNS_RUN_DIR], ['resolv.conf entries', '/etc/netns']] as const) {
      assert.equal(nodePathOf(p, daemon, p2), p2, `${what} (${p2}) is the node's own path`);
    }
    const netnsMount = daemon.volumeMounts?.find((m) => m.mountPath === NETNS_RUN_DIR);
    assert.equal(netnsMount?.mountPropagation, 'Bidirectional', 'namespaces the daemon mounts reach the node, the runtime\'s reach the daemon');

    // Idempotent: a second run (the pod restarting) leaves the same files.
    const before = fs.readFileSync(path.join(at('CNI_CONF_DIR'), '10-toastnet.conflist'), 'utf8');
    assert.equal(spawnSync('sh', [INSTALLER], { env }).status, 0);
    assert.equal(fs.readFileSync(path.join(at('CNI_CONF_DIR'), '10-toastnet.conflist'), 'utf8'), before);
    assert.deepEqual(fs.readdirSync(at('CNI_CONF_DIR')), ['10-toastnet.conflist'], 'no temporary file left behind');
  } finally {
    fs.rmSync(node, { recursive: true, force: true });
  }
});

test('the installer refuses to guess: no subnet and no node name is one clear error', () => {
  const node = fs.mkdtempSync(path.join(os.tmpdir(), 'tn-k8s-'));
  try {
    for (const d of ['bin', 'conf', 'etc']) fs.mkdirSync(path.join(node, d));
    const plugin = path.join(node, 'plugin');
    fs.writeFileSync(plugin, '#!/bin/sh\n', { mode: 0o755 });
    const run = spawnSync('sh', [INSTALLER], {
      encoding: 'utf8',
      env: { PATH: process.env.PATH, TOASTNET_PLUGIN: plugin, CNI_BIN_DIR: path.join(node, 'bin'), CNI_CONF_DIR: path.join(node, 'conf'), TOASTNET_ETC_DIR: path.join(node, 'etc') },
    });
    assert.notEqual(run.status, 0);
    assert.equal(run.stderr.trim().split('\n').length, 1, run.stderr);
    assert.match(run.stderr, /NODE_NAME is not set/);
    assert.deepEqual(fs.readdirSync(path.join(node, 'conf')), [], 'nothing written');
  } finally {
    fs.rmSync(node, { recursive: true, force: true });
  }
});
