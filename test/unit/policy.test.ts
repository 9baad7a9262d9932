import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ToastnetError } from '../../src/errors.js';
import { parseEgressRule } from '../../src/core/egress-rule.js';
import { DNS_LIMIT_DEFAULTS, DOMAIN_RE, defaultBurst, domainAllowed, mergePolicy, parsePortSpec, resolvePolicy, validatePolicy, type PolicyInput } from '../../src/core/policy.js';

const invalid = (re: RegExp) => (err: unknown) => {
  assert.ok(err instanceof ToastnetError, `not a ToastnetError: ${err}`);
  assert.equal(err.code, 'invalid_argument');
  assert.match(err.message, re);
  return true;
};

const full: PolicyInput = {
  mode: 'report',
  egress: { internet: false, allow: ['172.16.5.5:5432/tcp', '10.0.0.0/8'], deny: ['10.1.0.0/16', '192.0.2.1/udp'], domains: ['PyPI.org', '*.GitHubUserContent.com.'] },
  dns: { qps: 2.5, burst: 10, maxFailuresPerMinute: 1, maxNameLength: 100, maxLabelLength: 20 },
  group: { name: 'ci', ports: [8080, '9000-9100/udp', '22/tcp', '7000'] },
  inbound: { enabled: true, ports: ['8080/tcp'] },
  limits: {
    egressRate: '10mbit', egressBurst: '256KiB', ingressRate: 2_000_000, ingressBurst: 300_000,
    newConnsPerSecond: 100, newConnsBurst: 300, maxConnections: 512, packetsPerSecond: 5000, packetsBurst: 1000,
    egressBytes: '10GB', ingressBytes: '1GiB',
  },
};

