import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ToastnetError } from '../../src/errors.js';
import { defaultLogGroup, defaultUpstreams, fromEnv, kernelConfigHash, loadConfig, resolve } from '../../src/config/load.js';
import { ConfigSchema } from '../../src/config/schema.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'toastnet-config-test-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));

let n = 0;
function file(content: string | object, name = `f${n++}`): string {
  const p = path.join(dir, name);
  fs.writeFileSync(p, typeof content === 'string' ? content : JSON.stringify(content));
  return p;
}

// Never the host's resolv.conf: a file with one known upstream.
const resolvConf = file('nameserver 192.0.2.53\n', 'resolv.conf');

const invalid = (re: RegExp) => (err: unknown) => {
  assert.ok(err instanceof ToastnetError, `not a ToastnetError: ${err}`);
  assert.equal(err.code, 'invalid_argument');
  assert.match(err.message, re);
  return true;
};

describe('newConnsPerSecond', () => {
  it('is a ceiling: 1,000 by default; a defaultPolicy above it is refused naming both', () => {
    assert.equal(loadConfig({ env: {}, configFile: file({}), resolvConfFiles: [resolvConf] }).newConnsPerSecond, 1000);
    const ok = loadConfig({ env: {}, configFile: file({ newConnsPerSecond: 5000, defaultPolicy: { limits: { newConnsPerSecond: 5000 } } }), resolvConfFiles: [resolvConf] });
    assert.equal(ok.newConnsPerSecond, 5000);
    assert.throws(
      () => loadConfig({ env: {}, configFile: file({ defaultPolicy: { limits: { newConnsPerSecond: 2000 } } }), resolvConfFiles: [resolvConf] }),
      invalid(/defaultPolicy.*limits\.newConnsPerSecond 2000 is above the ceiling newConnsPerSecond 1000/),
    );
    assert.throws(
      () => loadConfig({ env: {}, configFile: file({ defaultPolicy: { limits: { newConnsPerSecond: 100, newConnsBurst: 5000 } } }), resolvConfFiles: [resolvConf] }),
      invalid(/defaultPolicy.*limits\.newConnsBurst 5000 is above the ceiling newConnsPerSecond 1000/),
    );
    assert.throws(() => loadConfig({ env: {}, configFile: file({ newConnsPerSecond: 0 }), resolvConfFiles: [resolvConf] }), invalid(/newConnsPerSecond/));
  });
});

describe('metricsLabels', () => {
  it('takes label keys; refuses a key that is none, and two keys that make one metric label', () => {
    const ok = loadConfig({ env: {}, configFile: file({ metricsLabels: ['team', 'app.kubernetes.io/name'] }), resolvConfFiles: [resolvConf] });
    assert.deepEqual(ok.metricsLabels, ['team', 'app.kubernetes.io/name']);
    assert.throws(() => loadConfig({ env: {}, configFile: file({ metricsLabels: ['bad key'] }), resolvConfFiles: [resolvConf] }), invalid(/metricsLabels.*want a label key/));
    assert.throws(() => loadConfig({ env: {}, configFile: file({ metricsLabels: ['a.b', 'a_b'] }), resolvConfFiles: [resolvConf] }), invalid(/"a\.b" and "a_b" both become the metric label label_a_b/));
  });
});

