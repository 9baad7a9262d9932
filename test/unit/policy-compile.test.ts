import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { parseEgressRule, type EgressRule } from '../../src/core/egress-rule.js';
import { cidrLast, formatIPv4, parseIPv4 } from '../../src/core/ipv4.js';
import { compileEgress, decideEgress, type Cell } from '../../src/core/policy-compile.js';
import { intIn, prng } from './prng.js';

/** mulberry32: a small PRNG with a fixed seed, so every run checks the same packets. */

const TCP = 6;
const UDP = 17;
const ICMP = 1;

interface Policy {
  name: string;
  allow: EgressRule[];
  deny: EgressRule[];
}
const policy = (name: string, allow: string[], deny: string[]): Policy => ({
  name,
  allow: allow.map((s) => parseEgressRule(s)),
  deny: deny.map((s) => parseEgressRule(s)),
});

const overlaps = (a: [number, number], b: [number, number]) => a[0] <= b[1] && b[0] <= a[1];
const inside = (x: number, r: [number, number]) => r[0] <= x && x <= r[1];
const cellsAt = (cells: Cell[], daddr: number, proto: number, port: number) =>
  cells.filter((c) => inside(daddr, c.dst) && inside(proto, c.proto) && inside(port, c.port));

function assertWellFormed(cells: Cell[], p: Policy): void {
  const texts = new Set([...p.allow, ...p.deny].map((r) => r.text));
  for (const c of cells) {
    const s = JSON.stringify(c);
    assert.ok(c.dst[0] <= c.dst[1] && c.dst[0] >= 0 && c.dst[1] <= 0xffffffff, s);
    assert.ok(c.proto[0] <= c.proto[1] && c.proto[0] >= 0 && c.proto[1] <= 255, s);
    assert.ok(c.port[0] <= c.port[1] && c.port[0] >= 0 && c.port[1] <= 65535, s);
    assert.ok(c.verdict === 'allow' || c.verdict === 'deny', s);
    assert.ok(texts.has(c.rule), `${s}: rule is not one of the entries`);
  }
}

function assertDisjoint(cells: Cell[]): void {
  for (let i = 0; i < cells.length; i++) {
    for (let j = i + 1; j < cells.length; j++) {
      const a = cells[i];
      const b = cells[j];
      assert.ok(!(overlaps(a.dst, b.dst) && overlaps(a.proto, b.proto) && overlaps(a.port, b.port)), `cells overlap: ${JSON.stringify(a)} ${JSON.stringify(b)}`);
    }
  }
}

/** The compiled cells and the reference decision agree on this packet. */
function assertAgrees(p: Policy, cells: Cell[], daddr: number, proto: number, port: number): void {
  const want = decideEgress(p.allow, p.deny, daddr, proto, port);
  const got = cellsAt(cells, daddr, proto, port);
  const what = `${p.name}: ${formatIPv4(daddr)} proto ${proto} port ${port}`;
  if (!want) {
    assert.equal(got.length, 0, `${what}: no entry covers it, but cell ${JSON.stringify(got[0])} does`);
    return;
  }
  assert.equal(got.length, 1, `${what}: want exactly one cell, got ${got.length}`);
  assert.deepEqual({ verdict: got[0].verdict, rule: got[0].rule }, want, what);
}

/**
 * Values just around every boundary of the entries: every elementary box of the partition the
 * compiler makes has a corner among them, so checking all combinations checks every box.
 */
function boundaryValues(p: Policy) {
  const all = [...p.allow, ...p.deny];
  const dst = new Set<number>([0, 0xffffffff]);
  const port = new Set<number>([0, 1, 65534, 65535]);
  for (const r of all) {
    for (const v of [r.cidr.network - 1, r.cidr.network, cidrLast(r.cidr), cidrLast(r.cidr) + 1]) if (v >= 0 && v <= 0xffffffff) dst.add(v);
    if (r.ports) for (const v of [r.ports.from - 1, r.ports.from, r.ports.to, r.ports.to + 1]) if (v >= 0 && v <= 65535) port.add(v);
  }
  return { dst: [...dst], proto: [0, ICMP, 2, 5, TCP, 7, 16, UDP, 18, 255], port: [...port] };
}

