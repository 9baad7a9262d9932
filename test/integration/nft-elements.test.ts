// The two ways toastnet changes set elements must leave the same kernel state: libnftables
// (JSON) and the direct nfnetlink batch (nft-set-codec.ts). Two instance tables are built in
// a throwaway namespace; every kind of per-sandbox element goes into one through each path,
// and the listings must match element for element (counters and timeouts included).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { resolve } from '../../src/config/load.js';
import { ConfigSchema } from '../../src/config/schema.js';
import { sandboxLinkName, sandboxMac } from '../../src/core/names.js';
import { resolvePolicy, type PolicyInput } from '../../src/core/policy.js';
import { RulesetBuilder } from '../../src/core/ruleset.js';
import { checkPortMappings } from '../../src/core/publish.js';
import { sandboxElements, type Element, type SandboxSpec } from '../../src/core/sandbox-elements.js';
import { sandboxObjects } from '../../src/core/sandbox-limits.js';
import { Nft } from '../../src/kernel/nft.js';
import { withNetns } from '../../src/kernel/netns.js';

describe('set elements: nfnetlink batch vs libnftables', () => {
  const run = randomBytes(3).toString('hex');
  const ns = `nftcodec-${run}`;
  const nsPath = `/run/netns/${ns}`;
  // Two instances, so two tables side by side: A written by libnftables, B by the batch path.
  const cfg = (instance: string) => resolve(ConfigSchema.parse({ instance, dnsUpstreams: ['192.0.2.53'], subnet: '10.77.0.0/16' }), []);
  const A = new RulesetBuilder(cfg(`ea${run}`));
  const B = new RulesetBuilder(cfg(`eb${run}`));
  let slow: Nft;
  let fast: Nft;
  const inNs = <T>(f: () => T): T => withNetns(nsPath, f);

  function spec(b: RulesetBuilder, id: number, policy: PolicyInput): SandboxSpec {
    const ip = `10.77.0.${id}`;
    // Every other one publishes ports: on every host address, and on one address (UDP).
    const publish = id % 2 === 0 ? checkPortMappings([{ hostPort: 8000 + id, containerPort: 80 }, { hostPort: 5300 + id, containerPort: 53, protocol: 'udp', hostIP: '192.0.2.2' }]) : undefined;
    return { ip, mac: sandboxMac('test', id), mode: id % 5 === 0 ? 'macvlan' : 'veth', hostLink: sandboxLinkName(b.names, id), policy: resolvePolicy(policy), ...(publish ? { publish } : {}) };
  }
  const policies: PolicyInput[] = [
    {},
    { egress: { internet: false, allow: ['10.9.0.0/16:80-90/tcp', '192.0.2.7:53/udp', '198.51.100.0/24'] } },
    { egress: { deny: ['203.0.113.0/25:1-1023/tcp', '203.0.113.200'] }, mode: 'report' },
    { group: { name: 'g', ports: ['8000-8100/tcp', '5353/udp'] }, inbound: { ports: ['22/tcp', '8080-8090/tcp'] } },
    { group: { name: 'g' }, inbound: { enabled: false }, egress: { domains: ['example.com'] } },
    {},
  ];
  /** Every sandbox's elements, with group pairs once per pair, as the engine would add them one by one. */
  function allElements(b: RulesetBuilder): Element[][] {
    const specs = policies.map((p, i) => spec(b, i + 1, p));
    return specs.map((s, i) => sandboxElements(s, specs.slice(0, i).filter((p) => p.policy.group?.name && p.policy.group.name === s.policy.group?.name)));
  }
  /** Set name -> sorted element listings, the instance's link prefix erased. */
  function contents(b: RulesetBuilder): Map<string, string[]> {
    const out = new Map<string, string[]>();
    for (const family of ['inet', 'arp']) {
      for (const item of inNs(() => slow.listTable(family, b.names.table)) ?? []) {
        const s = (item.set ?? item.map) as { name: string; elem?: unknown[] } | undefined;
        if (!s) continue;
        const elems = (s.elem ?? []).map((e) => JSON.stringify(e, (k, v) => (k === 'expires' ? undefined : v)).replaceAll(b.names.linkPrefix, 'LINK'));
        out.set(`${family} ${s.name}`, elems.sort());
      }
    }
    return out;
  }

  before(() => {
    execFileSync('ip', ['netns', 'add', ns]);
    inNs(() => {
      slow = new Nft();
      fast = new Nft(new Map([...A.elementSets(), ...B.elementSets()]));
      slow.apply(A.fullTable([]));
      slow.apply(B.fullTable([]));
    });
  });
  after(() => {
    try {
      inNs(() => {
        slow?.free();
        fast?.free();
      });
    } finally {
      execFileSync('ip', ['netns', 'del', ns]);
    }
  });

  it('adds the same elements (verdicts, ranges, concatenations, ARP copies, counters)', () => {
    const [a, b] = [allElements(A), allElements(B)];
    const before = fast.applied.elementBatches;
    inNs(() => {
      for (const els of a) slow.apply(A.add(els));
      for (const els of b) fast.apply(B.add(els));
    });
    assert.equal(fast.applied.elementBatches - before, b.length, 'every add took the batch path');
    const [ca, cb] = [contents(A), contents(B)];
    assert.ok(ca.get('inet egress_policy')!.length >= 5, 'the policies made egress elements');
    assert.ok(ca.get('inet group_pairs')!.length >= 3);
    assert.deepEqual(['publish_addr', 'publish_port', 'published'].map((n) => ca.get(`inet ${n}`)!.length), [6, 6, 6], 'the publishings made their elements');
    assert.ok(ca.get('arp veth_src')!.length === 5 && ca.get('arp macvlan_src')!.length === 1);
    assert.match(cb.get('inet acct_out')![0], /"counter":\{"packets":0,"bytes":0\}/);
    assert.deepEqual(cb, ca);
  });

  it('admits DNS answers with their timeout', () => {
    const before = fast.applied.elementBatches;
    inNs(() => {
      slow.apply(A.allowResolved('10.77.0.5', ['203.0.113.9', '203.0.113.10'], 300));
      fast.apply(B.allowResolved('10.77.0.5', ['203.0.113.9', '203.0.113.10'], 300));
    });
    assert.equal(fast.applied.elementBatches - before, 1, 'the admission took the batch path');
    const [ca, cb] = [contents(A), contents(B)];
    assert.equal(cb.get('inet dns_allowed')!.length, 2);
    assert.match(cb.get('inet dns_allowed')![0], /"timeout":300/);
    assert.deepEqual(cb, ca);
  });

  it('removes the same elements', () => {
    const [a, b] = [allElements(A), allElements(B)];
    // What it removes, added here (adding what is there already changes nothing).
    inNs(() => {
      for (const els of a) slow.apply(A.add(els));
      for (const els of b) fast.apply(B.add(els));
      slow.apply(A.allowResolved('10.77.0.5', ['203.0.113.9', '203.0.113.10'], 300));
      fast.apply(B.allowResolved('10.77.0.5', ['203.0.113.9', '203.0.113.10'], 300));
    });
    const before = fast.applied.elementBatches;
    inNs(() => {
      for (const i of [1, 3, 4]) slow.apply(A.remove(a[i]));
      for (const i of [1, 3, 4]) fast.apply(B.remove(b[i]));
      slow.apply(A.forgetResolved('10.77.0.5', ['203.0.113.9']));
      fast.apply(B.forgetResolved('10.77.0.5', ['203.0.113.9']));
    });
    assert.equal(fast.applied.elementBatches - before, 4, 'every removal took the batch path');
    const [ca, cb] = [contents(A), contents(B)];
    assert.equal(ca.get('inet acct_out')!.length, 3);
    assert.equal(cb.get('inet dns_allowed')!.length, 1, 'one admission left');
    assert.deepEqual(cb, ca);
  });

  it('is one transaction: a failing delete leaves the adds of the same batch undone', () => {
    const extra = sandboxElements(spec(B, 40, {}));
    const missing = sandboxElements(spec(B, 41, {}));
    const before = contents(B);
    assert.throws(() => inNs(() => fast.apply([...B.add(extra), ...B.remove(missing)], 'mixed')), (err: Error) => /^mixed: .*ENOENT/.test(err.message));
    assert.deepEqual(contents(B), before);
  });

  it('leaves what it cannot encode (objects) to libnftables', () => {
    const s = spec(B, 50, { limits: { packetsPerSecond: 1000, egressBytes: '1MB' } });
    const [batches, calls] = [fast.applied.elementBatches, fast.applied.libnftables];
    inNs(() => fast.apply(B.add(sandboxElements(s), sandboxObjects(s))));
    assert.equal(fast.applied.elementBatches, batches);
    assert.equal(fast.applied.libnftables, calls + 1);
    assert.ok(contents(B).get('inet limit_packets')!.length === 1);
  });
});