describe('loadConfig precedence', () => {
  const cfg = file({ instance: 'fromfile', subnet: '10.50.0.0/16', dnsTimeoutMs: 700, allowCidrs: ['172.16.0.1'], stateDir: '/tmp/file-state' });

  it('defaults when there is no file, env or flag', () => {
    const c = loadConfig({ env: {}, configFile: file({}), resolvConfFiles: [resolvConf] });
    assert.deepEqual(c, {
      instance: 'toastnet',
      subnet: '10.166.0.0/16',
      gateway: '10.166.0.1',
      dnsUpstreams: ['192.0.2.53'],
      dnsTimeoutMs: 2000,
      dnsMinTtl: 5,
      dnsMaxTtl: 3600,
      dnsRefuseWith: 'refused',
      dnsCacheSize: 10000,
      dnsPacketsPerSecond: 1000,
      newConnsPerSecond: 1000,
      allowCidrs: [],
      denyCidrs: [],
      defaultPolicy: {},
      allowMetadata: false,
      denyAction: 'reject',
      defaultMode: 'veth',
      logGroup: defaultLogGroup('toastnet'),
      metricsMaxSandboxes: 200,
      metricsLabels: [],
      flowRetention: 1_000_000,
      logLevel: 'info',
      pool: { size: 0, refillBelow: 0 },
      stateDir: '/var/lib/toastnet/toastnet',
      runDir: '/run/toastnet/toastnet',
      given: {},
    });
  });

  it('keeps what was given, file, environment and flags merged, apart from the defaults it resolved', () => {
    const c = loadConfig({ env: { TOASTNET_POOL_SIZE: '4' }, configFile: cfg, flags: { subnet: '10.51.0.0/16' }, resolvConfFiles: [resolvConf] });
    assert.deepEqual(c.given, { instance: 'fromfile', subnet: '10.51.0.0/16', dnsTimeoutMs: 700, allowCidrs: ['172.16.0.1'], stateDir: '/tmp/file-state', poolSize: 4 });
    assert.equal(c.gateway, '10.51.0.1', 'resolved, but not in what was given');
  });

  it('file overrides defaults', () => {
    const c = loadConfig({ env: {}, configFile: cfg, resolvConfFiles: [resolvConf] });
    assert.equal(c.instance, 'fromfile');
    assert.equal(c.subnet, '10.50.0.0/16');
    assert.equal(c.gateway, '10.50.0.1');
    assert.equal(c.dnsTimeoutMs, 700);
    assert.deepEqual(c.allowCidrs, ['172.16.0.1']);
    assert.equal(c.stateDir, '/tmp/file-state');
    assert.equal(c.runDir, '/run/toastnet/fromfile', 'derived defaults follow the instance');
  });

  it('env overrides the file, flags override env', () => {
    const env = { TOASTNET_INSTANCE: 'fromenv', TOASTNET_DNS_TIMEOUT_MS: '900', TOASTNET_SUBNET: '10.60.0.0/16', TOASTNET_DNS_CACHE_SIZE: '0' };
    const c = loadConfig({ env, configFile: cfg, resolvConfFiles: [resolvConf] });
    assert.equal(c.instance, 'fromenv');
    assert.equal(c.dnsTimeoutMs, 900);
    assert.equal(c.dnsCacheSize, 0, 'numeric keys from the environment are numbers');
    assert.equal(c.subnet, '10.60.0.0/16');
    assert.deepEqual(c.allowCidrs, ['172.16.0.1'], 'keys not in env still come from the file');

    const f = loadConfig({ env, configFile: cfg, flags: { instance: 'fromflags', subnet: undefined }, resolvConfFiles: [resolvConf] });
    assert.equal(f.instance, 'fromflags');
    assert.equal(f.subnet, '10.60.0.0/16', 'an undefined flag does not override');
    assert.equal(f.dnsTimeoutMs, 900);
  });

  it('finds the file through TOASTNET_CONFIG, and --config wins over it', () => {
    const other = file({ instance: 'viaenvfile' });
    assert.equal(loadConfig({ env: { TOASTNET_CONFIG: other }, resolvConfFiles: [resolvConf] }).instance, 'viaenvfile');
    assert.equal(loadConfig({ env: { TOASTNET_CONFIG: other }, configFile: cfg, resolvConfFiles: [resolvConf] }).instance, 'fromfile');
  });

  it('an explicit config file must exist', () => {
    const missing = path.join(dir, 'does-not-exist.json');
    assert.throws(() => loadConfig({ env: {}, configFile: missing }), invalid(/config file .*does-not-exist\.json/));
    assert.throws(() => loadConfig({ env: { TOASTNET_CONFIG: missing } }), invalid(/does-not-exist\.json/));
  });

  it('TOASTNET_DNS_UPSTREAMS is a comma list', () => {
    const c = loadConfig({ env: { TOASTNET_DNS_UPSTREAMS: '1.1.1.1, 9.9.9.9:5353,,' }, configFile: file({}), resolvConfFiles: [resolvConf] });
    assert.deepEqual(c.dnsUpstreams, ['1.1.1.1', '9.9.9.9:5353']);
    assert.deepEqual(fromEnv({ TOASTNET_ALLOW_CIDRS: '10.0.0.0/8:22/tcp,192.0.2.1', TOASTNET_DENY_CIDRS: '' }), {
      allowCidrs: ['10.0.0.0/8:22/tcp', '192.0.2.1'],
      denyCidrs: [],
    });
  });

  it('ignores environment variables that are not ours', () => {
    const c = loadConfig({ env: { PATH: '/bin', TOASTNETX: '1', toastnet_instance: 'lower' }, configFile: file({}), resolvConfFiles: [resolvConf] });
    assert.equal(c.instance, 'toastnet');
  });
});

