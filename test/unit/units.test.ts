import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ToastnetError } from '../../src/errors.js';
import { formatBytes, formatRate, parseBytes, parseRate } from '../../src/core/units.js';
import { intIn, prng } from './prng.js';

const invalid = (re: RegExp) => (err: unknown) => {
  assert.ok(err instanceof ToastnetError, `not a ToastnetError: ${err}`);
  assert.equal(err.code, 'invalid_argument');
  assert.match(err.message, re);
  return true;
};

describe('parseRate', () => {
  it('a number is bytes per second (rounded to a whole byte)', () => {
    assert.equal(parseRate(1), 1);
    assert.equal(parseRate(125000), 125000);
    assert.equal(parseRate(1234.4), 1234);
    assert.equal(parseRate(1234.6), 1235);
  });

  it('"bit": bits per second, like tc (a byte is 8 bits)', () => {
    const cases: [string, number][] = [
      ['8bit', 1],
      ['800bit', 100],
      ['10kbit', 1250],
      ['800kbit', 100_000],
      ['10mbit', 1_250_000],
      ['10Mbit', 1_250_000],
      ['10MBIT', 1_250_000],
      ['1gbit', 125_000_000],
      ['2tbit', 250_000_000_000],
      ['1.5mbit', 187_500],
      ['10mbit/s', 1_250_000],
      ['10 mbit', 1_250_000],
      ['  10mbit  ', 1_250_000],
    ];
    for (const [s, want] of cases) assert.equal(parseRate(s), want, s);
  });

  it('"B/s": bytes per second', () => {
    const cases: [string, number][] = [
      ['1B/s', 1],
      ['1500B/s', 1500],
      ['5kB/s', 5000],
      ['5KB/s', 5000],
      ['5MB/s', 5_000_000],
      ['5mB/s', 5_000_000],
      ['2GB/s', 2_000_000_000],
      ['1TB/s', 1e12],
      ['2.5MB/s', 2_500_000],
      ['5 MB/s', 5_000_000],
    ];
    for (const [s, want] of cases) assert.equal(parseRate(s), want, s);
  });

  it('SI prefixes are powers of 1000, binary ones (Ki, Mi, Gi, Ti) powers of 1024', () => {
    assert.equal(parseRate('1KiB/s'), 1024);
    assert.equal(parseRate('64KiB/s'), 65_536);
    assert.equal(parseRate('1MiB/s'), 1_048_576);
    assert.equal(parseRate('1GiB/s'), 1_073_741_824);
    assert.equal(parseRate('1TiB/s'), 1024 ** 4);
    assert.equal(parseRate('8Kibit'), 1024);
    assert.equal(parseRate('8Mibit'), 1_048_576);
    assert.equal(parseRate('8gibit'), 1_073_741_824);
    assert.notEqual(parseRate('1MiB/s'), parseRate('1MB/s'));
    assert.equal(parseRate('8mbit'), parseRate('1MB/s'), 'bits are an eighth of bytes');
  });

  it('refuses the ambiguous "bps" (bytes to tc, bits to most readers), saying how to write either', () => {
    for (const s of ['10mbps', '10Mbps', '10MBPS', '100kbps', '1gbps', '10bps', '10 Mbps', '1.5mbps']) {
      assert.throws(() => parseRate(s, 'limits.egressRate'), invalid(/^limits\.egressRate: ".*" is ambiguous: write bits as "10mbit" or bytes as "10MB\/s"$/), s);
    }
  });

  it('refuses a lower-case "b/s" (bits or bytes?) and anything not a rate, naming the field', () => {
    for (const s of ['10mb/s', '5kb/s', 'fast', '', ' ', 'mbit', '10', '10M', '10MB', '10 megabit', '10mbit/h', '1e6bit', '-10mbit', '+10mbit', '10xbit', '10kibit/', '0x10bit', '10,5mbit', 'Infinity']) {
      assert.throws(() => parseRate(s, 'limits.ingressRate'), invalid(/^limits\.ingressRate: ".*" is not a rate like "10mbit", "5MB\/s" or a number of bytes per second$/), JSON.stringify(s));
    }
  });

  it('refuses zero, negative, non-finite and too large amounts, naming the field', () => {
    for (const v of [0, -1, -125000, 0.4, Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, 2 ** 60]) {
      assert.throws(() => parseRate(v, 'limits.egressRate'), invalid(/^limits\.egressRate: .* is not a positive amount$/), String(v));
    }
    for (const s of ['0mbit', '0MB/s', '0.0kbit', '1bit', '0B/s']) {
      assert.throws(() => parseRate(s, 'limits.egressRate'), invalid(new RegExp(`^limits\\.egressRate: "${s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}" is not a positive amount$`)), s);
    }
  });

  it('names "rate" when no field is given', () => {
    assert.throws(() => parseRate('nope'), invalid(/^rate: "nope"/));
    assert.throws(() => parseRate(0), invalid(/^rate: 0 is not a positive amount$/));
  });
});

