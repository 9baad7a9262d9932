import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import ipaddr from 'ipaddr.js';
import { prng, intIn } from './prng.js';
import { ToastnetError } from '../../src/errors.js';
import {
  cidrContains, cidrLast, cidrSize, cidrsOverlap, formatCidr, formatIPv4, maskOf, parseCidr, parseIPv4,
} from '../../src/core/ipv4.js';

const invalid = (re: RegExp) => (err: unknown) => {
  assert.ok(err instanceof ToastnetError, `not a ToastnetError: ${err}`);
  assert.equal(err.code, 'invalid_argument');
  assert.match(err.message, re);
  return true;
};

describe('parseIPv4 / formatIPv4', () => {
  it('parses to an unsigned 32-bit number', () => {
    assert.equal(parseIPv4('0.0.0.0'), 0);
    assert.equal(parseIPv4('10.166.0.1'), 0x0aa60001);
    assert.equal(parseIPv4('255.255.255.255'), 0xffffffff);
    assert.equal(parseIPv4('192.168.1.2'), 0xc0a80102);
    assert.ok(parseIPv4('200.0.0.0') > 0, 'high addresses must not come out negative');
  });

  it('round-trips', () => {
    for (const s of ['0.0.0.0', '1.2.3.4', '10.166.0.1', '127.0.0.1', '172.16.5.5', '192.0.2.255', '255.255.255.255', '128.0.0.0']) {
      assert.equal(formatIPv4(parseIPv4(s)), s);
    }
    for (const n of [0, 1, 0x7fffffff, 0x80000000, 0xdeadbeef, 0xffffffff]) {
      assert.equal(parseIPv4(formatIPv4(n)), n);
    }
  });

  it('rejects anything but four-part decimal', () => {
    for (const s of ['banana', '1.2.3', '1.2.3.4.5', '256.1.1.1', '1.2.3.4/32', '0x0a.0.0.1', '', ' 1.2.3.4', '::1']) {
      assert.throws(() => parseIPv4(s, 'gateway'), invalid(/^gateway: /), s);
    }
  });
});

describe('parseIPv4 accepts exactly what ipaddr.js calls a four-part decimal address', () => {
  const agrees = (s: string) => {
    const theirs = ipaddr.IPv4.isValidFourPartDecimal(s) ? ipaddr.IPv4.parse(s).toByteArray().reduce((n, b) => n * 256 + b, 0) : undefined;
    let ours: number | undefined;
    try {
      ours = parseIPv4(s);
    } catch {
      ours = undefined;
    }
    assert.equal(ours, theirs, JSON.stringify(s));
  };

  it('on edge cases', () => {
    for (const s of ['', '.', '...', '1.2.3', '1.2.3.4.', '.1.2.3.4', '1..2.3', '1.2.3.4.5', '01.2.3.4', '1.2.3.04', '0.0.0.0', '00.0.0.0',
      '256.1.1.1', '1.1.1.256', '255.255.255.255', '1.2.3.4 ', ' 1.2.3.4', '1.2.3.4\n', '0x1.2.3.4', '1.2.3.-4', '+1.2.3.4', '1.2.3.1e2',
      '1000.1.1.1', '1.2.3.\u0664', '１.2.3.4', '10.166.0.1', '999.999.999.999', '1.2.3.4/32']) agrees(s);
  });

  it('on random strings of digits and dots', () => {
    const rnd = prng(4);
    const alphabet = '0123456789.';
    for (let i = 0; i < 20_000; i++) {
      agrees(Array.from({ length: intIn(rnd, 0, 16) }, () => alphabet[intIn(rnd, 0, alphabet.length - 1)]).join(''));
    }
  });
});

describe('maskOf', () => {
  it('handles the extremes without shift wrap-around', () => {
    assert.equal(maskOf(0), 0);
    assert.equal(maskOf(32), 0xffffffff);
  });
  it('computes intermediate masks', () => {
    assert.equal(maskOf(1), 0x80000000);
    assert.equal(maskOf(8), 0xff000000);
    assert.equal(maskOf(16), 0xffff0000);
    assert.equal(maskOf(29), 0xfffffff8);
    assert.equal(maskOf(31), 0xfffffffe);
  });
});