function checkPolicy(p: Policy, seed: number, samples = 3000): Cell[] {
  const cells = compileEgress(p.allow, p.deny);
  assertWellFormed(cells, p);
  assertDisjoint(cells);
  // Every box of the partition.
  const b = boundaryValues(p);
  for (const d of b.dst) for (const pr of b.proto) for (const po of b.port) assertAgrees(p, cells, d, pr, po);
  // Random packets, mostly near or inside the entries.
  const rnd = prng(seed);
  const all = [...p.allow, ...p.deny];
  for (let i = 0; i < samples; i++) {
    let daddr: number;
    const k = rnd();
    if (k < 0.6 && all.length > 0) {
      const r = all[intIn(rnd, 0, all.length - 1)];
      daddr = intIn(rnd, r.cidr.network, cidrLast(r.cidr));
    } else if (k < 0.8) {
      daddr = b.dst[intIn(rnd, 0, b.dst.length - 1)];
    } else {
      daddr = intIn(rnd, 0, 0xffffffff);
    }
    const proto = rnd() < 0.8 ? [ICMP, TCP, UDP][intIn(rnd, 0, 2)] : intIn(rnd, 0, 255);
    const port = rnd() < 0.5 ? b.port[intIn(rnd, 0, b.port.length - 1)] : intIn(rnd, 0, rnd() < 0.5 ? 300 : 65535);
    assertAgrees(p, cells, daddr, proto, port);
  }
  return cells;
}

/** A random policy over a small address and port space, so entries overlap a lot. */
function randomPolicy(seed: number, n: number): Policy {
  const rnd = prng(seed);
  const entry = (): string => {
    const prefix = [8, 16, 20, 24, 24, 28, 30, 32][intIn(rnd, 0, 7)];
    const addr = (((10 << 24) | (intIn(rnd, 0, 3) << 16) | (intIn(rnd, 0, 3) << 8) | intIn(rnd, 0, 255)) >>> 0) & (prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0);
    let s = `${formatIPv4(addr >>> 0)}/${prefix}`;
    const kind = rnd();
    if (kind < 0.45) {
      const from = intIn(rnd, 1, 200);
      const to = rnd() < 0.5 ? from : intIn(rnd, from, 260);
      s += from === to ? `:${from}` : `:${from}-${to}`;
      const pr = rnd();
      if (pr < 0.33) s += '/tcp';
      else if (pr < 0.66) s += '/udp';
    } else if (kind < 0.7) {
      s += ['/tcp', '/udp', '/icmp'][intIn(rnd, 0, 2)];
    }
    return s;
  };
  const allow: string[] = [];
  const deny: string[] = [];
  for (let i = 0; i < n; i++) (rnd() < 0.5 ? allow : deny).push(entry());
  return policy(`random(${seed})`, allow, deny);
}