describe('validatePolicy', () => {
  it('accepts a complete document and returns it unchanged', () => {
    assert.deepEqual(validatePolicy(structuredClone(full)), full);
    assert.deepEqual(validatePolicy({ mode: 'enforce', group: 'web', inbound: { enabled: false } }), { mode: 'enforce', group: 'web', inbound: { enabled: false } });
  });

  it('an absent or empty document is the empty policy', () => {
    assert.deepEqual(validatePolicy({}), {});
    assert.deepEqual(validatePolicy(undefined), {});
    assert.deepEqual(validatePolicy(null), {});
  });

  it('rejects unknown fields, naming them with their path', () => {
    const cases: [unknown, RegExp][] = [
      [{ egres: {} }, /^policy: unknown field "egres"$/],
      [{ egress: { alow: [] } }, /^policy: unknown field "egress\.alow"$/],
      [{ egress: { alow: [], deni: [] } }, /^policy: unknown field "egress\.alow", "egress\.deni"$/],
      [{ inbound: { port: [22] } }, /^policy: unknown field "inbound\.port"$/],
      [{ group: { name: 'g', port: [22] } }, /^policy: unknown field "group\.port"$/],
      [{ mode: 'report', extra: 1 }, /^policy: unknown field "extra"$/],
    ];
    for (const [doc, re] of cases) assert.throws(() => validatePolicy(doc), invalid(re), JSON.stringify(doc));
  });

  it('names the source it was given', () => {
    assert.throws(() => validatePolicy({ egres: {} }, 'create --policy x.json'), invalid(/^create --policy x\.json: unknown field "egres"$/));
    assert.throws(() => validatePolicy({ mode: 'x' }, 'PUT'), invalid(/^PUT: field "mode"/));
  });

  it('rejects values of the wrong type, naming the field', () => {
    const cases: [unknown, RegExp][] = [
      [{ mode: 'audit' }, /^policy: field "mode": .*enforce.*report/],
      [{ egress: { internet: 'no' } }, /^policy: field "egress\.internet": .*boolean/],
      [{ egress: { allow: '10.0.0.0/8' } }, /^policy: field "egress\.allow": .*array/],
      [{ egress: { deny: [7] } }, /^policy: field "egress\.deny\.0": .*string/],
      [{ egress: 'open' }, /^policy: field "egress"/],
      [{ group: 5 }, /^policy: field "group"/],
      // group is a union (string or object): zod reports the union, not the inner field.
      [{ group: { ports: [22] } }, /^policy: field "group"/],
      [{ inbound: { enabled: 'yes' } }, /^policy: field "inbound\.enabled": .*boolean/],
      [{ inbound: { ports: 22 } }, /^policy: field "inbound\.ports": .*array/],
      [[], /^policy: .*object/],
      ['enforce', /^policy: .*object/],
    ];
    for (const [doc, re] of cases) assert.throws(() => validatePolicy(doc), invalid(re), JSON.stringify(doc));
  });

  it('rejects bad allow/deny entries, naming the list and index and saying what is wrong', () => {
    const cases: [unknown, RegExp][] = [
      [{ egress: { allow: ['10.0.0.0/8', 'banana'] } }, /^policy: field "egress\.allow\.1": "banana" is not CIDR\[:port\[-port\]\]\[\/tcp\|udp\|icmp\]$/],
      [{ egress: { deny: ['10.0.0.1/8'] } }, /^policy: field "egress\.deny\.0": .*host bits.*10\.0\.0\.0\/8/],
      [{ egress: { allow: ['10.0.0.0/8:80/icmp'] } }, /^policy: field "egress\.allow\.0": .*icmp has no ports/],
      [{ egress: { allow: ['10.0.0.0/8:0'] } }, /^policy: field "egress\.allow\.0": .*bad port range/],
      [{ egress: { deny: ['10.0.0.0/8:90-80/tcp'] } }, /^policy: field "egress\.deny\.0": .*bad port range/],
      [{ egress: { allow: ['10.0.0.0/33'] } }, /^policy: field "egress\.allow\.0": .*prefix length 33/],
    ];
    for (const [doc, re] of cases) assert.throws(() => validatePolicy(doc), invalid(re), JSON.stringify(doc));
  });

  it('rejects bad port specs in group and inbound, naming the index', () => {
    const cases: [unknown, RegExp][] = [
      [{ inbound: { ports: ['abc'] } }, /^policy: field "inbound\.ports\.0": "abc" is not PORT\[-PORT\]\[\/tcp\|udp\]$/],
      [{ inbound: { ports: ['0', '80-70', '99999'] } }, /^policy: field "inbound\.ports\.0"/],
      [{ inbound: { ports: ['80-70'] } }, /^policy: field "inbound\.ports\.0": "80-70" has a bad port range$/],
      [{ inbound: { ports: [22, '80/icmp'] } }, /^policy: field "inbound\.ports\.1"/],
      [{ inbound: { ports: [0] } }, /^policy: field "inbound\.ports\.0"/],
      [{ inbound: { ports: [65536] } }, /^policy: field "inbound\.ports\.0"/],
      [{ inbound: { ports: [80.5] } }, /^policy: field "inbound\.ports\.0"/],
      [{ group: { name: 'g', ports: ['80-'] } }, /^policy: field "group\.ports\.0": "80-" is not PORT\[-PORT\]\[\/tcp\|udp\]$/],
      [{ group: { name: 'g', ports: [8080, 0] } }, /^policy: field "group\.ports\.1"/],
      // A wrong type inside the group union: zod reports the union ("group"), not the inner field.
      [{ group: { name: 'g', ports: [true] } }, /^policy: field "group"/],
    ];
    for (const [doc, re] of cases) assert.throws(() => validatePolicy(doc), invalid(re), JSON.stringify(doc));
  });

  it('accepts egress.domains names and wildcards, and the dns limits', () => {
    const doc = { egress: { domains: ['pypi.org', '*.githubusercontent.com', 'files.pythonhosted.org.', 'localhost', '_acme.example.com', 'xn--bcher-kva.example'] }, dns: { qps: 0.5, burst: 1, maxFailuresPerMinute: 1 } };
    assert.deepEqual(validatePolicy(structuredClone(doc)), doc);
    assert.deepEqual(validatePolicy({ dns: {} }), { dns: {} });
    const max = { qps: 100000, burst: 100000, maxFailuresPerMinute: 100000, maxNameLength: 253, maxLabelLength: 63 };
    assert.deepEqual(validatePolicy({ dns: { ...max } }).dns, max);
    assert.deepEqual(validatePolicy({ dns: { maxNameLength: 1, maxLabelLength: 1 } }).dns, { maxNameLength: 1, maxLabelLength: 1 });
  });

  it('rejects malformed egress.domains entries, naming the index', () => {
    const long = `${'a'.repeat(63)}.`.repeat(4) + 'com'; // 259 characters
    for (const name of ['', '*', '*.', 'a..b', '.example.com', 'exa mple.com', '-lead.example.com', 'trail-.example.com', 'a.*.example.com', '**.example.com', '*example.com', 'example.com/path', 'https://example.com', `${'a'.repeat(64)}.com`, long, 'ex*ample.com', 'example.com..']) {
      assert.throws(() => validatePolicy({ egress: { domains: ['ok.example', name] } }), invalid(/^policy: field "egress\.domains\.1": want a name like pypi\.org or \*\.githubusercontent\.com$/), JSON.stringify(name));
    }
    assert.throws(() => validatePolicy({ egress: { domains: 'pypi.org' } }), invalid(/^policy: field "egress\.domains": .*array/));
    assert.throws(() => validatePolicy({ egress: { domains: [7] } }), invalid(/^policy: field "egress\.domains\.0"/));
  });

  it('DOMAIN_RE: labels of 1-63 characters, at most 253 in all, an optional leading "*." and trailing dot', () => {
    for (const ok of ['a', 'a.b', `${'a'.repeat(63)}.com`, '*.a', '*.co.uk', 'A-1.b_2.C', 'example.com.', `${'a.'.repeat(126)}b`]) assert.match(ok, DOMAIN_RE, ok);
    for (const bad of [`${'a'.repeat(64)}.com`, `${'a.'.repeat(127)}b`, '*.*.a', 'a.*', 'a b', 'ä.com', 'a.b-', '*']) assert.doesNotMatch(bad, DOMAIN_RE, bad);
    assert.equal(`${'a.'.repeat(126)}b`.length, 253);
  });

  it('accepts limits as strings or numbers and returns them unchanged', () => {
    const limits = { egressRate: '10mbit', egressBurst: '1MiB', ingressRate: 125000, ingressBurst: 70000, egressBytes: '10GB', ingressBytes: 1, newConnsPerSecond: 1, newConnsBurst: 1_000_000, maxConnections: 1_000_000, packetsPerSecond: 100_000_000, packetsBurst: 1 };
    assert.deepEqual(validatePolicy({ limits: structuredClone(limits) }), { limits });
    for (const egressRate of ['10mbit', '10Mbit', '800kbit/s', '1.5gbit', '10Mibit', '5MB/s', '64KiB/s', '5 MB/s', 1, 1e9]) {
      assert.deepEqual(validatePolicy({ limits: { egressRate } }), { limits: { egressRate } }, String(egressRate));
    }
    assert.deepEqual(validatePolicy({ limits: {} }), { limits: {} });
  });

  it('refuses a burst without its rate', () => {
    for (const [burst, rate] of [['egressBurst', 'egressRate'], ['ingressBurst', 'ingressRate'], ['newConnsBurst', 'newConnsPerSecond'], ['packetsBurst', 'packetsPerSecond']]) {
      assert.throws(() => resolvePolicy({ limits: { [burst]: 1000 } }), new RegExp(`^ToastnetError: policy: field "limits\\.${burst}" needs limits\\.${rate}$`));
    }
  });

  it('rejects bad limits, naming the field', () => {
    const cases: [unknown, RegExp][] = [
      [{ limits: { egressRate: 'fast' } }, /^policy: field "limits\.egressRate": "fast" is not a rate like "10mbit", "5MB\/s" or a number of bytes per second$/],
      [{ limits: { egressRate: '10mbps' } }, /^policy: field "limits\.egressRate": "10mbps" is ambiguous: write bits as "10mbit" or bytes as "10MB\/s"$/],
      [{ limits: { ingressRate: '10Mbps' } }, /^policy: field "limits\.ingressRate": "10Mbps" is ambiguous/],
      [{ limits: { egressRate: 0 } }, /^policy: field "limits\.egressRate": 0 is not a positive amount$/],
      [{ limits: { egressRate: -5 } }, /^policy: field "limits\.egressRate": -5 is not a positive amount$/],
      [{ limits: { egressRate: '0mbit' } }, /^policy: field "limits\.egressRate": "0mbit" is not a positive amount$/],
      [{ limits: { egressRate: '10mb/s' } }, /^policy: field "limits\.egressRate": "10mb\/s" is not a rate/],
      [{ limits: { egressRate: true } }, /^policy: field "limits\.egressRate"/],
      [{ limits: { egressBurst: '10mb' } }, /^policy: field "limits\.egressBurst": "10mb" is not a size like "10MB", "1GiB" or a number of bytes$/],
      [{ limits: { ingressBurst: 0 } }, /^policy: field "limits\.ingressBurst": 0 is not a positive amount$/],
      [{ limits: { egressBytes: '1 gig' } }, /^policy: field "limits\.egressBytes": "1 gig" is not a size/],
      [{ limits: { ingressBytes: '5MB/s' } }, /^policy: field "limits\.ingressBytes": "5MB\/s" is not a size/],
      [{ limits: { ingressBytes: -1 } }, /^policy: field "limits\.ingressBytes": -1 is not a positive amount$/],
      [{ limits: { newConnsPerSecond: 0 } }, /^policy: field "limits\.newConnsPerSecond"/],
      [{ limits: { newConnsPerSecond: 1.5 } }, /^policy: field "limits\.newConnsPerSecond"/],
      [{ limits: { newConnsPerSecond: '10' } }, /^policy: field "limits\.newConnsPerSecond": .*number/],
      [{ limits: { newConnsBurst: 1_000_001 } }, /^policy: field "limits\.newConnsBurst"/],
      [{ limits: { maxConnections: 0 } }, /^policy: field "limits\.maxConnections"/],
      [{ limits: { maxConnections: 1_000_001 } }, /^policy: field "limits\.maxConnections"/],
      [{ limits: { packetsPerSecond: 100_000_001 } }, /^policy: field "limits\.packetsPerSecond"/],
      [{ limits: { packetsBurst: -1 } }, /^policy: field "limits\.packetsBurst"/],
      [{ limits: 5 }, /^policy: field "limits"/],
      [{ limits: { bandwidth: '10mbit' } }, /^policy: unknown field "limits\.bandwidth"$/],
    ];
    for (const [doc, re] of cases) assert.throws(() => validatePolicy(doc), invalid(re), JSON.stringify(doc));
  });

  it('rejects bad dns limits and unknown dns fields, naming them', () => {
    const cases: [unknown, RegExp][] = [
      [{ dns: { qps: 0 } }, /^policy: field "dns\.qps"/],
      [{ dns: { qps: -1 } }, /^policy: field "dns\.qps"/],
      [{ dns: { qps: 100001 } }, /^policy: field "dns\.qps"/],
      [{ dns: { qps: '5' } }, /^policy: field "dns\.qps": .*number/],
      [{ dns: { burst: 0 } }, /^policy: field "dns\.burst"/],
      [{ dns: { burst: 1.5 } }, /^policy: field "dns\.burst"/],
      [{ dns: { burst: 100001 } }, /^policy: field "dns\.burst"/],
      [{ dns: { maxFailuresPerMinute: -1 } }, /^policy: field "dns\.maxFailuresPerMinute"/],
      [{ dns: { maxFailuresPerMinute: 2.5 } }, /^policy: field "dns\.maxFailuresPerMinute"/],
      [{ dns: { maxNameLength: 0 } }, /^policy: field "dns\.maxNameLength"/],
      [{ dns: { maxNameLength: 254 } }, /^policy: field "dns\.maxNameLength"/],
      [{ dns: { maxNameLength: 10.5 } }, /^policy: field "dns\.maxNameLength"/],
      [{ dns: { maxLabelLength: 0 } }, /^policy: field "dns\.maxLabelLength"/],
      [{ dns: { maxLabelLength: 64 } }, /^policy: field "dns\.maxLabelLength"/],
      [{ dns: 50 }, /^policy: field "dns"/],
      [{ dns: { rate: 5 } }, /^policy: unknown field "dns\.rate"$/],
      [{ egress: { domain: ['pypi.org'] } }, /^policy: unknown field "egress\.domain"$/],
    ];
    for (const [doc, re] of cases) assert.throws(() => validatePolicy(doc), invalid(re), JSON.stringify(doc));
  });
});