describe('parseCidr', () => {
  it('parses network and prefix', () => {
    assert.deepEqual(parseCidr('10.166.0.0/16'), { network: 0x0aa60000, prefix: 16 });
    assert.deepEqual(parseCidr('0.0.0.0/0'), { network: 0, prefix: 0 });
    assert.deepEqual(parseCidr('224.0.0.0/4'), { network: 0xe0000000, prefix: 4 });
  });

  it('treats a bare address as /32', () => {
    assert.deepEqual(parseCidr('192.0.2.1'), { network: 0xc0000201, prefix: 32 });
    assert.deepEqual(parseCidr('192.0.2.1/32'), parseCidr('192.0.2.1'));
  });

  it('rejects host bits and names the network that was probably meant', () => {
    assert.throws(() => parseCidr('10.166.3.4/16', 'subnet'), invalid(/^subnet: .*host bits.*10\.166\.0\.0\/16/));
    assert.throws(() => parseCidr('192.168.1.130/25'), invalid(/did you mean 192\.168\.1\.128\/25\?/));
    assert.throws(() => parseCidr('0.0.0.1/0'), invalid(/did you mean 0\.0\.0\.0\/0\?/));
  });

  it('rejects a prefix longer than 32', () => {
    assert.throws(() => parseCidr('10.0.0.0/33'), invalid(/prefix length 33 > 32/));
    assert.throws(() => parseCidr('10.0.0.0/99'), invalid(/prefix length 99 > 32/));
  });

  it('rejects garbage', () => {
    for (const s of ['banana', '1.2.3', '1.2.3/8', '256.1.1.1/8', '10.0.0.0/', '10.0.0.0/8/8', '10.0.0.0/123', '', '10.0.0.0 /8', '-1.0.0.0/8']) {
      assert.throws(() => parseCidr(s, 'allowCidrs'), invalid(/^allowCidrs: /), JSON.stringify(s));
    }
  });

  it('formatCidr inverts parseCidr', () => {
    for (const s of ['10.166.0.0/16', '0.0.0.0/0', '192.0.2.1/32', '172.16.0.0/12']) assert.equal(formatCidr(parseCidr(s)), s);
  });
});

describe('CIDR arithmetic', () => {
  const c = parseCidr('10.166.0.0/16');

  it('cidrContains checks the prefix boundaries', () => {
    assert.equal(cidrContains(c, parseIPv4('10.166.0.0')), true);
    assert.equal(cidrContains(c, parseIPv4('10.166.255.255')), true);
    assert.equal(cidrContains(c, parseIPv4('10.167.0.0')), false);
    assert.equal(cidrContains(c, parseIPv4('10.165.255.255')), false);
    assert.equal(cidrContains(parseCidr('0.0.0.0/0'), 0xffffffff), true);
    assert.equal(cidrContains(parseCidr('255.255.255.255/32'), 0xffffffff), true);
    assert.equal(cidrContains(parseCidr('192.0.2.1/32'), parseIPv4('192.0.2.2')), false);
  });

  it('cidrSize and cidrLast', () => {
    assert.equal(cidrSize(c), 65536);
    assert.equal(formatIPv4(cidrLast(c)), '10.166.255.255');
    assert.equal(formatIPv4(cidrLast(parseCidr('192.168.1.0/29'))), '192.168.1.7');
    assert.equal(formatIPv4(cidrLast(parseCidr('192.0.2.1'))), '192.0.2.1');
    assert.equal(cidrLast(parseCidr('0.0.0.0/0')), 0xffffffff);
    assert.equal(cidrLast(parseCidr('240.0.0.0/4')), 0xffffffff);
  });

  it('cidrsOverlap is symmetric and detects containment', () => {
    const pairs: [string, string, boolean][] = [
      ['10.0.0.0/8', '10.166.0.0/16', true],
      ['10.166.0.0/16', '10.166.0.0/16', true],
      ['10.166.0.0/16', '10.167.0.0/16', false],
      ['192.168.0.0/16', '192.169.0.0/16', false],
      ['0.0.0.0/0', '203.0.113.7/32', true],
      ['172.16.0.0/12', '172.32.0.0/12', false],
      ['172.16.0.0/12', '172.31.255.255/32', true],
    ];
    for (const [a, b, want] of pairs) {
      assert.equal(cidrsOverlap(parseCidr(a), parseCidr(b)), want, `${a} vs ${b}`);
      assert.equal(cidrsOverlap(parseCidr(b), parseCidr(a)), want, `${b} vs ${a}`);
    }
  });
});