describe('compileEgress', () => {
  it('an empty policy compiles to no cells', () => {
    assert.deepEqual(compileEgress([], []), []);
  });

  it('one entry: one cell covering exactly its destination, protocols and ports', () => {
    const one = (s: string, verdict: 'allow' | 'deny') => compileEgress(verdict === 'allow' ? [parseEgressRule(s)] : [], verdict === 'deny' ? [parseEgressRule(s)] : []);
    const ten = [parseIPv4('10.0.0.0'), parseIPv4('10.255.255.255')];
    assert.deepEqual(one('10.0.0.0/8', 'allow'), [{ dst: ten, proto: [0, 255], port: [0, 65535], verdict: 'allow', rule: '10.0.0.0/8' }]);
    assert.deepEqual(one('10.0.0.0/8/icmp', 'deny'), [{ dst: ten, proto: [1, 1], port: [0, 65535], verdict: 'deny', rule: '10.0.0.0/8/icmp' }]);
    assert.deepEqual(one('192.0.2.1:443/tcp', 'allow'), [
      { dst: [parseIPv4('192.0.2.1'), parseIPv4('192.0.2.1')], proto: [6, 6], port: [443, 443], verdict: 'allow', rule: '192.0.2.1:443/tcp' },
    ]);
    // Ports without a protocol: tcp and udp, nothing else.
    assert.deepEqual(one('10.0.0.0/8:80-90', 'deny'), [
      { dst: ten, proto: [6, 6], port: [80, 90], verdict: 'deny', rule: '10.0.0.0/8:80-90' },
      { dst: ten, proto: [17, 17], port: [80, 90], verdict: 'deny', rule: '10.0.0.0/8:80-90' },
    ]);
    assert.deepEqual(one('0.0.0.0/0', 'deny'), [{ dst: [0, 0xffffffff], proto: [0, 255], port: [0, 65535], verdict: 'deny', rule: '0.0.0.0/0' }]);
  });

  it('a hole in a prefix leaves the prefix on both sides of it', () => {
    const cells = compileEgress([parseEgressRule('10.0.0.0/24')], [parseEgressRule('10.0.0.5')]);
    assert.deepEqual(cells.map((c) => [formatIPv4(c.dst[0]), formatIPv4(c.dst[1]), c.verdict]), [
      ['10.0.0.0', '10.0.0.4', 'allow'], ['10.0.0.5', '10.0.0.5', 'deny'], ['10.0.0.6', '10.0.0.255', 'allow'],
    ]);
  });

  it('is deterministic: the same entries always give the same cells', () => {
    const p = randomPolicy(99, 12);
    assert.deepEqual(compileEgress(p.allow, p.deny), compileEgress(p.allow, p.deny));
    const copy = policy('copy', p.allow.map((r) => r.text), p.deny.map((r) => r.text));
    assert.deepEqual(compileEgress(copy.allow, copy.deny), compileEgress(p.allow, p.deny));
  });

  const fixed: Policy[] = [
    policy('nested prefixes', ['10.0.0.0/8', '10.1.2.0/24', '10.1.2.3/32'], ['10.1.0.0/16', '10.1.2.3/32', '10.1.2.128/25']),
    policy('port ranges', ['203.0.113.0/24:1000-2000', '203.0.113.0/24:1-1/udp', '203.0.113.7:65535'], ['203.0.113.0/24:1500-1600/tcp', '203.0.113.0/24:1990-2010', '203.0.113.0/25']),
    policy('proto-specific', ['198.51.100.0/24/icmp', '198.51.100.0/24/udp', '198.51.100.7:53'], ['198.51.100.0/24', '198.51.100.7/tcp']),
    policy('ties', ['192.0.2.0/24', '192.0.2.0/25:80/tcp', '192.0.2.0/25/icmp', '192.0.2.0/26:1000-2000'], ['192.0.2.0/24', '192.0.2.0/25:80/tcp', '192.0.2.0/25/icmp', '192.0.2.0/26:1500-2500']),
    policy('whole space and edges', ['255.255.255.255', '0.0.0.0', '0.0.0.0/1:1-65535'], ['0.0.0.0/0', '128.0.0.0/1:65535/udp']),
    policy('adjacent prefixes', ['10.0.0.0/25', '10.0.0.128/25'], ['10.0.0.0/24:22/tcp']),
    policy('only allows', ['172.16.0.0/12:443/tcp', '172.16.5.0/24'], []),
    policy('only denies', [], ['172.16.0.0/12:443/tcp', '172.16.5.0/24']),
  ];
  fixed.forEach((p, i) => {
    it(`disjoint cells that agree with decideEgress: ${p.name}`, () => {
      const cells = checkPolicy(p, 1000 + i);
      assert.ok(cells.length > 0);
    });
  });

  it('disjoint cells that agree with decideEgress: 40 random policies', () => {
    for (let seed = 1; seed <= 40; seed++) checkPolicy(randomPolicy(seed, 2 + (seed % 11)), seed, 1000);
  });
});

