import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { parseEgressRule } from '../../src/core/egress-rule.js';
import { formatIPv4, parseIPv4 } from '../../src/core/ipv4.js';
import { instanceNames, sandboxLinkName, sandboxMac } from '../../src/core/names.js';
import { resolvePolicy, type PolicyInput, type PortRange } from '../../src/core/policy.js';
import { compileEgress } from '../../src/core/policy-compile.js';
import { DNS_ALLOWED_SET, SANDBOX_SETS, bySet, groupPeers, portRanges, sandboxElements, type Element, type SandboxSpec } from '../../src/core/sandbox-elements.js';
import { intIn, prng } from './prng.js';

/** mulberry32 with a fixed seed: reproducible "random" inputs. */

const names = instanceNames('toastnet');
function sandbox(id: number, mode: 'veth' | 'macvlan' = 'veth', policy: PolicyInput = {}): SandboxSpec {
  const ip = `10.166.${id >> 8}.${id & 255}`;
  return { ip, mac: sandboxMac('test', id), mode, hostLink: sandboxLinkName(names, id), policy: resolvePolicy(policy) };
}
const sets = (els: Element[]) => els.map((e) => e.set);
const ofSet = (els: Element[], set: string) => els.filter((e) => e.set === set).map((e) => e.elem);
const key = (e: Element) => JSON.stringify(e);
/** Every sandbox's accounting: its address in each acct_* set (each element with its own counter). */
const acct = (ip: string): Element[] => [{ set: 'acct_out', elem: ip }, { set: 'acct_in', elem: ip }, { set: 'acct_blocked', elem: ip }];
const ACCT = ['acct_out', 'acct_in', 'acct_blocked'];

describe('portRanges', () => {
  const r = (from: number, to: number, proto?: 'tcp' | 'udp'): PortRange => ({ from, to, ...(proto ? { proto } : {}) });

  it('no ports: every protocol and port (proto -1)', () => {
    assert.deepEqual(portRanges(undefined), [{ proto: -1, from: 0, to: 65535 }]);
  });

  it('an empty list: nothing', () => {
    assert.deepEqual(portRanges([]), []);
  });

  it('a spec without a protocol is tcp and udp; with one, only that protocol', () => {
    assert.deepEqual(portRanges([r(80, 80)]), [{ proto: 6, from: 80, to: 80 }, { proto: 17, from: 80, to: 80 }]);
    assert.deepEqual(portRanges([r(80, 80, 'tcp')]), [{ proto: 6, from: 80, to: 80 }]);
    assert.deepEqual(portRanges([r(53, 53, 'udp')]), [{ proto: 17, from: 53, to: 53 }]);
  });

  it('merges overlapping, contained, duplicate and adjacent ranges per protocol, in order', () => {
    assert.deepEqual(portRanges([r(5, 20, 'tcp'), r(1, 10, 'tcp')]), [{ proto: 6, from: 1, to: 20 }]);
    assert.deepEqual(portRanges([r(1, 100, 'udp'), r(10, 20, 'udp'), r(10, 20, 'udp')]), [{ proto: 17, from: 1, to: 100 }]);
    assert.deepEqual(portRanges([r(11, 20), r(1, 10)]), [{ proto: 6, from: 1, to: 20 }, { proto: 17, from: 1, to: 20 }]);
    assert.deepEqual(portRanges([r(12, 20, 'tcp'), r(1, 10, 'tcp')]), [{ proto: 6, from: 1, to: 10 }, { proto: 6, from: 12, to: 20 }], 'a gap of one port stays');
    assert.deepEqual(portRanges([r(1, 65535, 'tcp'), r(65535, 65535, 'tcp')]), [{ proto: 6, from: 1, to: 65535 }]);
  });

  it('mixes protocol-less and protocol-specific specs per protocol', () => {
    assert.deepEqual(portRanges([r(80, 90), r(85, 100, 'tcp'), r(91, 91, 'udp'), r(8080, 8080, 'udp')]), [
      { proto: 6, from: 80, to: 100 },
      { proto: 17, from: 80, to: 91 },
      { proto: 17, from: 8080, to: 8080 },
    ]);
  });

  it('covers exactly the given ports with disjoint, non-adjacent, sorted ranges (random specs)', () => {
    const rnd = prng(5);
    for (let round = 0; round < 300; round++) {
      const specs: PortRange[] = Array.from({ length: intIn(rnd, 1, 8) }, () => {
        const from = intIn(rnd, 1, 120);
        const to = rnd() < 0.4 ? from : intIn(rnd, from, 130);
        const p = rnd();
        return r(from, to, p < 0.33 ? 'tcp' : p < 0.66 ? 'udp' : undefined);
      });
      const out = portRanges(specs);
      const what = JSON.stringify(specs);
      for (const proto of [6, 17]) {
        const mine = out.filter((x) => x.proto === proto);
        for (let i = 1; i < mine.length; i++) assert.ok(mine[i].from > mine[i - 1].to + 1, `${what}: ranges touch or overlap`);
        for (let port = 0; port <= 132; port++) {
          const want = specs.some((s) => (!s.proto || (s.proto === 'tcp' ? 6 : 17) === proto) && s.from <= port && port <= s.to);
          const got = mine.some((x) => x.from <= port && port <= x.to);
          assert.equal(got, want, `${what}: proto ${proto} port ${port}`);
        }
      }
      assert.ok(out.every((x) => x.proto === 6 || x.proto === 17));
      assert.deepEqual(out.map((x) => x.proto), [...out.map((x) => x.proto)].sort((a, b) => a - b), 'tcp first, then udp');
    }
  });
});