describe('loadConfig validation', () => {
  it('rejects an unknown key in the file, naming the file and the key', () => {
    const p = file({ subnet: '10.1.0.0/16', subnett: '10.2.0.0/16' });
    assert.throws(() => loadConfig({ env: {}, configFile: p }), invalid(new RegExp(`^config file ${p}: unknown key "subnett"`)));
  });

  it('rejects an unknown TOASTNET_ variable, naming it', () => {
    assert.throws(() => loadConfig({ env: { TOASTNET_SUBNETT: '10.0.0.0/8' }, configFile: file({}) }), invalid(/^environment: unknown variable TOASTNET_SUBNETT/));
  });

  it('rejects an unknown flag, naming it', () => {
    assert.throws(() => loadConfig({ env: {}, configFile: file({}), flags: { color: 'red' } as never }), invalid(/^flags: unknown key "color"/));
  });

  it('rejects a bad value, naming the source and the key', () => {
    assert.throws(() => loadConfig({ env: {}, configFile: file({ subnet: '10.1.2.0/16' }) }), invalid(/^config file .*: key "subnet": .*host bits.*10\.1\.0\.0\/16/));
    assert.throws(() => loadConfig({ env: { TOASTNET_DNS_TIMEOUT_MS: 'soon' }, configFile: file({}) }), invalid(/^environment: key "dnsTimeoutMs"/));
    assert.throws(() => loadConfig({ env: {}, configFile: file({}), flags: { subnet: 'banana' } }), invalid(/^flags: key "subnet"/));
    assert.throws(() => loadConfig({ env: {}, configFile: file({ allowCidrs: ['10.0.0.0/8:0'] }) }), invalid(/key "allowCidrs\.0".*bad port range/));
    assert.throws(() => loadConfig({ env: {}, configFile: file({ subnet: '10.0.0.0/30' }) }), invalid(/key "subnet".*\/8 and \/29/));
    assert.throws(() => loadConfig({ env: {}, configFile: file({ instance: 'Bad-Name' }) }), invalid(/key "instance"/));
  });

  it('rejects a file that is not JSON', () => {
    const p = file('{ "subnet": "10.1.0.0/16", }');
    assert.throws(() => loadConfig({ env: {}, configFile: p }), invalid(new RegExp(`^config file ${p}: not valid JSON`)));
  });

  it('rejects a gateway outside the subnet, or on its network or broadcast address', () => {
    for (const gateway of ['10.1.0.1', '10.166.0.0', '10.166.255.255']) {
      assert.throws(
        () => loadConfig({ env: {}, configFile: file({}), flags: { gateway }, resolvConfFiles: [resolvConf] }),
        invalid(new RegExp(`key "gateway": ${gateway.replace(/\./g, '\\.')} is not a usable address of subnet 10\\.166\\.0\\.0/16`)),
        gateway,
      );
    }
    const ok = loadConfig({ env: {}, configFile: file({}), flags: { gateway: '10.166.255.254' }, resolvConfFiles: [resolvConf] });
    assert.equal(ok.gateway, '10.166.255.254');
  });
});