describe('mergePolicy', () => {
  const defaults: PolicyInput = {
    mode: 'report',
    egress: { internet: false, allow: ['10.0.0.0/8'], deny: ['192.0.2.0/24'] },
    group: { name: 'base', ports: [22] },
    inbound: { enabled: true, ports: [8080] },
    limits: { egressRate: '10mbit', maxConnections: 100, egressBytes: '1GB' },
  };

  it('keeps every default the sandbox does not set', () => {
    const m = mergePolicy(defaults, {});
    assert.equal(m.mode, 'report');
    assert.deepEqual(m.egress, defaults.egress);
    assert.deepEqual(m.group, defaults.group);
    assert.deepEqual(m.inbound, defaults.inbound);
    assert.deepEqual(m.limits, defaults.limits);
  });

  it('a rate the sandbox sets comes with its own burst, never the default\'s', () => {
    const d: PolicyInput = { limits: { egressRate: '1mbit', egressBurst: 2000, newConnsPerSecond: 5, newConnsBurst: 5 } };
    assert.deepEqual(mergePolicy(d, { limits: { egressRate: '100mbit' } }).limits, { egressRate: '100mbit', newConnsPerSecond: 5, newConnsBurst: 5 });
    assert.equal(resolvePolicy(mergePolicy(d, { limits: { egressRate: '100mbit' } })).limits.egressBurst, defaultBurst(12_500_000));
    assert.deepEqual(mergePolicy(d, { limits: { egressRate: '100mbit', egressBurst: '1MB' } }).limits?.egressBurst, '1MB');
    assert.deepEqual(mergePolicy(d, { limits: { maxConnections: 3 } }).limits?.egressBurst, 2000, 'untouched rates keep their bursts');
  });

  it('limits are merged field by field', () => {
    const m = mergePolicy(defaults, { limits: { maxConnections: 20, ingressRate: '5MB/s' } });
    assert.deepEqual(m.limits, { egressRate: '10mbit', maxConnections: 20, egressBytes: '1GB', ingressRate: '5MB/s' });
    assert.deepEqual(resolvePolicy(m).limits, {
      egressRate: 1_250_000, egressBurst: 125_000, maxConnections: 20, egressBytes: 1_000_000_000, ingressRate: 5_000_000, ingressBurst: 500_000,
    });
    assert.deepEqual(mergePolicy(defaults, { limits: {} }).limits, defaults.limits);
    assert.deepEqual(mergePolicy({}, { limits: { packetsPerSecond: 9 } }).limits, { packetsPerSecond: 9 });
    assert.deepEqual(mergePolicy({ limits: { packetsPerSecond: 9 } }, { limits: { packetsPerSecond: 90 } }).limits, { packetsPerSecond: 90 });
    assert.deepEqual(resolvePolicy(mergePolicy({}, {})).limits, {});
  });

  it('a sandbox field replaces the default\'s, field by field', () => {
    const m = mergePolicy(defaults, { mode: 'enforce', group: 'mine' });
    assert.equal(m.mode, 'enforce');
    assert.equal(m.group, 'mine', 'a group string replaces a group object');
    assert.deepEqual(m.egress, defaults.egress, 'untouched');
    assert.deepEqual(m.inbound, defaults.inbound, 'untouched');
    assert.deepEqual(mergePolicy({ group: 'a' }, { group: { name: 'b' } }).group, { name: 'b' }, 'an object replaces a string, whole');
  });

  it('lists are replaced, not appended (a sandbox can narrow a default)', () => {
    const m = mergePolicy(defaults, { egress: { allow: ['10.1.0.0/16:443/tcp'], deny: [] }, inbound: { ports: ['22/tcp'] }, group: { name: 'base' } });
    assert.deepEqual(m.egress!.allow, ['10.1.0.0/16:443/tcp']);
    assert.deepEqual(m.egress!.deny, [], 'an empty list clears the default');
    assert.deepEqual(m.inbound!.ports, ['22/tcp']);
    assert.deepEqual(m.group, { name: 'base' }, 'no ports inherited from the default group');
  });

  it('egress and inbound are merged key by key', () => {
    const m = mergePolicy(defaults, { egress: { internet: true }, inbound: { enabled: false } });
    assert.deepEqual(m.egress, { internet: true, allow: ['10.0.0.0/8'], deny: ['192.0.2.0/24'] });
    assert.deepEqual(m.inbound, { enabled: false, ports: [8080] });
    const n = mergePolicy({ egress: { internet: false } }, { egress: { allow: ['10.2.0.0/16'] } });
    assert.deepEqual(n.egress, { internet: false, allow: ['10.2.0.0/16'] });
  });

  it('dns is merged key by key; egress.domains is replaced whole, and inherited when the sandbox does not set it', () => {
    const d: PolicyInput = { egress: { internet: true, domains: ['pypi.org', '*.example.com'] }, dns: { qps: 5, burst: 20 } };
    const m = mergePolicy(d, { dns: { burst: 7, maxFailuresPerMinute: 3 }, egress: { domains: ['github.com'] } });
    assert.deepEqual(m.dns, { qps: 5, burst: 7, maxFailuresPerMinute: 3 });
    assert.deepEqual(m.egress, { internet: true, domains: ['github.com'] }, 'a list replaces the default\'s, not appended');
    assert.deepEqual(resolvePolicy(m).dns, { qps: 5, burst: 7, maxFailuresPerMinute: 3, maxNameLength: 253, maxLabelLength: 63 });
    const inherit = mergePolicy(d, { egress: { internet: false } });
    assert.deepEqual(inherit.egress, { internet: false, domains: ['pypi.org', '*.example.com'] });
    assert.deepEqual(inherit.dns, { qps: 5, burst: 20 });
    assert.deepEqual(resolvePolicy(inherit).domains, ['pypi.org', '*.example.com']);
    assert.deepEqual(resolvePolicy(inherit).dns, { qps: 5, burst: 20, maxFailuresPerMinute: 120, maxNameLength: 253, maxLabelLength: 63 });
    assert.deepEqual(mergePolicy(d, { egress: { domains: [] } }).egress!.domains, [], 'an empty list narrows to no name');
    assert.deepEqual(mergePolicy({}, { dns: { qps: 1 } }).dns, { qps: 1 });
    assert.deepEqual(mergePolicy({ dns: { qps: 1 } }, {}).dns, { qps: 1 });
  });

  it('over empty defaults the sandbox\'s own policy is what resolves', () => {
    assert.deepEqual(resolvePolicy(mergePolicy({}, full)), resolvePolicy(full));
    assert.deepEqual(resolvePolicy(mergePolicy(full, {})), resolvePolicy(full));
  });

  it('does not modify its inputs', () => {
    const d = structuredClone(defaults);
    const own: PolicyInput = { egress: { allow: ['10.3.0.0/16'] }, inbound: { enabled: false }, limits: { maxConnections: 5 } };
    const o = structuredClone(own);
    mergePolicy(d, o);
    assert.deepEqual(d, defaults);
    assert.deepEqual(o, own);
  });
});