describe('sandboxElements', () => {
  it('a veth sandbox on the defaults: its veth_src element (link . MAC . address), its three accounting elements, its self pair', () => {
    const s = sandbox(2);
    assert.deepEqual(sandboxElements(s), [
      { set: 'veth_src', elem: { concat: ['tn727bs2', s.mac, '10.166.0.2'] } },
      { set: 'acct_out', elem: '10.166.0.2' }, { set: 'acct_in', elem: '10.166.0.2' }, { set: 'acct_blocked', elem: '10.166.0.2' },
      { set: 'sandbox_self', elem: { concat: ['10.166.0.2', '10.166.0.2'] } },
    ]);
  });

  it('a macvlan sandbox on the defaults: its macvlan_src element (MAC . address), its three accounting elements, its self pair', () => {
    const s = sandbox(3, 'macvlan');
    assert.deepEqual(sandboxElements(s), [
      { set: 'macvlan_src', elem: { concat: [s.mac, '10.166.0.3'] } },
      { set: 'acct_out', elem: '10.166.0.3' }, { set: 'acct_in', elem: '10.166.0.3' }, { set: 'acct_blocked', elem: '10.166.0.3' },
      { set: 'sandbox_self', elem: { concat: ['10.166.0.3', '10.166.0.3'] } },
    ]);
  });

  it('allows never open the instance subnet given (groups do); denies inside it stay', () => {
    const subnet: [number, number] = [parseIPv4('10.166.0.0'), parseIPv4('10.166.255.255')];
    const s = sandbox(2, 'veth', { egress: { allow: ['10.0.0.0/8', '10.166.7.0/24:22/tcp'], deny: ['10.166.9.9'] } });
    const cells = ofSet(sandboxElements(s, [], subnet), 'egress_policy') as [{ concat: unknown[] }, unknown][];
    const ranges = cells.map(([k, v]) => [k.concat[1], JSON.stringify(v)]);
    assert.deepEqual(ranges, [
      [{ range: ['10.0.0.0', '10.165.255.255'] }, '{"accept":null}'],
      ['10.166.9.9', '{"jump":{"target":"deny_policy"}}'],
      [{ range: ['10.167.0.0', '10.255.255.255'] }, '{"accept":null}'],
    ]);
    // Without a subnet (the default) the allow covers it: what an instance without the rule would install.
    assert.ok(ofSet(sandboxElements(s), 'egress_policy').some((e) => JSON.stringify(e).includes('10.166.7.0')));
  });

  it('accounting: every sandbox, whatever its policy and peers, has exactly its address in each acct_* set, right after admission', () => {
    const rnd = prng(17);
    const pick = <T>(xs: T[]): T => xs[intIn(rnd, 0, xs.length - 1)];
    for (let i = 0; i < 200; i++) {
      const policy: PolicyInput = {
        mode: pick(['enforce', 'report', undefined]),
        egress: { internet: pick([true, false, undefined]), deny: pick([[], ['10.0.0.0/8']]), domains: pick([undefined, ['pypi.org']]) },
        group: pick([undefined, 'g']),
        inbound: pick([{}, { enabled: false }, { ports: [22] }]),
        limits: pick([undefined, { egressRate: '8mbit', maxConnections: 10 }]),
      };
      const s = sandbox(2 + i, rnd() < 0.5 ? 'veth' : 'macvlan', policy);
      const els = sandboxElements(s, [sandbox(900, 'veth', { group: 'g' })]);
      assert.deepEqual(els.slice(1, 4), acct(s.ip), JSON.stringify(policy));
      assert.equal(els.filter((e) => ACCT.includes(e.set)).length, 3, 'no other accounting element (not the peer\'s)');
      assert.equal(els[0].set, s.mode === 'veth' ? 'veth_src' : 'macvlan_src');
      // Limits are objects (sandbox-limits.ts), never elements of sandboxElements.
      assert.ok(els.every((e) => !e.set.startsWith('limit_') && !e.set.startsWith('quota_') && e.set !== 'conn_tier'));
    }
  });

  it('every element names a declared set', () => {
    const s = sandbox(4, 'veth', { mode: 'report', egress: { internet: false, deny: ['10.0.0.0/8'], domains: ['pypi.org'] }, group: 'g', inbound: { ports: [22] } });
    const els = sandboxElements(s, [sandbox(5, 'veth', { group: 'g' })]);
    assert.ok(els.length >= 9);
    assert.ok(els.some((e) => e.set === 'domain_mode'));
    for (const e of els) assert.ok(e.set in SANDBOX_SETS, e.set);
  });

  it('egress entries become egress_policy elements keyed by the sandbox: accept, or jump to deny_policy', () => {
    const s = sandbox(2, 'veth', { egress: { allow: ['172.16.0.0/12:443/tcp', '192.0.2.1/icmp'], deny: ['203.0.113.7'] } });
    assert.deepEqual(ofSet(sandboxElements(s), 'egress_policy'), [
      [{ concat: ['10.166.0.2', { range: ['172.16.0.0', '172.31.255.255'] }, 6, 443] }, { accept: null }],
      [{ concat: ['10.166.0.2', '192.0.2.1', 1, { range: [0, 65535] }] }, { accept: null }],
      [{ concat: ['10.166.0.2', '203.0.113.7', { range: [0, 255] }, { range: [0, 65535] }] }, { jump: { target: 'deny_policy' } }],
    ]);
  });

  it('one egress_policy element per compiled cell, same ranges and verdicts', () => {
    const policy: PolicyInput = { egress: { allow: ['10.0.0.0/8', '10.1.0.0/16:8000-8100'], deny: ['10.1.2.0/24', '10.1.0.0/16:8050/udp'] } };
    const s = sandbox(9, 'macvlan', policy);
    const p = resolvePolicy(policy);
    const cells = compileEgress(p.allow, p.deny);
    const els = ofSet(sandboxElements(s), 'egress_policy') as [{ concat: unknown[] }, unknown][];
    assert.equal(els.length, cells.length);
    const span = (v: unknown, fmt: (n: number) => unknown) => (v as { range?: unknown[] }).range ?? [v, v].map((x) => (typeof x === 'number' ? fmt(x) : x));
    cells.forEach((c, i) => {
      const [k, verdict] = els[i];
      assert.equal(k.concat[0], '10.166.0.9');
      assert.deepEqual(span(k.concat[1], formatIPv4), [formatIPv4(c.dst[0]), formatIPv4(c.dst[1])]);
      assert.deepEqual(span(k.concat[2], (n) => n), c.proto);
      assert.deepEqual(span(k.concat[3], (n) => n), c.port);
      assert.deepEqual(verdict, c.verdict === 'allow' ? { accept: null } : { jump: { target: 'deny_policy' } });
    });
    assert.ok(els.some(([, v]) => JSON.stringify(v).includes('deny_policy')));
  });

  it('egress.internet false: a no_internet element; true or unset: none', () => {
    assert.deepEqual(ofSet(sandboxElements(sandbox(2, 'veth', { egress: { internet: false } })), 'no_internet'), ['10.166.0.2']);
    assert.deepEqual(ofSet(sandboxElements(sandbox(2, 'veth', { egress: { internet: true } })), 'no_internet'), []);
    assert.deepEqual(ofSet(sandboxElements(sandbox(2)), 'no_internet'), []);
  });

  it('egress.domains set: a domain_mode element (also for an empty list); unset: none', () => {
    assert.deepEqual(ofSet(sandboxElements(sandbox(2, 'veth', { egress: { domains: ['pypi.org', '*.example.com'] } })), 'domain_mode'), ['10.166.0.2']);
    assert.deepEqual(ofSet(sandboxElements(sandbox(3, 'macvlan', { egress: { domains: [] } })), 'domain_mode'), ['10.166.0.3']);
    assert.deepEqual(ofSet(sandboxElements(sandbox(2, 'veth', { egress: { internet: true, allow: ['10.0.0.0/8'] } })), 'domain_mode'), []);
    assert.deepEqual(ofSet(sandboxElements(sandbox(2)), 'domain_mode'), []);
    // Independent of internet false: both elements, each for its own rule.
    const both = sandboxElements(sandbox(4, 'veth', { egress: { internet: false, domains: ['pypi.org'] } }));
    assert.deepEqual(ofSet(both, 'no_internet'), ['10.166.0.4']);
    assert.deepEqual(ofSet(both, 'domain_mode'), ['10.166.0.4']);
    // The names themselves and the dns limits are the resolver's business: no element carries them.
    const named = sandboxElements(sandbox(5, 'veth', { egress: { domains: ['pypi.org'] }, dns: { qps: 1, burst: 1 } }));
    assert.deepEqual(sets(named), ['veth_src', ...ACCT, 'sandbox_self', 'domain_mode', 'name_check']);
    // verifyNames false: no name checks; unnamedPorts: their (sandbox, protocol, port) ranges.
    assert.deepEqual(sets(sandboxElements(sandbox(5, 'veth', { egress: { domains: ['pypi.org'], verifyNames: false } }))), ['veth_src', ...ACCT, 'sandbox_self', 'domain_mode']);
    assert.deepEqual(ofSet(sandboxElements(sandbox(5, 'veth', { egress: { domains: ['pypi.org'], unnamedPorts: [22, '123/udp'] } })), 'unnamed_ports'), [
      { concat: ['10.166.0.5', 6, 22] }, { concat: ['10.166.0.5', 17, 22] }, { concat: ['10.166.0.5', 17, 123] },
    ]);
    assert.ok(!JSON.stringify(named).includes('pypi'));
  });

  it('dns_allowed is a set of its own, not a per-sandbox element set', () => {
    assert.deepEqual(DNS_ALLOWED_SET, {
      name: 'dns_allowed', type: ['ipv4_addr', 'ipv4_addr'], flags: ['timeout'], comment: DNS_ALLOWED_SET.comment,
    });
    assert.ok(typeof DNS_ALLOWED_SET.comment === 'string' && DNS_ALLOWED_SET.comment.length > 0);
    assert.ok(!('dns_allowed' in SANDBOX_SETS));
    assert.equal(SANDBOX_SETS.domain_mode.type, 'ipv4_addr');
    assert.ok(!('flags' in SANDBOX_SETS.domain_mode));
    // No policy ever yields a dns_allowed element.
    const s = sandbox(6, 'veth', { mode: 'report', egress: { internet: false, domains: ['*.example.com'], allow: ['10.0.0.0/8'] }, group: 'g', inbound: { ports: [22] } });
    assert.ok(sandboxElements(s, [sandbox(7, 'veth', { group: 'g' })]).every((e) => (e.set as string) !== 'dns_allowed'));
  });

  it('mode report: a report_mode element; enforce or unset: none', () => {
    assert.deepEqual(ofSet(sandboxElements(sandbox(2, 'macvlan', { mode: 'report' })), 'report_mode'), ['10.166.0.2']);
    assert.deepEqual(ofSet(sandboxElements(sandbox(2, 'macvlan', { mode: 'enforce' })), 'report_mode'), []);
  });

  it('inbound disabled: inbound_closed (and no port elements, even with ports listed)', () => {
    const els = sandboxElements(sandbox(2, 'veth', { inbound: { enabled: false, ports: [22] } }));
    assert.deepEqual(ofSet(els, 'inbound_closed'), ['10.166.0.2']);
    assert.deepEqual(ofSet(els, 'inbound_only'), []);
    assert.deepEqual(ofSet(els, 'inbound_ports'), []);
  });

  it('inbound ports: inbound_only plus one inbound_ports element per merged range and protocol', () => {
    const els = sandboxElements(sandbox(2, 'veth', { inbound: { ports: [22, '8000-8100/tcp', '8050-8200/tcp', '53/udp'] } }));
    assert.deepEqual(ofSet(els, 'inbound_closed'), []);
    assert.deepEqual(ofSet(els, 'inbound_only'), ['10.166.0.2']);
    assert.deepEqual(ofSet(els, 'inbound_ports'), [
      { concat: ['10.166.0.2', 6, 22] },
      { concat: ['10.166.0.2', 6, { range: [8000, 8200] }] },
      { concat: ['10.166.0.2', 17, 22] },
      { concat: ['10.166.0.2', 17, 53] },
    ]);
    // An empty list: the host may connect on no port.
    const none = sandboxElements(sandbox(2, 'veth', { inbound: { ports: [] } }));
    assert.deepEqual(ofSet(none, 'inbound_only'), ['10.166.0.2']);
    assert.deepEqual(ofSet(none, 'inbound_ports'), []);
  });

  it('inbound open on every port (the default): no inbound element', () => {
    const els = sandboxElements(sandbox(2, 'veth', { inbound: { enabled: true } }));
    assert.deepEqual(sets(els), ['veth_src', ...ACCT, 'sandbox_self']);
  });

  it('group pairs go both ways, each on the destination\'s group ports', () => {
    const a = sandbox(2, 'veth', { group: { name: 'g', ports: [8080] } });
    const b = sandbox(3, 'macvlan', { group: { name: 'g', ports: ['9000-9001/udp'] } });
    const c = sandbox(4, 'veth', { group: 'g' });
    assert.deepEqual(ofSet(sandboxElements(a, [b, c]), 'group_pairs'), [
      { concat: ['10.166.0.2', '10.166.0.3', 17, { range: [9000, 9001] }] }, // a -> b on b's ports
      { concat: ['10.166.0.3', '10.166.0.2', 6, 8080] }, // b -> a on a's ports
      { concat: ['10.166.0.3', '10.166.0.2', 17, 8080] },
      { concat: ['10.166.0.2', '10.166.0.4', { range: [0, 255] }, { range: [0, 65535] }] }, // a -> c: c lists no ports
      { concat: ['10.166.0.4', '10.166.0.2', 6, 8080] }, // c -> a on a's ports
      { concat: ['10.166.0.4', '10.166.0.2', 17, 8080] },
    ]);
  });

  it('group with an empty ports list: peers may not reach it; no peers given: no pairs', () => {
    const closed = sandbox(2, 'veth', { group: { name: 'g', ports: [] } });
    const open = sandbox(3, 'veth', { group: 'g' });
    assert.deepEqual(ofSet(sandboxElements(closed, [open]), 'group_pairs'), [
      { concat: ['10.166.0.2', '10.166.0.3', { range: [0, 255] }, { range: [0, 65535] }] },
    ]);
    assert.deepEqual(ofSet(sandboxElements(open), 'group_pairs'), []);
  });

  it('the same input always gives the same elements', () => {
    const policy: PolicyInput = { mode: 'report', egress: { internet: false, allow: ['10.0.0.0/8'], deny: ['10.1.0.0/16:22/tcp'] }, group: { name: 'g', ports: [80, '81/udp'] }, inbound: { ports: ['22/tcp'] } };
    const peer: PolicyInput = { group: 'g' };
    const first = sandboxElements(sandbox(7, 'macvlan', policy), [sandbox(8, 'veth', peer)]);
    const again = sandboxElements(sandbox(7, 'macvlan', structuredClone(policy)), [sandbox(8, 'veth', structuredClone(peer))]);
    assert.deepEqual(again, first);
    assert.deepEqual(sandboxElements(sandbox(7, 'macvlan', policy), [sandbox(8, 'veth', peer)]), first);
  });
});