describe('policy and denial keys', () => {
  it('are read from the file', () => {
    const p = file({
      defaultPolicy: { mode: 'report', egress: { internet: false, allow: ['10.1.0.0/16:443/tcp'] }, group: 'ci' },
      allowMetadata: true,
      denyAction: 'drop',
      logGroup: 4242,
    });
    const c = loadConfig({ env: {}, configFile: p, resolvConfFiles: [resolvConf] });
    assert.deepEqual(c.defaultPolicy, { mode: 'report', egress: { internet: false, allow: ['10.1.0.0/16:443/tcp'] }, group: 'ci' });
    assert.equal(c.allowMetadata, true);
    assert.equal(c.denyAction, 'drop');
    assert.equal(c.logGroup, 4242);
  });

  it('the warm pool is off by default; refillBelow defaults to the size and never exceeds it', () => {
    const load = (o: Record<string, unknown>) => loadConfig({ env: {}, configFile: file(o), resolvConfFiles: [resolvConf] }).pool;
    assert.deepEqual(load({}), { size: 0, refillBelow: 0 });
    assert.deepEqual(load({ poolSize: 8 }), { size: 8, refillBelow: 8 });
    assert.deepEqual(load({ poolSize: 8, poolRefillBelow: 3 }), { size: 8, refillBelow: 3 });
    assert.deepEqual(load({ poolSize: 2, poolRefillBelow: 5 }), { size: 2, refillBelow: 2 });
    assert.equal(loadConfig({ env: { TOASTNET_POOL_SIZE: '4' }, configFile: file({}), resolvConfFiles: [resolvConf] }).pool.size, 4);
    assert.throws(() => load({ poolSize: -1 }), /poolSize/);
  });

  it('metrics are off by default; metricsListen is PORT (loopback) or IPV4:PORT', () => {
    const load = (o: Record<string, unknown>, env: NodeJS.ProcessEnv = {}) => loadConfig({ env, configFile: file(o), resolvConfFiles: [resolvConf] });
    assert.equal(load({}).metrics, undefined);
    assert.deepEqual(load({ metricsListen: '9464' }).metrics, { host: '127.0.0.1', port: 9464 });
    assert.deepEqual(load({ metricsListen: '0.0.0.0:9100' }).metrics, { host: '0.0.0.0', port: 9100 });
    assert.deepEqual(load({}, { TOASTNET_METRICS_LISTEN: '9465' }).metrics, { host: '127.0.0.1', port: 9465 });
    for (const bad of ['localhost:9464', '9464x', '99999', '0', '300.1.1.1:80']) {
      assert.throws(() => load({ metricsListen: bad }), (e: Error) => /metricsListen/.test(e.message), bad);
    }
  });

  it('logGroup defaults to a group derived from the instance name, 1000-60999', () => {
    const a = loadConfig({ env: {}, configFile: file({}), resolvConfFiles: [resolvConf] });
    const b = loadConfig({ env: {}, configFile: file({ instance: 'other' }), resolvConfFiles: [resolvConf] });
    assert.equal(a.logGroup, defaultLogGroup('toastnet'));
    assert.equal(b.logGroup, defaultLogGroup('other'));
    assert.notEqual(a.logGroup, b.logGroup, 'two instances side by side get different groups');
    for (const name of ['toastnet', 'other', 'a', 'x_1', 'abcdefghijklmnopqrstuvwx']) {
      const g = defaultLogGroup(name);
      assert.ok(Number.isInteger(g) && g >= 1000 && g <= 60999, `${name}: ${g}`);
      assert.equal(defaultLogGroup(name), g, 'stable');
    }
    // An explicit group wins over the derived one.
    assert.equal(loadConfig({ env: {}, configFile: file({ instance: 'other', logGroup: 7 }), resolvConfFiles: [resolvConf] }).logGroup, 7);
  });

  it('rejects bad values, naming the key (a nested one by its path)', () => {
    const bad: [object, RegExp][] = [
      [{ denyAction: 'ignore' }, /key "denyAction"/],
      [{ allowMetadata: 'yes' }, /key "allowMetadata"/],
      [{ logGroup: 0 }, /key "logGroup"/],
      [{ logGroup: 65536 }, /key "logGroup"/],
      [{ logGroup: 1.5 }, /key "logGroup"/],
      [{ defaultPolicy: { mode: 'audit' } }, /key "defaultPolicy\.mode"/],
      [{ defaultPolicy: { egress: { allow: ['10.0.0.0/8:0'] } } }, /key "defaultPolicy\.egress\.allow\.0".*bad port range/],
      [{ defaultPolicy: { egress: { internet: 'no' } } }, /key "defaultPolicy\.egress\.internet"/],
      [{ defaultPolicy: { inbound: { ports: [70000] } } }, /key "defaultPolicy\.inbound\.ports\.0"/],
      [{ defaultPolicy: 'open' }, /key "defaultPolicy"/],
    ];
    for (const [content, re] of bad) {
      const p = file(content);
      assert.throws(() => loadConfig({ env: {}, configFile: p, resolvConfFiles: [resolvConf] }), invalid(new RegExp(`^config file ${p}: ${re.source}`)), JSON.stringify(content));
    }
  });

  it('rejects an unknown key inside defaultPolicy', () => {
    const p = file({ defaultPolicy: { egress: { alow: ['10.0.0.0/8'] } } });
    assert.throws(() => loadConfig({ env: {}, configFile: p, resolvConfFiles: [resolvConf] }), invalid(/unknown key .*"alow"/));
  });

  it('the DNS policy keys are read from the file and can be set by flags', () => {
    const c = loadConfig({ env: {}, configFile: file({ dnsMinTtl: 30, dnsMaxTtl: 600, dnsRefuseWith: 'nxdomain' }), resolvConfFiles: [resolvConf] });
    assert.deepEqual([c.dnsMinTtl, c.dnsMaxTtl, c.dnsRefuseWith], [30, 600, 'nxdomain']);
    const f = loadConfig({ env: {}, configFile: file({ dnsMinTtl: 30, dnsRefuseWith: 'nxdomain' }), flags: { dnsMinTtl: 1, dnsRefuseWith: 'refused' }, resolvConfFiles: [resolvConf] });
    assert.deepEqual([f.dnsMinTtl, f.dnsMaxTtl, f.dnsRefuseWith], [1, 3600, 'refused'], 'flags win; unset keys keep their defaults');
    const edges = loadConfig({ env: {}, configFile: file({ dnsMinTtl: 86400, dnsMaxTtl: 604800 }), resolvConfFiles: [resolvConf] });
    assert.deepEqual([edges.dnsMinTtl, edges.dnsMaxTtl], [86400, 604800]);
  });

  it('rejects bad DNS policy values, naming the key', () => {
    const bad: [object, RegExp][] = [
      [{ dnsMinTtl: 0 }, /key "dnsMinTtl"/],
      [{ dnsMinTtl: 86401 }, /key "dnsMinTtl"/],
      [{ dnsMinTtl: 2.5 }, /key "dnsMinTtl"/],
      [{ dnsMinTtl: '5' }, /key "dnsMinTtl"/],
      [{ dnsMaxTtl: 0 }, /key "dnsMaxTtl"/],
      [{ dnsMaxTtl: 604801 }, /key "dnsMaxTtl"/],
      [{ dnsRefuseWith: 'servfail' }, /key "dnsRefuseWith"/],
      [{ dnsRefuseWith: 'REFUSED' }, /key "dnsRefuseWith"/],
      [{ defaultPolicy: { egress: { domains: ['not a name'] } } }, /key "defaultPolicy\.egress\.domains\.0"/],
      [{ defaultPolicy: { dns: { qps: 0 } } }, /key "defaultPolicy\.dns\.qps"/],
    ];
    for (const [content, re] of bad) {
      const p = file(content);
      assert.throws(() => loadConfig({ env: {}, configFile: p, resolvConfFiles: [resolvConf] }), invalid(new RegExp(`^config file ${p}: ${re.source}`)), JSON.stringify(content));
    }
  });

  it('the flags can set them too', () => {
    const c = loadConfig({ env: {}, configFile: file({ denyAction: 'drop' }), flags: { denyAction: 'reject', defaultPolicy: { inbound: { enabled: false } } }, resolvConfFiles: [resolvConf] });
    assert.equal(c.denyAction, 'reject');
    assert.deepEqual(c.defaultPolicy, { inbound: { enabled: false } });
  });
});

