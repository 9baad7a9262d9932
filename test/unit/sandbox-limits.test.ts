import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { instanceNames, sandboxLinkName, sandboxMac } from '../../src/core/names.js';
import { resolvePolicy, type PolicyInput } from '../../src/core/policy.js';
import { SANDBOX_SETS, type SandboxSpec } from '../../src/core/sandbox-elements.js';
import * as limitsModule from '../../src/core/sandbox-limits.js';
import {
  ACCOUNTING_SETS, LIMIT_MAPS, ipHex, objectElement, objectKey, quotaNames, sandboxObjects, tierChain, tierSet, type SandboxObject,
} from '../../src/core/sandbox-limits.js';
import { intIn, prng } from './prng.js';

const names = instanceNames('toastnet');
function sandbox(ip: string, limits?: PolicyInput['limits'], id = 1): SandboxSpec {
  return { ip, mac: sandboxMac('test', id), mode: 'veth', hostLink: sandboxLinkName(names, id), policy: resolvePolicy(limits ? { limits } : {}) };
}
const ip = '10.166.0.9';
/** All of the sandbox's objects: accounting makes none, so these are exactly what its limits ask for. */
const only = (limits: PolicyInput['limits']): SandboxObject[] => sandboxObjects(sandbox(ip, limits));

describe('ipHex and object names', () => {
  it('an address is 8 lower-case hex digits', () => {
    assert.equal(ipHex('10.166.0.9'), '0aa60009');
    assert.equal(ipHex('0.0.0.0'), '00000000');
    assert.equal(ipHex('255.255.255.255'), 'ffffffff');
    assert.equal(ipHex('192.168.1.10'), 'c0a8010a');
  });

  it('distinct addresses give distinct hex (property)', () => {
    const rnd = prng(3);
    const seen = new Map<string, string>();
    for (let i = 0; i < 2000; i++) {
      const a = [0, 0, 0, 0].map(() => intIn(rnd, 0, 255)).join('.');
      const h = ipHex(a);
      assert.match(h, /^[0-9a-f]{8}$/);
      assert.equal(h.match(/../g)!.map((x) => parseInt(x, 16)).join('.'), a, 'reversible');
      if (seen.has(h)) assert.equal(seen.get(h), a);
      seen.set(h, a);
    }
  });

  it('quota and tier names; no counter names (accounting is not named objects)', () => {
    assert.ok(!('counterNames' in limitsModule), 'counterNames is gone');
    assert.deepEqual(quotaNames(ip), { egress: 'qe_0aa60009', ingress: 'qi_0aa60009' });
    assert.equal(tierChain(100), 'conns_100');
    assert.equal(tierSet(100), 'connc_100');
  });
});

describe('LIMIT_MAPS', () => {
  it('maps a sandbox address to its objects, one map per kind of object and direction; no accounting map', () => {
    assert.deepEqual(Object.fromEntries(Object.entries(LIMIT_MAPS).map(([k, v]) => [k, [v.type, v.map]])), {
      limit_packets: ['ipv4_addr', 'limit'], limit_newconns: ['ipv4_addr', 'limit'],
      quota_egress: ['ipv4_addr', 'quota'], quota_ingress: ['ipv4_addr', 'quota'],
      conn_tier: ['ipv4_addr', 'verdict'],
    });
    for (const [name, def] of Object.entries(LIMIT_MAPS)) {
      assert.ok(def.comment.length > 10, name);
      assert.deepEqual(SANDBOX_SETS[name as keyof typeof SANDBOX_SETS], def, `${name} is a per-sandbox map`);
    }
    assert.ok(Object.keys(LIMIT_MAPS).every((k) => !k.startsWith('acct_')), 'accounting is not in the limit maps');
  });
});