describe('resolvePolicy', () => {
  it('defaults: enforce, internet on, nothing allowed or denied, no group, inbound open on every port', () => {
    assert.deepEqual(resolvePolicy({}), {
      mode: 'enforce', internet: true, allow: [], deny: [], inbound: { enabled: true },
      dns: { qps: 50, burst: 100, maxFailuresPerMinute: 120, maxNameLength: 253, maxLabelLength: 63 },
      limits: {},
    });
    assert.deepEqual(resolvePolicy({ egress: {}, inbound: {}, dns: {}, limits: {} }), resolvePolicy({}));
    assert.ok(!('group' in resolvePolicy({})));
    assert.ok(!('ports' in resolvePolicy({}).inbound));
    assert.ok(!('domains' in resolvePolicy({})), 'no domain allow-list unless egress.domains is set');
    assert.ok(!('domains' in resolvePolicy({ egress: { internet: true, allow: ['10.0.0.0/8'] } })));
  });

  it('resolves every field', () => {
    const p = resolvePolicy(full);
    assert.equal(p.mode, 'report');
    assert.equal(p.internet, false);
    assert.deepEqual(p.allow, [parseEgressRule('172.16.5.5:5432/tcp'), parseEgressRule('10.0.0.0/8')]);
    assert.deepEqual(p.deny, [parseEgressRule('10.1.0.0/16'), parseEgressRule('192.0.2.1/udp')]);
    assert.deepEqual(p.group, {
      name: 'ci',
      ports: [{ from: 8080, to: 8080 }, { from: 9000, to: 9100, proto: 'udp' }, { from: 22, to: 22, proto: 'tcp' }, { from: 7000, to: 7000 }],
    });
    assert.deepEqual(p.inbound, { enabled: true, ports: [{ from: 8080, to: 8080, proto: 'tcp' }] });
    assert.deepEqual(p.domains, ['pypi.org', '*.githubusercontent.com']);
    assert.deepEqual(p.dns, { qps: 2.5, burst: 10, maxFailuresPerMinute: 1, maxNameLength: 100, maxLabelLength: 20 });
    assert.deepEqual(p.limits, {
      egressRate: 1_250_000, egressBurst: 262_144, ingressRate: 2_000_000, ingressBurst: 300_000,
      newConnsPerSecond: 100, newConnsBurst: 300, maxConnections: 512, packetsPerSecond: 5000, packetsBurst: 1000,
      egressBytes: 10_000_000_000, ingressBytes: 1_073_741_824,
    });
  });

  it('egress.domains: lower-cased, trailing dot removed, order and wildcards kept; an empty list stays an (empty) allow-list', () => {
    assert.deepEqual(resolvePolicy({ egress: { domains: ['Example.COM.', '*.Files.Example.org', 'a_b.example.net'] } }).domains, ['example.com', '*.files.example.org', 'a_b.example.net']);
    assert.deepEqual(resolvePolicy({ egress: { domains: [] } }).domains, [], 'no name allowed is not the same as no allow-list');
    // The other egress fields keep their defaults.
    const p = resolvePolicy({ egress: { domains: ['pypi.org'] } });
    assert.equal(p.internet, true);
    assert.deepEqual(p.allow, []);
  });

  it('dns: each limit the policy does not set comes from DNS_LIMIT_DEFAULTS', () => {
    const d = { qps: 50, burst: 100, maxFailuresPerMinute: 120, maxNameLength: 253, maxLabelLength: 63 };
    assert.deepEqual(DNS_LIMIT_DEFAULTS, d);
    assert.deepEqual(resolvePolicy({ dns: { qps: 7 } }).dns, { ...d, qps: 7 });
    assert.deepEqual(resolvePolicy({ dns: { burst: 3 } }).dns, { ...d, burst: 3 });
    assert.throws(() => validatePolicy({ dns: { maxFailuresPerMinute: 0 } }), /dns\.maxFailuresPerMinute/, '0 would refuse every query');
    assert.deepEqual(resolvePolicy({ dns: { maxNameLength: 64 } }).dns, { ...d, maxNameLength: 64 });
    assert.deepEqual(resolvePolicy({ dns: { maxLabelLength: 1 } }).dns, { ...d, maxLabelLength: 1 });
  });

  it('limits: rates and sizes as strings or numbers of bytes (per second); only the limits set are present', () => {
    const l = (limits: PolicyInput['limits']) => resolvePolicy({ limits }).limits;
    assert.deepEqual(l({ egressRate: '80mbit', egressBurst: '2MB' }), { egressRate: 10_000_000, egressBurst: 2_000_000 });
    assert.deepEqual(l({ egressRate: 5000, egressBurst: 100_000 }), { egressRate: 5000, egressBurst: 100_000 });
    assert.deepEqual(l({ ingressRate: '5MB/s', ingressBurst: '1MiB' }), { ingressRate: 5_000_000, ingressBurst: 1_048_576 });
    assert.deepEqual(l({ ingressRate: '64KiB/s', ingressBurst: 70_000 }), { ingressRate: 65_536, ingressBurst: 70_000 });
    assert.deepEqual(l({ egressBytes: '10GB', ingressBytes: 1500 }), { egressBytes: 10_000_000_000, ingressBytes: 1500 });
    assert.deepEqual(l({ egressBytes: '1GiB' }), { egressBytes: 1_073_741_824 });
    assert.deepEqual(l({ maxConnections: 64 }), { maxConnections: 64 });
    assert.deepEqual(l({ newConnsPerSecond: 20, newConnsBurst: 5 }), { newConnsPerSecond: 20, newConnsBurst: 5 });
    assert.deepEqual(l({ packetsPerSecond: 2000, packetsBurst: 50 }), { packetsPerSecond: 2000, packetsBurst: 50 });
    assert.deepEqual(l({}), {});
    assert.deepEqual(l(undefined), {});
  });

  it('limits: default bursts (bandwidth: 100 ms of the rate, at least 64 KiB; new connections: one second; packets: 100 ms, at least 100)', () => {
    const l = (limits: PolicyInput['limits']) => resolvePolicy({ limits }).limits;
    assert.equal(defaultBurst(1_250_000), 125_000);
    assert.equal(defaultBurst(125_000), 65_536);
    assert.equal(defaultBurst(655_361), 65_536);
    assert.equal(defaultBurst(655_365), 65_537, 'rounded');
    assert.deepEqual(l({ egressRate: '100mbit' }), { egressRate: 12_500_000, egressBurst: 1_250_000 });
    assert.deepEqual(l({ egressRate: '1mbit' }), { egressRate: 125_000, egressBurst: 65_536 });
    assert.deepEqual(l({ ingressRate: 5_000_000 }), { ingressRate: 5_000_000, ingressBurst: 500_000 });
    assert.deepEqual(l({ ingressRate: '8kbit' }), { ingressRate: 1000, ingressBurst: 65_536 });
    assert.deepEqual(l({ newConnsPerSecond: 20 }), { newConnsPerSecond: 20, newConnsBurst: 20 });
    assert.deepEqual(l({ packetsPerSecond: 500 }), { packetsPerSecond: 500, packetsBurst: 100 });
    assert.deepEqual(l({ packetsPerSecond: 10_000 }), { packetsPerSecond: 10_000, packetsBurst: 1000 });
    assert.deepEqual(l({ packetsPerSecond: 1005 }), { packetsPerSecond: 1005, packetsBurst: 101 });
    // One direction's burst does not leak into the other.
    assert.deepEqual(l({ egressRate: '100mbit', ingressRate: '1mbit', ingressBurst: '1MB' }), {
      egressRate: 12_500_000, egressBurst: 1_250_000, ingressRate: 125_000, ingressBurst: 1_000_000,
    });
  });

  it('limits: a bad value met by resolvePolicy is refused, naming the field', () => {
    assert.throws(() => resolvePolicy({ limits: { egressRate: '10mbps' } }), invalid(/^limits\.egressRate: "10mbps" is ambiguous/));
    assert.throws(() => resolvePolicy({ limits: { ingressRate: 'fast' } }), invalid(/^limits\.ingressRate: "fast" is not a rate/));
    assert.throws(() => resolvePolicy({ limits: { egressRate: '1mbit', egressBurst: '1 lot' } }), invalid(/^limits\.egressBurst: "1 lot" is not a size/));
    assert.throws(() => resolvePolicy({ limits: { ingressBytes: 0 } }), invalid(/^limits\.ingressBytes: 0 is not a positive amount$/));
  });

  it('inbound.enabled false closes inbound; an empty ports list is kept (open on no port)', () => {
    assert.deepEqual(resolvePolicy({ inbound: { enabled: false } }).inbound, { enabled: false });
    assert.deepEqual(resolvePolicy({ inbound: { ports: [] } }).inbound, { enabled: true, ports: [] });
  });

  it('a group is a name or an object with a name and optional ports', () => {
    assert.deepEqual(resolvePolicy({ group: 'team-1.x_y' }).group, { name: 'team-1.x_y' });
    assert.deepEqual(resolvePolicy({ group: { name: 'team' } }).group, { name: 'team' });
    assert.ok(!('ports' in resolvePolicy({ group: { name: 'team' } }).group!));
    assert.deepEqual(resolvePolicy({ group: { name: 'team', ports: ['80-81/tcp'] } }).group, { name: 'team', ports: [{ from: 80, to: 81, proto: 'tcp' }] });
    assert.deepEqual(resolvePolicy({ group: 'a'.repeat(63) }).group, { name: 'a'.repeat(63) });
  });

  it('rejects a bad group name, naming the field', () => {
    for (const name of ['bad name', '', '-lead', '.dot', 'a'.repeat(64), 'x/y', 'ü']) {
      assert.throws(() => resolvePolicy({ group: name }), invalid(/^policy: field "group": .* is not a valid group name$/), JSON.stringify(name));
      assert.throws(() => resolvePolicy({ group: { name } }), invalid(/field "group"/), JSON.stringify(name));
    }
  });

  it('rejects port specs out of range, naming the list and index', () => {
    assert.throws(() => resolvePolicy({ inbound: { ports: [22, '0'] } }), invalid(/inbound\.ports\[1\]: "0" has a bad port range/));
    assert.throws(() => resolvePolicy({ inbound: { ports: ['99999'] } }), invalid(/inbound\.ports\[0\].*bad port range/));
    assert.throws(() => resolvePolicy({ group: { name: 'g', ports: ['90-80'] } }), invalid(/group\.ports\[0\].*bad port range/));
  });

  it('rejects bad entries, naming the list and index', () => {
    assert.throws(() => resolvePolicy({ egress: { allow: ['10.0.0.0/8', 'nope'] } }), invalid(/^egress\.allow\[1\]: "nope"/));
    assert.throws(() => resolvePolicy({ egress: { deny: ['10.0.0.1/8'] } }), invalid(/^egress\.deny\[0\]: .*host bits/));
  });
});