describe('resolve', () => {
  it('defaults the gateway to the first address of the subnet', () => {
    assert.equal(resolve(ConfigSchema.parse({ subnet: '192.168.40.0/24', dnsUpstreams: ['1.1.1.1'] }), []).gateway, '192.168.40.1');
    assert.equal(resolve(ConfigSchema.parse({ subnet: '172.20.0.8/29', dnsUpstreams: ['1.1.1.1'] }), []).gateway, '172.20.0.9');
  });

  it('keeps explicit upstreams and does not read resolv.conf for them', () => {
    const c = resolve(ConfigSchema.parse({ dnsUpstreams: ['1.1.1.1:5353'] }), [resolvConf]);
    assert.deepEqual(c.dnsUpstreams, ['1.1.1.1:5353']);
  });

  it('kernelConfigHash changes with subnet, gateway or instance only', () => {
    const base = resolve(ConfigSchema.parse({ dnsUpstreams: ['1.1.1.1'] }), []);
    const h = kernelConfigHash(base);
    assert.match(h, /^[0-9a-f]{16}$/);
    assert.equal(kernelConfigHash({ ...base, dnsTimeoutMs: 100, allowCidrs: ['10.0.0.0/8'] }), h);
    assert.notEqual(kernelConfigHash({ ...base, subnet: '10.167.0.0/16' }), h);
    assert.notEqual(kernelConfigHash({ ...base, gateway: '10.166.0.2' }), h);
    assert.notEqual(kernelConfigHash({ ...base, instance: 'other' }), h);
  });
});

