import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ToastnetError } from '../../src/errors.js';
import { formatEgressRule, parseEgressRule } from '../../src/core/egress-rule.js';
import { parseIPv4 } from '../../src/core/ipv4.js';

const invalid = (re: RegExp) => (err: unknown) => {
  assert.ok(err instanceof ToastnetError, `not a ToastnetError: ${err}`);
  assert.equal(err.code, 'invalid_argument');
  assert.match(err.message, re);
  return true;
};

describe('parseEgressRule', () => {
  it('address, port and protocol', () => {
    assert.deepEqual(parseEgressRule('172.16.5.5:5432/tcp'), {
      cidr: { network: parseIPv4('172.16.5.5'), prefix: 32 },
      ports: { from: 5432, to: 5432 },
      proto: 'tcp',
      text: '172.16.5.5:5432/tcp',
    });
  });

  it('a bare prefix: every port, every protocol', () => {
    assert.deepEqual(parseEgressRule('10.0.0.0/8'), { cidr: { network: parseIPv4('10.0.0.0'), prefix: 8 }, text: '10.0.0.0/8' });
  });

  it('a prefix with a port range and no protocol', () => {
    const r = parseEgressRule('198.51.100.0/24:8000-8999');
    assert.deepEqual(r.cidr, { network: parseIPv4('198.51.100.0'), prefix: 24 });
    assert.deepEqual(r.ports, { from: 8000, to: 8999 });
    assert.equal(r.proto, undefined);
  });

  it('an address with only a protocol (the /udp is not read as a prefix length)', () => {
    const r = parseEgressRule('192.0.2.1/udp');
    assert.deepEqual(r.cidr, { network: parseIPv4('192.0.2.1'), prefix: 32 });
    assert.equal(r.proto, 'udp');
    assert.equal(r.ports, undefined);
  });

  it('prefix, port and protocol together; icmp without ports', () => {
    const r = parseEgressRule('203.0.113.0/24:443/tcp');
    assert.deepEqual(r.cidr, { network: parseIPv4('203.0.113.0'), prefix: 24 });
    assert.deepEqual(r.ports, { from: 443, to: 443 });
    assert.equal(r.proto, 'tcp');
    const i = parseEgressRule('8.8.8.8/icmp');
    assert.equal(i.proto, 'icmp');
    assert.equal(i.ports, undefined);
  });

  it('accepts the port extremes 1 and 65535', () => {
    assert.deepEqual(parseEgressRule('192.0.2.1:1-65535').ports, { from: 1, to: 65535 });
    assert.deepEqual(parseEgressRule('192.0.2.1:65535/udp').ports, { from: 65535, to: 65535 });
  });

  it('trims surrounding whitespace and keeps the trimmed text', () => {
    assert.equal(parseEgressRule('  10.0.0.0/8:22/tcp ').text, '10.0.0.0/8:22/tcp');
  });

  it('rejects bad ports', () => {
    for (const s of ['192.0.2.1:0', '192.0.2.1:70000', '192.0.2.1:0-10', '192.0.2.1:10-70000', '192.0.2.1:9000-8000/tcp', '192.0.2.1:65536/udp']) {
      assert.throws(() => parseEgressRule(s, 'allowCidrs'), invalid(/^allowCidrs: .*bad port range/), s);
    }
  });

  it('rejects icmp with ports', () => {
    assert.throws(() => parseEgressRule('192.0.2.1:7/icmp', 'denyCidrs'), invalid(/^denyCidrs: .*icmp has no ports/));
    assert.throws(() => parseEgressRule('10.0.0.0/8:1-2/icmp'), invalid(/icmp has no ports/));
  });

  it('rejects bad CIDRs and bad syntax', () => {
    assert.throws(() => parseEgressRule('10.1.0.0/8'), invalid(/host bits.*10\.0\.0\.0\/8/));
    assert.throws(() => parseEgressRule('10.0.0.0/33'), invalid(/> 32/));
    for (const s of ['banana', '1.2.3', '10.0.0.0/8/tcp/udp', '10.0.0.0/8:http', '10.0.0.0/8/sctp', '10.0.0.0/8:', '10.0.0.0/8:-5', '10.0.0.0/8:1-', '256.0.0.0/8']) {
      assert.throws(() => parseEgressRule(s), invalid(/^rule: /), s);
    }
  });
});

describe('formatEgressRule', () => {
  it('round-trips canonical entries', () => {
    for (const s of ['172.16.5.5/32:5432/tcp', '10.0.0.0/8', '198.51.100.0/24:8000-8999', '192.0.2.1/32/udp', '8.8.8.8/32/icmp', '0.0.0.0/0:53']) {
      assert.equal(formatEgressRule(parseEgressRule(s)), s);
    }
  });

  it('canonicalises a bare address to /32 and re-parses to the same rule', () => {
    for (const s of ['172.16.5.5:5432/tcp', '192.0.2.1/udp', '192.0.2.1:80-80']) {
      const r = parseEgressRule(s);
      const again = parseEgressRule(formatEgressRule(r));
      assert.deepEqual({ ...again, text: '' }, { ...r, text: '' }, s);
    }
    assert.equal(formatEgressRule(parseEgressRule('172.16.5.5:5432/tcp')), '172.16.5.5/32:5432/tcp');
    assert.equal(formatEgressRule(parseEgressRule('192.0.2.1:80-80')), '192.0.2.1/32:80');
  });
});