describe('groupPeers', () => {
  const a = sandbox(2, 'veth', { group: 'g' });
  const b = sandbox(3, 'macvlan', { group: { name: 'g', ports: [80] } });
  const c = sandbox(4, 'veth', { group: 'h' });
  const d = sandbox(5, 'veth');
  const e = sandbox(6, 'veth', { group: 'g' });

  it('only sandboxes of the same group, never itself, in the given order', () => {
    assert.deepEqual(groupPeers(a, [a, b, c, d, e]), [b, e]);
    assert.deepEqual(groupPeers(b, [e, d, c, a, b]), [e, a]);
    assert.deepEqual(groupPeers(c, [a, b, c, d, e]), []);
    // "Itself" is by address: another spec object for the same sandbox is still itself.
    assert.deepEqual(groupPeers(a, [sandbox(2, 'veth', { group: 'g' }), e]), [e]);
  });

  it('no group: no peers, even among grouped sandboxes', () => {
    assert.deepEqual(groupPeers(d, [a, b, c, d, e]), []);
  });

  it('group names are compared exactly', () => {
    const upper = sandbox(7, 'veth', { group: 'G' });
    assert.deepEqual(groupPeers(upper, [a, b, e]), []);
  });

  it('takes any iterable (e.g. a Map\'s values)', () => {
    const m = new Map([['a', a], ['b', b], ['c', c]]);
    assert.deepEqual(groupPeers(e, m.values()), [a, b]);
  });
});

