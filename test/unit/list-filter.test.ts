import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ToastnetError } from '../../src/errors.js';
import { globToRegExp, sandboxFilter } from '../../src/cli/list-filter.js';
import type { SandboxInfo } from '../../src/api/types.js';

const sbx = (name: string, mode: 'veth' | 'macvlan', labels: Record<string, string> = {}): SandboxInfo => ({
  name, mode, labels, id: 1, ip: '10.166.0.2', gateway: '10.166.0.1', prefixLength: 16, netns: `toastnet-${name}`, mac: '02:00:00:00:00:01',
  resolvConf: '/etc/netns/x/resolv.conf', createdAt: '2024-01-01T00:00:00.000Z', state: 'ready',
});
const ALL = [
  sbx('web-1', 'veth', { team: 'a', 'app.kubernetes.io/name': 'web' }), sbx('web-2', 'macvlan', { team: 'b', tier: '' }),
  sbx('db', 'macvlan', { team: 'a' }), sbx('web.10', 'veth'),
];
const names = (specs: string[]) => ALL.filter(sandboxFilter(specs)).map((s) => s.name);

describe('ls --filter', () => {
  it('no filter keeps every sandbox', () => {
    assert.deepEqual(names([]), ['web-1', 'web-2', 'db', 'web.10']);
  });

  it('mode=veth|macvlan keeps that mode only', () => {
    assert.deepEqual(names(['mode=veth']), ['web-1', 'web.10']);
    assert.deepEqual(names(['mode=macvlan']), ['web-2', 'db']);
  });

  it('name=GLOB matches the whole name, with * and ? and nothing else special', () => {
    assert.deepEqual(names(['name=web-*']), ['web-1', 'web-2']);
    assert.deepEqual(names(['name=web?1']), ['web-1']);
    assert.deepEqual(names(['name=web.*']), ['web.10']); // "." is a dot, not any character
    assert.deepEqual(names(['name=web']), []);
    assert.deepEqual(names(['name=*']), ['web-1', 'web-2', 'db', 'web.10']);
    assert.equal(globToRegExp('a+b(c)[d]').test('a+b(c)[d]'), true);
  });

  it('the same key twice: either; different keys: both', () => {
    assert.deepEqual(names(['name=db', 'name=web-1']), ['web-1', 'db']);
    assert.deepEqual(names(['mode=macvlan', 'name=web*']), ['web-2']);
  });

  it('container=GLOB and pod=NAMESPACE/NAME glob match containers attached through CNI only', () => {
    const attached = (name: string, containerId: string, pod?: [string, string]): SandboxInfo => ({
      ...sbx(name, 'veth'),
      attachment: { network: 'n', containerId, ifname: 'eth0', netns: '/proc/1/ns/net', cniVersion: '1.0.0', ...(pod ? { podNamespace: pod[0], podName: pod[1] } : {}) },
    });
    const list = [...ALL, attached('cni-a', 'k8s-abc', ['team', 'web-0']), attached('cni-b', 'tn-job1')];
    const pick = (specs: string[]) => list.filter(sandboxFilter(specs)).map((s) => s.name);
    assert.deepEqual(pick(['container=k8s-*']), ['cni-a']);
    assert.deepEqual(pick(['container=*']), ['cni-a', 'cni-b']);
    assert.deepEqual(pick(['pod=team/*']), ['cni-a']);
    assert.deepEqual(pick(['pod=*']), ['cni-a'], 'no pod, no match');
    assert.deepEqual(pick(['name=web*']), ['web-1', 'web-2', 'web.10']);
  });

  it('label=K=V: label K has value V; label=K: it has label K, whatever the value (empty too)', () => {
    assert.deepEqual(names(['label=team=a']), ['web-1', 'db']);
    assert.deepEqual(names(['label=app.kubernetes.io/name=web']), ['web-1']);
    assert.deepEqual(names(['label=team']), ['web-1', 'web-2', 'db']);
    assert.deepEqual(names(['label=tier']), ['web-2']);
    assert.deepEqual(names(['label=tier=']), ['web-2']);
    assert.deepEqual(names(['label=team=c']), []);
  });

  it('label filters must all match (they narrow, as docker\'s), and with other keys too', () => {
    assert.deepEqual(names(['label=team=a', 'label=app.kubernetes.io/name']), ['web-1']);
    assert.deepEqual(names(['label=team', 'mode=macvlan']), ['web-2', 'db']);
  });

  it('refuses a label filter that is no label, with the label rule', () => {
    assert.throws(() => sandboxFilter(['label=bad key=x']), /--filter label=bad key=x: "bad key": a label key is NAME or PREFIX\/NAME/);
    assert.throws(() => sandboxFilter(['label=k=a b']), /--filter label=k=a b: "k": a label value is empty or 1-63/);
  });

  it('refuses an unknown key, a missing value or an unknown mode with invalid_argument naming the filter', () => {
    for (const [spec, msg] of [['colour=red', /--filter colour=red: want mode=veth\|macvlan\|tap, name=GLOB, label=KEY or label=KEY=VALUE/], ['mode', /--filter mode: want/], ['name=', /--filter name=: want/], ['mode=bridge', /--filter mode=bridge: mode is one of veth, macvlan, tap/]] as const) {
      assert.throws(() => sandboxFilter([spec]), (e: unknown) => e instanceof ToastnetError && e.code === 'invalid_argument' && msg.test(e.message));
    }
  });
});