describe('ACCOUNTING_SETS', () => {
  it('three address sets, each element with its own counter (the set\'s counter template), none a map', () => {
    assert.deepEqual(Object.keys(ACCOUNTING_SETS), ['acct_out', 'acct_in', 'acct_blocked']);
    for (const [name, def] of Object.entries(ACCOUNTING_SETS)) {
      assert.deepEqual(def, { type: 'ipv4_addr', stmt: [{ counter: null }], comment: def.comment }, name);
      assert.ok(typeof def.comment === 'string' && def.comment.length > 10, name);
      assert.ok(!('map' in def) && !('flags' in def), `${name} is a plain set`);
      assert.deepEqual(SANDBOX_SETS[name as keyof typeof SANDBOX_SETS], def, `${name} is a per-sandbox set`);
    }
    assert.notEqual(ACCOUNTING_SETS.acct_out.comment, ACCOUNTING_SETS.acct_in.comment);
  });

  it('the per-sandbox sets list the accounting sets after the policy sets and before the limit maps', () => {
    const keys = Object.keys(SANDBOX_SETS);
    const at = keys.indexOf('acct_out');
    assert.deepEqual(keys.slice(at, at + 3), ['acct_out', 'acct_in', 'acct_blocked']);
    assert.equal(keys[at - 1], 'unnamed_ports');
    assert.deepEqual(keys.slice(at + 3, at + 3 + Object.keys(LIMIT_MAPS).length), Object.keys(LIMIT_MAPS));
  });
});