describe('precedence (as documented in policy-compile.ts)', () => {
  // [allow, deny, packet, expected]: written by hand, not derived from the implementation.
  const cases: [string[], string[], [string, number, number], { verdict: 'allow' | 'deny'; rule: string } | undefined][] = [
    // A longer prefix wins, whatever the verdict.
    [['10.0.0.0/8'], ['10.1.0.0/16'], ['10.1.5.5', TCP, 80], { verdict: 'deny', rule: '10.1.0.0/16' }],
    [['10.0.0.0/8'], ['10.1.0.0/16'], ['10.2.0.1', TCP, 80], { verdict: 'allow', rule: '10.0.0.0/8' }],
    [['10.1.2.0/24'], ['10.1.0.0/16'], ['10.1.2.3', UDP, 53], { verdict: 'allow', rule: '10.1.2.0/24' }],
    // ... even over an entry with ports and a protocol.
    [['10.1.0.0/16'], ['10.0.0.0/8:80/tcp'], ['10.1.0.1', TCP, 80], { verdict: 'allow', rule: '10.1.0.0/16' }],
    // At equal prefix, an entry with ports beats one without.
    [['10.0.0.0/8:443'], ['10.0.0.0/8'], ['10.0.0.1', TCP, 443], { verdict: 'allow', rule: '10.0.0.0/8:443' }],
    [['10.0.0.0/8:443'], ['10.0.0.0/8'], ['10.0.0.1', UDP, 443], { verdict: 'allow', rule: '10.0.0.0/8:443' }],
    [['10.0.0.0/8:443'], ['10.0.0.0/8'], ['10.0.0.1', TCP, 444], { verdict: 'deny', rule: '10.0.0.0/8' }],
    [['10.0.0.0/8:443'], ['10.0.0.0/8'], ['10.0.0.1', ICMP, 443], { verdict: 'deny', rule: '10.0.0.0/8' }],
    // ... also over one naming a protocol without ports.
    [['10.0.0.0/8:80'], ['10.0.0.0/8/tcp'], ['10.0.0.1', TCP, 80], { verdict: 'allow', rule: '10.0.0.0/8:80' }],
    [['10.0.0.0/8:80'], ['10.0.0.0/8/tcp'], ['10.0.0.1', TCP, 81], { verdict: 'deny', rule: '10.0.0.0/8/tcp' }],
    // At equal prefix and no ports, an entry naming a protocol beats one without.
    [['10.0.0.0/8/icmp'], ['10.0.0.0/8'], ['10.0.0.1', ICMP, 0], { verdict: 'allow', rule: '10.0.0.0/8/icmp' }],
    [['10.0.0.0/8/icmp'], ['10.0.0.0/8'], ['10.0.0.1', TCP, 80], { verdict: 'deny', rule: '10.0.0.0/8' }],
    [['10.0.0.0/8'], ['10.0.0.0/8/udp'], ['10.0.0.1', UDP, 53], { verdict: 'deny', rule: '10.0.0.0/8/udp' }],
    [['10.0.0.0/8'], ['10.0.0.0/8/udp'], ['10.0.0.1', TCP, 53], { verdict: 'allow', rule: '10.0.0.0/8' }],
    // At equal specificity deny wins, whichever list comes first and however wide the ports.
    [['192.0.2.0/24'], ['192.0.2.0/24'], ['192.0.2.9', TCP, 1], { verdict: 'deny', rule: '192.0.2.0/24' }],
    [['192.0.2.1:80/tcp'], ['192.0.2.1:80/tcp'], ['192.0.2.1', TCP, 80], { verdict: 'deny', rule: '192.0.2.1:80/tcp' }],
    [['192.0.2.0/24:1-65535'], ['192.0.2.0/24:80'], ['192.0.2.9', TCP, 80], { verdict: 'deny', rule: '192.0.2.0/24:80' }],
    [['192.0.2.0/24:1-65535'], ['192.0.2.0/24:80'], ['192.0.2.9', TCP, 81], { verdict: 'allow', rule: '192.0.2.0/24:1-65535' }],
    [['192.0.2.0/24:1000-2000/tcp'], ['192.0.2.0/24:1500-2500/tcp'], ['192.0.2.9', TCP, 1500], { verdict: 'deny', rule: '192.0.2.0/24:1500-2500/tcp' }],
    [['192.0.2.0/24:1000-2000/tcp'], ['192.0.2.0/24:1500-2500/tcp'], ['192.0.2.9', TCP, 1499], { verdict: 'allow', rule: '192.0.2.0/24:1000-2000/tcp' }],
    // Nothing covers the packet: no decision (the instance's rules decide).
    [['10.0.0.0/8'], ['10.1.0.0/16'], ['11.0.0.1', TCP, 80], undefined],
    [['10.0.0.0/8:80/tcp'], [], ['10.0.0.1', UDP, 80], undefined],
    [['10.0.0.0/8:80'], [], ['10.0.0.1', ICMP, 80], undefined],
  ];

  for (const [allow, deny, [addr, proto, port], want] of cases) {
    it(`allow ${JSON.stringify(allow)} deny ${JSON.stringify(deny)}: ${addr} proto ${proto} port ${port} -> ${want ? `${want.verdict} by ${want.rule}` : 'no decision'}`, () => {
      const p = policy('case', allow, deny);
      const daddr = parseIPv4(addr);
      assert.deepEqual(decideEgress(p.allow, p.deny, daddr, proto, port), want);
      const cells = cellsAt(compileEgress(p.allow, p.deny), daddr, proto, port);
      assert.deepEqual(cells.map((c) => ({ verdict: c.verdict, rule: c.rule })), want ? [want] : []);
    });
  }
});