describe('parsePortSpec', () => {
  it('a number is one port, tcp and udp', () => {
    assert.deepEqual(parsePortSpec(8080, 'x'), { from: 8080, to: 8080 });
    assert.ok(!('proto' in parsePortSpec(8080, 'x')));
  });

  it('PORT, PORT-PORT, optionally /tcp or /udp', () => {
    const cases: [string, object][] = [
      ['8080', { from: 8080, to: 8080 }],
      ['1', { from: 1, to: 1 }],
      ['65535', { from: 65535, to: 65535 }],
      ['8080/tcp', { from: 8080, to: 8080, proto: 'tcp' }],
      ['53/udp', { from: 53, to: 53, proto: 'udp' }],
      ['9000-9100', { from: 9000, to: 9100 }],
      ['9000-9100/udp', { from: 9000, to: 9100, proto: 'udp' }],
      ['1-65535/tcp', { from: 1, to: 65535, proto: 'tcp' }],
      ['80-80', { from: 80, to: 80 }],
    ];
    for (const [s, want] of cases) assert.deepEqual(parsePortSpec(s, 'x'), want, s);
  });

  it('rejects malformed specs, naming where', () => {
    for (const s of ['abc', '80/icmp', '80/TCP', '80-', '-80', '1-2-3', ' 80', '80 ', '123456', '', 'tcp', '80:90']) {
      assert.throws(() => parsePortSpec(s, 'inbound.ports[3]'), invalid(new RegExp(`^inbound\\.ports\\[3\\]: ".*" is not PORT\\[-PORT\\]\\[/tcp\\|udp\\]$`)), JSON.stringify(s));
    }
  });

  it('rejects out-of-range or reversed ranges', () => {
    for (const s of ['0', '65536', '99999', '0-10', '10-65536', '90-80/tcp']) {
      assert.throws(() => parsePortSpec(s, 'w'), invalid(/^w: ".*" has a bad port range$/), s);
    }
  });
});