describe('defaultUpstreams', () => {
  it('reads nameservers from the first file', () => {
    const p = file('# comment\nsearch example.com\nnameserver 192.0.2.1\nnameserver 2001:db8::1\n  nameserver 198.51.100.7  \noptions edns0\n');
    assert.deepEqual(defaultUpstreams([p]), ['192.0.2.1', '198.51.100.7']);
  });

  it('skips the 127.0.0.53 stub and falls back to the second file', () => {
    const stub = file('nameserver 127.0.0.53\noptions edns0 trust-ad\n');
    const real = file('nameserver 203.0.113.53\nnameserver 203.0.113.54\n');
    assert.deepEqual(defaultUpstreams([stub, real]), ['203.0.113.53', '203.0.113.54']);
  });

  it('skips any loopback or 0.0.0.0 but keeps the real servers of the same file', () => {
    const mixed = file('nameserver 127.0.0.1\nnameserver 0.0.0.0\nnameserver 192.0.2.9\n');
    const never = file('nameserver 203.0.113.1\n');
    assert.deepEqual(defaultUpstreams([mixed, never]), ['192.0.2.9']);
  });

  it('skips missing files and returns nothing when no file has a usable server', () => {
    const stub = file('nameserver 127.0.0.53\n');
    const real = file('nameserver 203.0.113.53\n');
    assert.deepEqual(defaultUpstreams([path.join(dir, 'missing'), real]), ['203.0.113.53']);
    assert.deepEqual(defaultUpstreams([stub, path.join(dir, 'missing')]), []);
    assert.deepEqual(defaultUpstreams([]), []);
  });

  it('loadConfig uses them when dnsUpstreams is not configured', () => {
    const stub = file('nameserver 127.0.0.53\n');
    const real = file('nameserver 203.0.113.53\n');
    assert.deepEqual(loadConfig({ env: {}, configFile: file({}), resolvConfFiles: [stub, real] }).dnsUpstreams, ['203.0.113.53']);
  });
});