describe('sandboxObjects', () => {
  it('a default policy: no object at all (accounting is set elements, not objects)', () => {
    assert.deepEqual(sandboxObjects(sandbox(ip)), []);
    assert.deepEqual(sandboxObjects(sandbox(ip, {})), []);
    assert.deepEqual(sandboxObjects(sandbox('10.166.1.2', undefined, 2)), []);
    // Quotas carried over a rebuild do not make objects for a sandbox without limits.
    assert.deepEqual(sandboxObjects(sandbox(ip), new Map([['qe_0aa60009', 5]])), []);
  });

  it('limits.egressRate / ingressRate: no nftables object (bandwidth is shaped by qdiscs: core/shaping.ts)', () => {
    assert.deepEqual(only({ egressRate: '8mbit' }), []);
    assert.deepEqual(only({ ingressRate: '5MB/s', ingressBurst: '1MB' }), []);
  });

  it('limits.packetsPerSecond: a packet limit in limit_packets', () => {
    assert.deepEqual(only({ packetsPerSecond: 2000 }), [
      { ip, kind: 'limit', name: 'lp_0aa60009_2000_200', map: 'limit_packets', rate: 2000, burst: 200, unit: 'packets' },
    ]);
    assert.deepEqual(only({ packetsPerSecond: 10, packetsBurst: 3 }), [
      { ip, kind: 'limit', name: 'lp_0aa60009_10_3', map: 'limit_packets', rate: 10, burst: 3, unit: 'packets' },
    ]);
  });

  it('limits.newConnsPerSecond: a packet limit in limit_newconns', () => {
    assert.deepEqual(only({ newConnsPerSecond: 50 }), [
      { ip, kind: 'limit', name: 'ln_0aa60009_50_50', map: 'limit_newconns', rate: 50, burst: 50, unit: 'packets' },
    ]);
    assert.deepEqual(only({ newConnsPerSecond: 50, newConnsBurst: 200 }), [
      { ip, kind: 'limit', name: 'ln_0aa60009_50_200', map: 'limit_newconns', rate: 50, burst: 200, unit: 'packets' },
    ]);
  });

  it('limits.egressBytes / ingressBytes: quotas qe_/qi_ in quota_egress / quota_ingress', () => {
    assert.deepEqual(only({ egressBytes: '1GB' }), [{ ip, kind: 'quota', name: 'qe_0aa60009', map: 'quota_egress', bytes: 1_000_000_000 }]);
    assert.deepEqual(only({ ingressBytes: '2GiB' }), [{ ip, kind: 'quota', name: 'qi_0aa60009', map: 'quota_ingress', bytes: 2_147_483_648 }]);
  });

  it('limits.maxConnections: the connection tier conns_<max> in conn_tier, not marked for creation', () => {
    assert.deepEqual(only({ maxConnections: 100 }), [{ ip, kind: 'tier', name: 'conns_100', map: 'conn_tier', max: 100 }]);
    assert.ok(!('create' in only({ maxConnections: 100 })[0]));
  });

  it('every limit: limits, quotas and the tier, each in its own map (and nothing else)', () => {
    const all = sandboxObjects(sandbox(ip, {
      egressRate: '8mbit', ingressRate: '5MB/s', packetsPerSecond: 2000, newConnsPerSecond: 50, maxConnections: 100, egressBytes: '1GB', ingressBytes: '2GiB',
    }));
    assert.deepEqual(all.map((o) => `${o.kind} ${o.map} ${o.name}`), [
      'limit limit_packets lp_0aa60009_2000_200', 'limit limit_newconns ln_0aa60009_50_50',
      'quota quota_egress qe_0aa60009', 'quota quota_ingress qi_0aa60009',
      'tier conn_tier conns_100',
    ]);
    assert.deepEqual(all.map((o) => o.map), Object.keys(LIMIT_MAPS), 'every map once, in order');
    assert.deepEqual([...new Set(all.map((o) => o.kind))], ['limit', 'quota', 'tier']);
    assert.ok(all.every((o) => o.ip === ip));
    // nftables object names: at most 256 bytes; ours stay short.
    assert.ok(all.every((o) => /^[a-z]+_[0-9a-f_]+$|^conns_\d+$/.test(o.name) && o.name.length < 64), JSON.stringify(all.map((o) => o.name)));
  });

  it('a limit\'s name changes with its parameters (the kernel cannot update a limit in place); a quota\'s does not', () => {
    const name = (limits: PolicyInput['limits'], map: string) => sandboxObjects(sandbox(ip, limits)).find((o) => o.map === map)!.name;
    const key = (limits: PolicyInput['limits'], map: string) => objectKey(sandboxObjects(sandbox(ip, limits)).find((o) => o.map === map)!);
    assert.notEqual(name({ packetsPerSecond: 100 }, 'limit_packets'), name({ packetsPerSecond: 200 }, 'limit_packets'));
    assert.notEqual(name({ packetsPerSecond: 100 }, 'limit_packets'), name({ packetsPerSecond: 100, packetsBurst: 7 }, 'limit_packets'));
    assert.notEqual(name({ newConnsPerSecond: 10 }, 'limit_newconns'), name({ newConnsPerSecond: 11 }, 'limit_newconns'));
    assert.equal(name({ packetsPerSecond: 100 }, 'limit_packets'), name({ packetsPerSecond: 100, packetsBurst: 100 }, 'limit_packets'), 'the same limit written otherwise: the same name');
    assert.equal(name({ egressBytes: '1GB' }, 'quota_egress'), name({ egressBytes: '2GB' }, 'quota_egress'));
    assert.equal(name({ ingressBytes: '1GB' }, 'quota_ingress'), name({ ingressBytes: 5 }, 'quota_ingress'));
    // What identifies kernel state: a quota's amount is in its key, so a change is an update.
    assert.notEqual(key({ egressBytes: '1GB' }, 'quota_egress'), key({ egressBytes: '2GB' }, 'quota_egress'));
    assert.equal(key({ egressBytes: '1GB' }, 'quota_egress'), key({ egressBytes: 1_000_000_000 }, 'quota_egress'));
    assert.notEqual(key({ maxConnections: 1 }, 'conn_tier'), key({ maxConnections: 2 }, 'conn_tier'));
  });

  it('two sandboxes never share a limit or quota; they share a tier', () => {
    const a = sandboxObjects(sandbox('10.166.0.9', { packetsPerSecond: 100, egressBytes: '1GB', maxConnections: 10 }));
    const b = sandboxObjects(sandbox('10.166.0.10', { packetsPerSecond: 100, egressBytes: '1GB', maxConnections: 10 }, 2));
    const own = (xs: SandboxObject[]) => xs.filter((o) => o.kind !== 'tier').map((o) => o.name);
    assert.equal(own(a).length, 2);
    assert.equal(own(a).filter((n) => own(b).includes(n)).length, 0);
    assert.equal(a.find((o) => o.kind === 'tier')!.name, b.find((o) => o.kind === 'tier')!.name);
  });

  it('carried use never exceeds the quota (the kernel refuses that; a lowered quota is simply spent)', () => {
    const used = new Map([['qe_0aa60009', 5_000_000], ['qi_0aa60009', 10]]);
    const objs = sandboxObjects(sandbox(ip, { egressBytes: '1MB', ingressBytes: '1MB' }), used);
    assert.deepEqual(objs.map((o) => (o as { used?: number }).used), [1_000_000, 10]);
  });

  it('quotas carry what was used, by object name', () => {
    const used = new Map([['qe_0aa60009', 4096], ['qi_0aa60009', 0], ['qe_0aa600ff', 1]]);
    const objs = sandboxObjects(sandbox(ip, { egressBytes: '1GB', ingressBytes: '1GB', packetsPerSecond: 100 }), used);
    assert.deepEqual(objs.filter((o) => o.kind === 'quota'), [
      { ip, kind: 'quota', name: 'qe_0aa60009', map: 'quota_egress', bytes: 1_000_000_000, used: 4096 },
      { ip, kind: 'quota', name: 'qi_0aa60009', map: 'quota_ingress', bytes: 1_000_000_000, used: 0 },
    ]);
    assert.ok(objs.filter((o) => o.kind !== 'quota').every((o) => !('used' in o)), 'only quotas');
    const none = sandboxObjects(sandbox(ip, { egressBytes: '1GB' }), new Map([['qe_0aa600ff', 1]]));
    assert.ok(!('used' in none.find((o) => o.kind === 'quota')!), 'another sandbox\'s use is not ours');
    // The amount used does not make it another object.
    assert.equal(objectKey(objs.find((o) => o.name === 'qe_0aa60009')!), objectKey(sandboxObjects(sandbox(ip, { egressBytes: '1GB' })).find((o) => o.name === 'qe_0aa60009')!));
  });
});

