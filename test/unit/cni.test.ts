// The CNI plugin's pure half (core/cni.ts): a call's inputs as the spec defines them, the
// versions answered and their result forms, CNI_ARGS, the bandwidth capability in
// toastnet's units, the policy layers, CHECK's comparison; and the store's attachment
// columns, added to a database made before them.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import {
  Attached, CNI_ERRORS, CniError, attachmentPolicy, bandwidthLimits, buildResult, checkProblems, parseCniArgs, parseCniCall, attachmentPublish, versionBefore,
} from '../../src/core/cni.js';
import { Store } from '../../src/store/store.js';

const conf = (extra: Record<string, unknown> = {}) => JSON.stringify({ cniVersion: '1.0.0', name: 'net', type: 'toastnet-cni', ...extra });
const add = (extra: Record<string, unknown> = {}, env: Record<string, string> = {}) =>
  parseCniCall({ command: 'ADD', containerId: 'c1', netns: '/proc/1/ns/net', ifname: 'eth0', config: conf(extra), ...env });
function code(fn: () => unknown): number {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof CniError, String(err));
    return err.code;
  }
  assert.fail('expected a CniError');
}

describe('CNI calls', () => {
  it('reads CNI_ARGS pairs and refuses a malformed one', () => {
    assert.deepEqual(parseCniArgs('IgnoreUnknown=1;K8S_POD_NAME=web-0;K8S_POD_NAMESPACE=team'), { IgnoreUnknown: '1', K8S_POD_NAME: 'web-0', K8S_POD_NAMESPACE: 'team' });
    assert.deepEqual(parseCniArgs(''), {});
    assert.deepEqual(parseCniArgs('A=x=y'), { A: 'x=y' });
    assert.equal(code(() => parseCniArgs('oops')), CNI_ERRORS.invalidEnvironment);
  });

  it('answers the supported versions and refuses others with code 1', () => {
    for (const v of ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0']) assert.equal(add({ cniVersion: v }).conf.cniVersion, v);
    assert.equal(code(() => add({ cniVersion: '2.0.0' })), CNI_ERRORS.incompatibleVersion);
    assert.equal(code(() => add({ cniVersion: undefined })), CNI_ERRORS.incompatibleVersion);
    assert.ok(versionBefore('0.4.0', '1.0.0') && !versionBefore('1.1.0', '1.0.0') && !versionBefore('1.0.0', '1.0.0'));
  });

  it('names the missing or bad input with the spec\'s codes', () => {
    assert.equal(code(() => parseCniCall({ command: 'ADD', containerId: 'c1', ifname: 'eth0', config: conf() })), CNI_ERRORS.invalidEnvironment, 'ADD needs CNI_NETNS');
    assert.doesNotThrow(() => parseCniCall({ command: 'DEL', containerId: 'c1', ifname: 'eth0', config: conf() }), 'DEL may come without a namespace');
    assert.equal(code(() => parseCniCall({ command: 'DEL', ifname: 'eth0', config: conf() })), CNI_ERRORS.invalidEnvironment);
    assert.equal(code(() => parseCniCall({ command: 'FROB', config: conf() })), CNI_ERRORS.invalidEnvironment);
    assert.equal(code(() => add({}, { ifname: 'a/b' })), CNI_ERRORS.invalidEnvironment);
    assert.equal(code(() => add({}, { ifname: 'averyveryverylongname' })), CNI_ERRORS.invalidEnvironment);
    assert.equal(code(() => add({}, { containerId: 'bad id' })), CNI_ERRORS.invalidEnvironment);
    assert.equal(code(() => parseCniCall({ command: 'ADD', config: '{' })), CNI_ERRORS.decode);
    assert.equal(code(() => add({ name: undefined })), CNI_ERRORS.invalidConfig);
    assert.equal(code(() => add({ name: 'a/b' })), CNI_ERRORS.invalidConfig);
    assert.equal(code(() => add({ mode: 'bridge' })), CNI_ERRORS.invalidConfig);
    assert.equal(code(() => add({ runtimeConfig: { bandwidth: { ingressRate: 'fast' } } })), CNI_ERRORS.invalidConfig);
    assert.equal(code(() => add({ runtimeConfig: { bandwidth: { shape: 1 } } })), CNI_ERRORS.unsupportedField);
    assert.equal(code(() => add({ 'cni.dev/valid-attachments': [{ containerID: 'x' }] })), CNI_ERRORS.invalidConfig);
  });

  it('CHECK needs 0.4.0 or later and a prevResult', () => {
    const check = (extra: Record<string, unknown>) => parseCniCall({ command: 'CHECK', containerId: 'c1', netns: '/x', ifname: 'eth0', config: conf(extra) });
    assert.equal(code(() => check({ cniVersion: '0.3.1', prevResult: {} })), CNI_ERRORS.incompatibleVersion);
    assert.equal(code(() => check({})), CNI_ERRORS.invalidConfig);
    assert.equal(check({ prevResult: { ips: [] } }).command, 'CHECK');
  });

  it('GC and STATUS need no container', () => {
    const gc = parseCniCall({ command: 'GC', config: conf({ cniVersion: '1.1.0', 'cni.dev/valid-attachments': [{ containerID: 'a', ifname: 'eth0' }] }) });
    assert.deepEqual(gc.conf.validAttachments, [{ containerID: 'a', ifname: 'eth0' }]);
    assert.equal(parseCniCall({ command: 'STATUS', config: conf({ cniVersion: '1.1.0' }) }).command, 'STATUS');
  });
});

describe('CNI policy and limits', () => {
  it('bandwidth in bits becomes limits in bytes; 0 means unlimited', () => {
    assert.deepEqual(bandwidthLimits({ ingressRate: 8_000_000, ingressBurst: 80_000, egressRate: 1_000, egressBurst: 0 }), { ingressRate: 1_000_000, ingressBurst: 10_000, egressRate: 125 });
    assert.deepEqual(bandwidthLimits({ ingressRate: 0 }), {});
    assert.deepEqual(bandwidthLimits({ egressRate: 1 }), { egressRate: 1 }, 'never rounded down to nothing');
    assert.deepEqual(bandwidthLimits(undefined), {});
  });

  it('layers: network policy < args.cni.policy < CNI_ARGS TOASTNET_POLICY < bandwidth', () => {
    const b64 = Buffer.from(JSON.stringify({ egress: { domains: ['pypi.org'] }, limits: { egressRate: '10mbit' } })).toString('base64');
    const p = attachmentPolicy(add(
      { policy: { egress: { internet: false }, mode: 'report' }, args: { cni: { policy: { mode: 'enforce' } } }, runtimeConfig: { bandwidth: { egressRate: 16_000_000 } } },
      { args: `K8S_POD_NAME=x;TOASTNET_POLICY=${b64}` },
    ));
    assert.equal(p.mode, 'enforce');
    assert.deepEqual(p.egress, { internet: false, domains: ['pypi.org'] });
    assert.equal(p.limits?.egressRate, 2_000_000, 'the runtime\'s bandwidth wins');
    assert.equal(code(() => attachmentPolicy(add({ policy: { egress: { internet: 'no' } } }))), CNI_ERRORS.invalidConfig);
    assert.equal(code(() => attachmentPolicy(add({}, { args: 'TOASTNET_POLICY=!!!' }))), CNI_ERRORS.invalidEnvironment);
    assert.deepEqual(attachmentPolicy(add()), {});
  });

  it('the pod annotation toastnet.dev/policy (containerd\'s and CRI-O\'s pod-annotations capability) goes over the network\'s policy, under the bandwidth', () => {
    const annotations = { 'toastnet.dev/policy': JSON.stringify({ egress: { domains: ['pypi.org'] }, limits: { egressRate: '80mbit' } }), 'kubernetes.io/config.seen': 'x' };
    const p = attachmentPolicy(add({ policy: { egress: { internet: true } }, runtimeConfig: { 'io.kubernetes.cri.pod-annotations': annotations, bandwidth: { egressRate: 16_000_000 } } }));
    assert.deepEqual(p.egress, { internet: true, domains: ['pypi.org'] });
    assert.equal(p.limits?.egressRate, 2_000_000, 'the runtime\'s bandwidth wins');
    const bad = (a: unknown) => code(() => attachmentPolicy(add({ runtimeConfig: { 'io.kubernetes.cri.pod-annotations': a } })));
    assert.equal(bad({ 'toastnet.dev/policy': '{not json' }), CNI_ERRORS.invalidConfig);
    assert.equal(bad({ 'toastnet.dev/policy': '{"egress":{"internet":"no"}}' }), CNI_ERRORS.invalidConfig);
    assert.equal(bad({ 'toastnet.dev/policy': 7 }), CNI_ERRORS.invalidConfig, 'annotations are strings');
  });
});

describe('CNI portMappings', () => {
  it('become the published ports; v6 twins are left out; bad ones are invalid config', () => {
    assert.deepEqual(attachmentPublish([{ hostPort: 8080, containerPort: 80, protocol: 'tcp' }, { hostPort: 53, containerPort: 5353, protocol: 'UDP', hostIP: '192.0.2.2' }, { hostPort: 1, containerPort: 2, hostIP: '0.0.0.0' }, { hostPort: 8080, containerPort: 80, protocol: 'tcp', hostIP: '::' }]),
      [{ hostPort: 8080, containerPort: 80, protocol: 'tcp' }, { hostPort: 53, containerPort: 5353, protocol: 'udp', hostIP: '192.0.2.2' }, { hostPort: 1, containerPort: 2, protocol: 'tcp' }]);
    assert.deepEqual(attachmentPublish(undefined), []);
    assert.equal(code(() => attachmentPublish([{ hostPort: 0, containerPort: 80 }])), CNI_ERRORS.invalidConfig);
    assert.equal(code(() => attachmentPublish([{ hostPort: 80, containerPort: 80, protocol: 'sctp' }])), CNI_ERRORS.invalidConfig);
    assert.equal(code(() => attachmentPublish(['80:80'])), CNI_ERRORS.invalidConfig);
  });
});

describe('CNI results and CHECK', () => {
  const a: Attached = { ifname: 'eth0', mac: '02:00:00:00:00:01', netns: '/proc/9/ns/net', hostLink: 'tnab12', ip: '10.166.0.5', prefixLength: 16, gateway: '10.166.0.1' };

  it('1.x: interfaces with sandbox, the address on the container\'s interface, route, the gateway as nameserver', () => {
    const r = buildResult('1.0.0', a);
    assert.deepEqual(r, {
      cniVersion: '1.0.0',
      interfaces: [{ name: 'tnab12' }, { name: 'eth0', mac: '02:00:00:00:00:01', sandbox: '/proc/9/ns/net' }],
      ips: [{ address: '10.166.0.5/16', gateway: '10.166.0.1', interface: 1 }],
      routes: [{ dst: '0.0.0.0/0', gw: '10.166.0.1' }],
      dns: { nameservers: ['10.166.0.1'] },
    });
    assert.equal(buildResult('1.1.0', a).cniVersion, '1.1.0');
    assert.equal(buildResult('1.0.0', { ...a, hostLink: undefined }).ips![0].interface, 0, 'macvlan: no host interface');
  });

  it('0.3/0.4: ips carry version 4', () => {
    assert.equal(buildResult('0.4.0', a).ips![0].version, '4');
    assert.equal(buildResult('0.3.1', a).ips![0].version, '4');
  });

  it('after another plugin: its result kept, ours appended with indices that follow', () => {
    const prev = { cniVersion: '1.0.0', interfaces: [{ name: 'lo0' }], ips: [{ address: '192.0.2.9/24', interface: 0 }], dns: { nameservers: ['192.0.2.53'] } };
    const r = buildResult('1.0.0', a, prev);
    assert.deepEqual(r.interfaces!.map((i) => i.name), ['lo0', 'tnab12', 'eth0']);
    assert.deepEqual(r.ips!.map((i) => i.interface), [0, 2]);
    assert.deepEqual(r.dns, { nameservers: ['192.0.2.53'] });
  });

  it('CHECK finds what differs from prevResult and from the live state', () => {
    const prev = buildResult('1.0.0', a);
    const live = { linkUp: true, addresses: ['10.166.0.5/16'], defaultVia: '10.166.0.1', hostLinkPresent: true };
    assert.deepEqual(checkProblems(prev, a, live), []);
    assert.match(checkProblems(prev, a, { ...live, addresses: [] }).join(), /lacks 10\.166\.0\.5\/16/);
    assert.match(checkProblems(prev, a, { ...live, linkUp: false }).join(), /down/);
    assert.match(checkProblems(prev, a, { ...live, defaultVia: undefined }).join(), /default route is missing/);
    assert.match(checkProblems(prev, a, { ...live, hostLinkPresent: false }).join(), /host side/);
    assert.match(checkProblems(prev, a, undefined).join(), /missing/);
    assert.match(checkProblems({ ...prev, ips: [] }, a, live).join(), /prevResult has no address/);
    assert.match(checkProblems({ ...prev, interfaces: [{ name: 'eth1' }] }, a, live).join(), /no interface eth0/);
  });
});

describe('store: attachment columns', () => {
  it('adds them to a database made before them, and finds a row by the spec\'s key', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tn-cni-store-'));
    try {
      const file = path.join(dir, 'state.db');
      const old = new Database(file);
      old.exec(`CREATE TABLE sandboxes (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE, ip TEXT NOT NULL UNIQUE,
        mode TEXT NOT NULL CHECK (mode IN ('veth', 'macvlan')), state TEXT NOT NULL CHECK (state IN ('creating', 'ready')), created_at INTEGER NOT NULL, policy TEXT NOT NULL DEFAULT '{}');
        INSERT INTO sandboxes (name, ip, mode, state, created_at) VALUES ('old', '10.166.0.2', 'veth', 'ready', 1);`);
      old.close();
      const s = new Store(file);
      try {
        assert.equal(s.getByName('old')?.attachment, undefined);
        const id = s.insertSandbox('cni-1', '10.166.0.3', 'veth');
        const a = { network: 'net', containerId: 'c1', ifname: 'eth0', netns: '/proc/5/ns/net', netnsInode: 42, cniVersion: '1.0.0', podName: 'p' };
        s.setAttachment(id, a);
        assert.deepEqual(s.getByAttachment('net', 'c1', 'eth0')?.attachment, a);
        assert.equal(s.getByAttachment('net', 'c1', 'eth1'), undefined);
        const id2 = s.insertSandbox('cni-2', '10.166.0.4', 'veth');
        assert.throws(() => s.setAttachment(id2, a), /already has eth0/);
        s.deleteSandbox(id);
        assert.equal(s.getByAttachment('net', 'c1', 'eth0'), undefined);
      } finally {
        s.close();
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