describe('bySet', () => {
  it('groups elements by set in order of first appearance, keeping each set\'s order', () => {
    const els: Element[] = [
      { set: 'veth_src', elem: 1 }, { set: 'no_internet', elem: 2 }, { set: 'veth_src', elem: 3 }, { set: 'report_mode', elem: 4 }, { set: 'no_internet', elem: 5 },
    ];
    assert.deepEqual([...bySet(els)], [['veth_src', [1, 3]], ['no_internet', [2, 5]], ['report_mode', [4]]]);
    assert.equal(bySet([]).size, 0);
  });
});

describe('element ownership over a sandbox lifetime (property)', () => {
  /** Intervals of one element: [sandbox/src..., [lo,hi] per interval dimension]. */
  const span = (v: unknown): [number, number] => {
    if (typeof v === 'number') return [v, v];
    if (typeof v === 'string') return [parseIPv4(v), parseIPv4(v)];
    const [lo, hi] = (v as { range: [number | string, number | string] }).range;
    return typeof lo === 'string' ? [parseIPv4(lo), parseIPv4(hi as string)] : [lo, hi as number];
  };
  const overlap = (a: [number, number], b: [number, number]) => a[0] <= b[1] && b[0] <= a[1];

  /** The kernel refuses overlapping elements in an interval set: none may exist at once. */
  function assertNoOverlap(live: Element[]): void {
    const keyed = (set: string, keyLen: number) => live.filter((e) => e.set === set).map((e) => {
      const c = (set === 'egress_policy' ? (e.elem as [{ concat: unknown[] }])[0] : (e.elem as { concat: unknown[] })).concat;
      return { exact: JSON.stringify(c.slice(0, keyLen)), spans: c.slice(keyLen).map(span), e };
    });
    for (const [set, keyLen] of [['egress_policy', 1], ['group_pairs', 2], ['inbound_ports', 1]] as const) {
      const xs = keyed(set, keyLen);
      for (let i = 0; i < xs.length; i++) {
        for (let j = i + 1; j < xs.length; j++) {
          if (xs[i].exact !== xs[j].exact) continue;
          assert.ok(!xs[i].spans.every((s, k) => overlap(s, xs[j].spans[k])), `${set}: ${key(xs[i].e)} overlaps ${key(xs[j].e)}`);
        }
      }
    }
  }

  function randomPolicy(rnd: () => number): PolicyInput {
    const pick = <T>(xs: T[]): T => xs[intIn(rnd, 0, xs.length - 1)];
    return {
      mode: pick(['enforce', 'report', undefined]),
      egress: {
        internet: pick([true, false, undefined]),
        allow: pick([[], ['10.0.0.0/8'], ['172.16.0.0/12:443/tcp', '10.1.0.0/16:8000-8100']]),
        deny: pick([[], ['10.1.2.3'], ['10.0.0.0/8:22/tcp', '203.0.113.0/24/udp']]),
        domains: pick([undefined, [], ['pypi.org', '*.example.com']]),
      },
      group: pick([undefined, 'a', 'b', { name: 'a', ports: [8080, '9000-9100/udp'] }, { name: 'b', ports: [] }]),
      inbound: pick([{}, { enabled: false }, { ports: [22, '8000-8100/tcp'] }]),
    };
  }

  it('creates, policy changes and removals in any order: the kernel sets always hold exactly the live sandboxes\' elements', () => {
    const rnd = prng(2024);
    const kernel = new Map<string, Element>();
    const live = new Map<number, SandboxSpec>();
    let nextId = 2;
    const peersOf = (id: number, s: SandboxSpec) => groupPeers(s, [...live].filter(([i]) => i !== id).map(([, p]) => p));
    const add = (els: Element[]) => {
      for (const e of els) {
        assert.ok(!kernel.has(key(e)), `added twice: ${key(e)}`);
        kernel.set(key(e), e);
      }
    };
    const del = (els: Element[]) => {
      for (const e of els) assert.ok(kernel.delete(key(e)), `deleted but absent: ${key(e)}`);
    };
    const seenOps = { create: 0, change: 0, remove: 0, maxPairs: 0, maxDomainMode: 0 };
    for (let step = 0; step < 600; step++) {
      const k = rnd();
      const ids = [...live.keys()];
      if (k < 0.45 || ids.length === 0) {
        const id = nextId++;
        const s = sandbox(id, rnd() < 0.5 ? 'veth' : 'macvlan', randomPolicy(rnd));
        add(sandboxElements(s, peersOf(id, s)));
        live.set(id, s);
        seenOps.create++;
      } else if (k < 0.75) {
        const id = ids[intIn(rnd, 0, ids.length - 1)];
        const old = live.get(id)!;
        const next = { ...old, policy: resolvePolicy(randomPolicy(rnd)) };
        del(sandboxElements(old, peersOf(id, old)));
        add(sandboxElements(next, peersOf(id, next)));
        live.set(id, next);
        seenOps.change++;
      } else {
        const id = ids[intIn(rnd, 0, ids.length - 1)];
        const s = live.get(id)!;
        live.delete(id);
        del(sandboxElements(s, peersOf(id, s)));
        seenOps.remove++;
      }
      seenOps.maxPairs = Math.max(seenOps.maxPairs, [...kernel.values()].filter((e) => e.set === 'group_pairs').length);
      seenOps.maxDomainMode = Math.max(seenOps.maxDomainMode, [...kernel.values()].filter((e) => e.set === 'domain_mode').length);
      // What a reset (gc, daemon start) would install: each sandbox's elements, each pair once.
      const expected: Element[] = [];
      const seen: SandboxSpec[] = [];
      for (const s of live.values()) {
        expected.push(...sandboxElements(s, groupPeers(s, seen)));
        seen.push(s);
      }
      assert.deepEqual(new Set(expected.map(key)), new Set(kernel.keys()), `step ${step}`);
      assert.equal(expected.length, kernel.size, `step ${step}: duplicates`);
      // Independently of sandboxElements: each accounting set holds exactly the live addresses.
      const liveIps = [...live.values()].map((s) => s.ip).sort();
      for (const set of ACCT) assert.deepEqual([...kernel.values()].filter((e) => e.set === set).map((e) => e.elem as string).sort(), liveIps, `step ${step}: ${set}`);
      if (step % 50 === 0) assertNoOverlap([...kernel.values()]);
    }
    // The walk did exercise every operation, with groups of several sandboxes.
    assert.ok(seenOps.create > 100 && seenOps.change > 100 && seenOps.remove > 100, JSON.stringify(seenOps));
    assert.ok(seenOps.maxPairs > 20, JSON.stringify(seenOps));
    assert.ok(seenOps.maxDomainMode > 5, JSON.stringify(seenOps));
    // Everything removed: nothing left behind.
    for (const [id, s] of [...live]) {
      live.delete(id);
      del(sandboxElements(s, peersOf(id, s)));
    }
    assert.equal(kernel.size, 0);
  });
});