describe('domainAllowed', () => {
  const list = ['pypi.org', '*.githubusercontent.com', 'a.b.example'];

  it('an exact name matches only itself', () => {
    assert.equal(domainAllowed(list, 'pypi.org'), true);
    for (const n of ['www.pypi.org', 'pypi.org.evil.com', 'xpypi.org', 'pypi.or', 'pypi.orgg', 'org', 'b.example', 'x.a.b.example', '']) {
      assert.equal(domainAllowed(list, n), false, n);
    }
    assert.equal(domainAllowed(list, 'a.b.example'), true);
  });

  it('"*.x" matches names strictly under x, at any depth, but not x itself nor names merely ending in x', () => {
    for (const n of ['raw.githubusercontent.com', 'a.b.c.githubusercontent.com', 'x.githubusercontent.com']) assert.equal(domainAllowed(list, n), true, n);
    for (const n of ['githubusercontent.com', 'evilgithubusercontent.com', '.githubusercontent.com', 'githubusercontent.com.evil.org', 'com']) {
      assert.equal(domainAllowed(list, n), false, n);
    }
  });

  it('ignores the case and a trailing dot of the name', () => {
    assert.equal(domainAllowed(list, 'PyPI.ORG'), true);
    assert.equal(domainAllowed(list, 'pypi.org.'), true);
    assert.equal(domainAllowed(list, 'RAW.GitHubUserContent.com.'), true);
    assert.equal(domainAllowed(list, 'GitHubUserContent.com.'), false);
  });

  it('an empty list allows nothing; a list of resolvePolicy matches as written by the operator', () => {
    assert.equal(domainAllowed([], 'pypi.org'), false);
    const domains = resolvePolicy({ egress: { domains: ['PyPI.org.', '*.Example.COM'] } }).domains!;
    assert.equal(domainAllowed(domains, 'pypi.org'), true);
    assert.equal(domainAllowed(domains, 'cdn.example.com'), true);
    assert.equal(domainAllowed(domains, 'example.com'), false);
  });
});