describe('parseBytes', () => {
  it('a number is bytes', () => {
    assert.equal(parseBytes(1), 1);
    assert.equal(parseBytes(1_000_000), 1_000_000);
    assert.equal(parseBytes(99.5), 100);
  });

  it('"B" with SI or binary prefixes', () => {
    const cases: [string, number][] = [
      ['1B', 1],
      ['1500B', 1500],
      ['500kB', 500_000],
      ['500KB', 500_000],
      ['10MB', 10_000_000],
      ['10mB', 10_000_000],
      ['1GB', 1_000_000_000],
      ['2TB', 2e12],
      ['1.5kB', 1500],
      ['1KiB', 1024],
      ['64KiB', 65_536],
      ['1MiB', 1_048_576],
      ['1GiB', 1_073_741_824],
      ['1TiB', 1024 ** 4],
      ['10 MB', 10_000_000],
      ['  1GiB ', 1_073_741_824],
    ];
    for (const [s, want] of cases) assert.equal(parseBytes(s), want, s);
  });

  it('refuses bits, rates, a lower-case "b" and anything not a size, naming the field', () => {
    for (const s of ['10mb', '10Mb', '1gib', '10mbit', '5MB/s', '10', '10M', 'MB', '', 'lots', '-5MB', '1e3B', '10 megabytes', '10XB']) {
      assert.throws(() => parseBytes(s, 'limits.egressBytes'), invalid(/^limits\.egressBytes: ".*" is not a size like "10MB", "1GiB" or a number of bytes$/), JSON.stringify(s));
    }
  });

  it('refuses zero, negative, non-finite and too large amounts, naming the field', () => {
    for (const v of [0, -1, 0.2, Number.NaN, Number.POSITIVE_INFINITY, 2 ** 60]) {
      assert.throws(() => parseBytes(v, 'limits.ingressBytes'), invalid(/^limits\.ingressBytes: .* is not a positive amount$/), String(v));
    }
    assert.throws(() => parseBytes('0MB', 'limits.ingressBytes'), invalid(/^limits\.ingressBytes: "0MB" is not a positive amount$/));
    assert.throws(() => parseBytes('nope'), invalid(/^size: "nope"/));
  });

  it('a written size and its number agree (property)', () => {
    const rnd = prng(5);
    for (let i = 0; i < 200; i++) {
      const n = intIn(rnd, 1, 1_000_000);
      const [p, f] = [['', 1], ['k', 1e3], ['M', 1e6], ['G', 1e9], ['Ki', 1024], ['Mi', 1024 ** 2], ['Gi', 1024 ** 3]][intIn(rnd, 0, 6)] as [string, number];
      assert.equal(parseBytes(`${n}${p}B`), n * f, `${n}${p}B`);
      assert.equal(parseRate(`${n}${p}B/s`), n * f, `${n}${p}B/s`);
      if (n * f >= 4) assert.equal(parseRate(`${n}${p}bit`), Math.round((n * f) / 8), `${n}${p}bit`);
      else assert.throws(() => parseRate(`${n}${p}bit`), invalid(/is not a positive amount$/), 'under half a byte per second');
    }
  });
});

describe('formatRate', () => {
  it('bits per second with an SI prefix and one decimal', () => {
    assert.equal(formatRate(1_250_000), '10.0 Mbit/s');
    assert.equal(formatRate(187_500), '1.5 Mbit/s');
    assert.equal(formatRate(125_000_000), '1.0 Gbit/s');
    assert.equal(formatRate(1250), '10.0 kbit/s');
    assert.equal(formatRate(125), '1.0 kbit/s');
    assert.equal(formatRate(100), '800 bit/s');
    assert.equal(formatRate(0), '0 bit/s');
  });

  it('reads back what parseRate took', () => {
    for (const s of ['10mbit', '800kbit', '1gbit', '2.5mbit']) {
      const [num, unit] = formatRate(parseRate(s)).split(' ');
      assert.equal(parseRate(`${num}${unit.replace('/s', '')}`), parseRate(s), s);
    }
  });
});

describe('formatBytes', () => {
  it('bytes with an SI prefix and one decimal', () => {
    assert.equal(formatBytes(1_500_000), '1.5 MB');
    assert.equal(formatBytes(10_000_000_000), '10.0 GB');
    assert.equal(formatBytes(1000), '1.0 kB');
    assert.equal(formatBytes(1_048_576), '1.0 MB');
    assert.equal(formatBytes(999), '999 B');
    assert.equal(formatBytes(0), '0 B');
  });

  it('reads back what parseBytes took (SI sizes)', () => {
    for (const s of ['1.5MB', '10GB', '500kB']) {
      assert.equal(parseBytes(formatBytes(parseBytes(s)).replace(' ', '')), parseBytes(s), s);
    }
  });
});