describe('objectElement', () => {
  it('a limit or quota: [address, object name] in its map', () => {
    assert.deepEqual(objectElement(only({ packetsPerSecond: 2000 })[0]), { set: 'limit_packets', elem: [ip, 'lp_0aa60009_2000_200'] });
    assert.deepEqual(objectElement(only({ ingressBytes: '1MB' })[0]), { set: 'quota_ingress', elem: [ip, 'qi_0aa60009'] });
    assert.deepEqual(objectElement({ ...only({ egressBytes: '1MB' })[0], used: 5 } as SandboxObject), { set: 'quota_egress', elem: [ip, 'qe_0aa60009'] }, 'use is not in the element');
  });

  it('a tier: [address, jump to the tier chain] in conn_tier, created or not', () => {
    const tier = only({ maxConnections: 100 })[0];
    assert.deepEqual(objectElement(tier), { set: 'conn_tier', elem: [ip, { jump: { target: 'conns_100' } }] });
    assert.deepEqual(objectElement({ ...tier, create: true } as SandboxObject), objectElement(tier));
  });
});

describe('objectKey', () => {
  it('kind and name; a quota\'s amount too', () => {
    assert.equal(objectKey(only({ packetsPerSecond: 2000 })[0]), 'limit:lp_0aa60009_2000_200');
    assert.equal(objectKey(only({ packetsPerSecond: 10, packetsBurst: 3 })[0]), 'limit:lp_0aa60009_10_3');
    assert.equal(objectKey(only({ egressBytes: 1234 })[0]), 'quota:qe_0aa60009:1234');
    assert.equal(objectKey(only({ maxConnections: 7 })[0]), 'tier:conns_7');
    assert.equal(objectKey({ ...only({ maxConnections: 7 })[0], create: true } as SandboxObject), 'tier:conns_7', 'creation is not identity');
  });
});
