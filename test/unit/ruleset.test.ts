import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { resolve } from '../../src/config/load.js';
import { ConfigSchema } from '../../src/config/schema.js';
import { parseEgressRule } from '../../src/core/egress-rule.js';
import { instanceNames, sandboxLinkName, sandboxMac } from '../../src/core/names.js';
import { resolvePolicy, type PolicyInput } from '../../src/core/policy.js';
import { DENIED_RANGES, METADATA_ADDRESS } from '../../src/core/denied-ranges.js';
import { DENY_REASONS, HARD_REASONS, INBOUND_REASONS, LIMIT_REASONS, type DenyReason } from '../../src/core/deny-reasons.js';
import { MAX_DNS_QUERY_BYTES, RESOLVER_SOCKET_MARK } from '../../src/core/resolver-contract.js';
import { RulesetBuilder } from '../../src/core/ruleset.js';
import { CT_MARK_NAME_PENDING } from '../../src/core/name-check.js';
import { egressRuleMatch } from '../../src/core/nft-expr.js';
import { DNS_ALLOWED_SET, SANDBOX_SETS, groupPeers, sandboxElements, type Element, type SandboxSpec } from '../../src/core/sandbox-elements.js';
import { ACCOUNTING_SETS, LIMIT_MAPS, objectElement, sandboxObjects, type SandboxObject } from '../../src/core/sandbox-limits.js';
import { prng } from './prng.js';

// dist/test/unit/ruleset.test.js -> test/unit/golden/ruleset.json (tsc does not copy JSON).
const GOLDEN = new URL('../../../test/unit/golden/ruleset.json', import.meta.url);

type Cmd = Record<string, any>;
interface Rule { chain: string; expr: Cmd[]; comment?: string }

type Family = 'inet' | 'arp';
// The instance has two tables of the same name: "inet" (everything IP) and "arp".
const rulesOf = (cmds: Cmd[], family: Family = 'inet'): Rule[] => cmds.filter((c) => c.add?.rule?.family === family).map((c) => c.add.rule as Rule);
const chainRules = (cmds: Cmd[], chain: string, family: Family = 'inet'): Rule[] => rulesOf(cmds, family).filter((r) => r.chain === chain);
const chainsOf = (cmds: Cmd[], family: Family = 'inet'): Cmd[] => cmds.filter((c) => c.add?.chain?.family === family).map((c) => c.add.chain);
const setsOf = (cmds: Cmd[], family: Family = 'inet'): Cmd[] => cmds.filter((c) => c.add?.set?.family === family).map((c) => c.add.set);
const indexOfComment = (rules: Rule[], prefix: string): number => rules.findIndex((r) => r.comment?.startsWith(prefix));
const ruleWithComment = (rules: Rule[], prefix: string): Rule => {
  const i = indexOfComment(rules, prefix);
  assert.ok(i >= 0, `no rule with comment "${prefix}"`);
  return rules[i];
};
const jumpTo = (reason: string) => ({ jump: { target: `deny_${reason}` } });
const isDeny = (r: Rule) => typeof r.expr.at(-1)?.jump?.target === 'string' && r.expr.at(-1)!.jump.target.startsWith('deny_');
const hasCounter = (r: Rule) => r.expr.some((e) => 'counter' in e);

const saddr = { payload: { protocol: 'ip', field: 'saddr' } };
const daddr = { payload: { protocol: 'ip', field: 'daddr' } };
const l4 = { meta: { key: 'l4proto' } };
const dport = { payload: { protocol: 'th', field: 'dport' } };
const ctState = (states: string[]) => ({ match: { op: 'in', left: { ct: { key: 'state' } }, right: states } });
/**
 * What a sandbox's packet may ride unjudged: established flows, and related packets only of
 * a flow whose original (it opened it) or reply (opened towards it) source is its address.
 */
const ownFlowExprs = [
  [ctState(['established']), { accept: null }],
  [ctState(['related']), { match: { op: '==', left: { concat: [saddr, { ct: { key: 'ip saddr', dir: 'original' } }] }, right: '@sandbox_self' } }, { accept: null }],
  [ctState(['related']), { match: { op: '==', left: { concat: [saddr, { ct: { key: 'ip saddr', dir: 'reply' } }] }, right: '@sandbox_self' } }, { accept: null }],
  [ctState(['related']), { counter: null }, { drop: null }],
];
/** An accounting rule: a plain lookup of the sandbox's address in an acct_* set (the element's counter counts). */
const acctLookup = (addr: unknown, set: 'acct_out' | 'acct_in' | 'acct_blocked') => [{ match: { op: '==', left: addr, right: `@${set}` } }];
const ACCT = ['acct_out', 'acct_in', 'acct_blocked'];
/** A deny chain's blocked count: the sandbox's (its acct_blocked element) and the reason's own (the rule's counter: exact by reason). */
const blockedCount = (addr: unknown) => [...acctLookup(addr, 'acct_blocked'), { counter: null }];

function config(o: Record<string, unknown> = {}) {
  return resolve(ConfigSchema.parse({ dnsUpstreams: ['192.0.2.53'], ...o }), []);
}

function sandbox(id: number, ip: string, mode: 'veth' | 'macvlan', policy: PolicyInput = {}): SandboxSpec {
  return { ip, mac: sandboxMac('test', id), mode, hostLink: sandboxLinkName(instanceNames('toastnet'), id), policy: resolvePolicy(policy) };
}

/** What the engine installs for live sandboxes' objects (limits, quotas, tiers). */
const liveObjects = (specs: SandboxSpec[]): SandboxObject[] => specs.flatMap((s) => sandboxObjects(s));

/** What the engine installs for live sandboxes: each one's elements, each group pair once, allows clipped to the subnet 10.166.0.0/16. */
function liveElements(specs: SandboxSpec[]): Element[] {
  const out: Element[] = [];
  const seen: SandboxSpec[] = [];
  const subnet: [number, number] = [0x0aa60000, 0x0aa6ffff];
  for (const s of specs) {
    out.push(...sandboxElements(s, groupPeers(s, seen), subnet));
    seen.push(s);
  }
  return out;
}

// What golden/ruleset.json was generated from (then reviewed by hand). Deny entries overlap
// allow entries on purpose: deny must come first. If a change to the ruleset is intended,
// regenerate the file (npx tsc -p . && TOASTNET_UPDATE_GOLDEN=1 node --test
// dist/test/unit/ruleset.test.js) and review the diff rule by rule before keeping it.
const goldenConfigInput = (): Record<string, unknown> => ({
  instance: 'toastnet',
  subnet: '10.166.0.0/16',
  allowCidrs: ['172.16.5.0/24:5432/tcp', '10.20.0.0/16:8000-8999', '192.168.1.1/icmp'],
  denyCidrs: ['172.16.5.66', '203.0.113.0/24/udp'],
  logGroup: 1234,
});
const goldenConfig = () => config(goldenConfigInput());
/**
 * One sandbox on the defaults (veth), one with every policy field (macvlan, report mode, no
 * internet, an allow with a deny inside it, a domain allow-list, dns limits, a group with
 * ports, inbound narrowed to one port), and one in the same group with inbound closed and name checks without an allow-list (veth).
 */
const goldenSandboxes = (): SandboxSpec[] => [
  { ...sandbox(1, '10.166.0.2', 'veth'), publish: [{ hostPort: 8080, containerPort: 80, protocol: 'tcp' }, { hostIP: '203.0.113.1', hostPort: 5353, containerPort: 53, protocol: 'udp' }] },
  sandbox(2, '10.166.0.3', 'macvlan', {
    mode: 'report',
    egress: { internet: false, allow: ['172.16.9.0/24:5432/tcp'], deny: ['172.16.9.9'], domains: ['PyPI.org', '*.githubusercontent.com'] },
    dns: { qps: 5, burst: 10 },
    group: { name: 'ci', ports: [8080, '9000-9100/udp'] },
    inbound: { ports: ['22/tcp'] },
  }),
  sandbox(3, '10.166.0.4', 'veth', { group: 'ci', inbound: { enabled: false }, egress: { verifyNames: true, unnamedPorts: [22] } }),
];


/** Sandbox i of a varied population: every policy field shows up somewhere. */
function variedSandbox(i: number, rnd: () => number): SandboxSpec {
  const ip = `10.166.${(i + 2) >> 8}.${(i + 2) & 255}`;
  const pick = <T>(xs: T[]): T => xs[Math.floor(rnd() * xs.length)];
  const domains = pick([undefined, undefined, ['pypi.org', '*.example.com']]);
  const policy: PolicyInput = {
    mode: pick(['enforce', 'report', undefined]),
    egress: {
      internet: pick([true, false, undefined]),
      allow: pick([[], ['172.16.0.0/12:443/tcp'], ['10.0.0.0/8', '10.1.0.0/16:22/tcp']]),
      deny: pick([[], ['10.1.2.3'], ['203.0.113.0/24:53/udp', '198.51.100.7']]),
      domains,
      ...(domains && i % 2 === 0 ? { unnamedPorts: [22, '123/udp'] } : {}),
      // Name checks without an allow-list (not drawn from rnd: the draws above stay as they were).
      ...(!domains && i % 5 === 0 ? { verifyNames: true } : {}),
    },
    group: pick([undefined, 'a', { name: 'b', ports: [8080, '9000-9010/udp'] }]),
    inbound: pick([{}, { enabled: false }, { ports: [22, '8000-8100/tcp'] }]),
    limits: pick([
      undefined,
      {},
      { egressRate: '10mbit', ingressRate: '5MB/s', egressBytes: '1GB' },
      { packetsPerSecond: 1000, newConnsPerSecond: 20, maxConnections: 100 },
      { egressRate: 125000, egressBurst: '1MiB', ingressBytes: '10GiB', maxConnections: 1000 },
    ]),
  };
  // Every third publishes a port (not drawn from rnd: the draws above stay as they were).
  return { ...sandbox(i + 1, ip, i % 2 ? 'macvlan' : 'veth', policy), ...(i % 3 === 0 ? { publish: [{ hostPort: 10000 + i, containerPort: 80, protocol: 'tcp' as const }] } : {}) };
}

describe('RulesetBuilder.fullTable', () => {
  const cfg = goldenConfig();
  const builder = new RulesetBuilder(cfg);
  const cmds = builder.fullTable(liveElements(goldenSandboxes())) as Cmd[];

  it('matches the golden ruleset', () => {
    if (process.env.TOASTNET_UPDATE_GOLDEN === '1') fs.writeFileSync(GOLDEN, `${JSON.stringify(cmds, null, 2)}\n`);
    const golden = JSON.parse(fs.readFileSync(GOLDEN, 'utf8'));
    assert.deepEqual(JSON.parse(JSON.stringify(cmds)), golden);
  });

  it('replaces both tables atomically: add, delete, add first', () => {
    const t = { family: 'inet', name: 'toastnet' };
    const a = { family: 'arp', name: 'toastnet' };
    assert.deepEqual(cmds.slice(0, 6), [
      { add: { table: t } }, { delete: { table: t } }, { add: { table: t } },
      { add: { table: a } }, { delete: { table: a } }, { add: { table: a } },
    ]);
    assert.equal(cmds.filter((c) => c.add?.table || c.delete?.table).length, 6, 'no other table command');
  });

  it('declares every per-sandbox set with its type; egress_policy is a verdict map; the limit maps are object maps keyed by address; the acct sets count per element', () => {
    const t = { family: 'inet', table: 'toastnet' };
    const sets = setsOf(cmds);
    const maps = cmds.filter((c) => c.add?.map).map((c) => c.add.map);
    assert.deepEqual(maps.map((m) => m.name), ['egress_policy', ...Object.keys(LIMIT_MAPS), 'publish_addr', 'publish_port']);
    assert.equal(maps[0].map, 'verdict');
    assert.deepEqual(maps[0].type, ['ipv4_addr', 'ipv4_addr', 'inet_proto', 'inet_service']);
    assert.deepEqual(maps[0].flags, ['interval']);
    const mapKinds: Record<string, string> = {
      limit_packets: 'limit', limit_newconns: 'limit',
      quota_egress: 'quota', quota_ingress: 'quota', conn_tier: 'verdict',
    };
    assert.deepEqual(Object.keys(mapKinds).sort(), Object.keys(LIMIT_MAPS).sort());
    // Published ports: host address . protocol . port (ranges: every address) to the sandbox's address and its port.
    for (const [m, data] of [[maps.at(-2), 'ipv4_addr'], [maps.at(-1), 'inet_service']]) {
      assert.deepEqual({ type: m.type, map: m.map, flags: m.flags }, { type: ['ipv4_addr', 'inet_proto', 'inet_service'], map: data, flags: ['interval'] });
    }
    for (const m of maps.slice(1, -2)) {
      assert.deepEqual(m, { ...t, name: m.name, type: 'ipv4_addr', map: mapKinds[m.name], comment: LIMIT_MAPS[m.name as keyof typeof LIMIT_MAPS].comment }, m.name);
      // Declared before any rule looks objects up in it.
      const declared = cmds.findIndex((c) => c.add?.map?.name === m.name);
      const used = cmds.findIndex((c) => c.add?.rule && JSON.stringify(c).includes(`"@${m.name}"`));
      assert.ok(declared >= 0 && used > declared, `${m.name}: ${declared} < ${used}`);
    }
    const mapNames = new Set(maps.map((m) => m.name));
    assert.deepEqual(sets.map((s) => s.name).sort(), [...Object.keys(SANDBOX_SETS).filter((n) => !mapNames.has(n)), 'dns_allowed', 'dns_flood', 'conn_flood', 'usage_epoch'].sort());
    assert.ok(Object.keys(SANDBOX_SETS).includes('domain_mode'));
    for (const s of sets) {
      assert.deepEqual({ family: s.family, table: s.table }, t);
      if (['dns_allowed', 'dns_flood', 'conn_flood', 'usage_epoch'].includes(s.name)) continue;
      assert.deepEqual(s.type, SANDBOX_SETS[s.name as keyof typeof SANDBOX_SETS].type, s.name);
    }
    const byName = new Map<string, any>(sets.map((s) => [s.name, s]));
    assert.deepEqual(byName.get('veth_src').type, ['ifname', 'ether_addr', 'ipv4_addr']);
    assert.deepEqual(byName.get('macvlan_src').type, ['ether_addr', 'ipv4_addr']);
    for (const name of ['group_pairs', 'inbound_ports']) assert.deepEqual(byName.get(name).flags, ['interval'], name);
    for (const name of ['veth_src', 'macvlan_src', 'no_internet', 'report_mode', 'inbound_closed', 'inbound_only', 'domain_mode']) {
      assert.equal(byName.get(name).flags, undefined, name);
    }
    // A plain type, not a one-field concatenation, which libnftables 1.0.6 then refuses plain addresses for (in the same batch).
    for (const n of ['domain_mode', 'no_internet', 'report_mode', 'inbound_closed', 'inbound_only']) assert.equal(byName.get(n).type, 'ipv4_addr', n);
    // Accounting: address sets whose every element carries its own counter (no named counter objects).
    for (const name of ACCT) {
      assert.deepEqual(byName.get(name), { ...t, name, type: 'ipv4_addr', stmt: [{ counter: null }], comment: ACCOUNTING_SETS[name as keyof typeof ACCOUNTING_SETS].comment }, name);
      assert.equal(sets.filter((s) => s.name === name).length, 1, name);
      assert.ok(!mapNames.has(name), `${name} is a set, not a map`);
      const declared = cmds.findIndex((c) => c.add?.set?.name === name);
      const used = cmds.findIndex((c) => c.add?.rule && JSON.stringify(c).includes(`"@${name}"`));
      assert.ok(declared >= 0 && used > declared, `${name}: ${declared} < ${used}`);
    }
    assert.deepEqual(sets.filter((s) => s.stmt).map((s) => s.name), [...ACCT, 'published'], 'only the acct sets and published (connections in) have a statement template');
    assert.equal(cmds.filter((c) => c.add?.counter).length, 0, 'no named counter object');
    // What DNS answers admitted: sandbox . address, each element with its own timeout.
    assert.deepEqual(byName.get('dns_allowed'), { ...t, name: 'dns_allowed', type: ['ipv4_addr', 'ipv4_addr'], flags: ['timeout'], comment: DNS_ALLOWED_SET.comment });
    assert.equal(sets.filter((s) => s.name === 'dns_allowed').length, 1);
    // Declared before any rule refers to it.
    const declared = cmds.findIndex((c) => c.add?.set?.name === 'dns_allowed');
    const used = cmds.findIndex((c) => c.add?.rule && JSON.stringify(c).includes('@dns_allowed'));
    assert.ok(declared >= 0 && used > declared, `${declared} < ${used}`);
  });

  it('dispatches only traffic on the instance\'s links', () => {
    const prefix = `${builder.names.linkPrefix}*`;
    assert.equal(prefix, 'tn727b*');
    const targets: Record<string, [string, string][]> = {
      forward: [['iifname', 'from_sandbox'], ['oifname', 'to_sandbox']],
      forward_delivered: [['oifname', 'sandbox_ingress']],
      input: [['iifname', 'sandbox_to_host']],
      output: [['oifname', 'host_to_sandbox']],
    };
    for (const [chain, want] of Object.entries(targets)) {
      const rules = chainRules(cmds, chain).filter((r) => r.comment !== 'sandbox address from elsewhere');
      assert.equal(rules.length, want.length, chain);
      rules.forEach((r, i) => {
        assert.equal(r.expr.length, 2, JSON.stringify(r));
        const m = r.expr[0].match;
        assert.equal(m.left.meta.key, want[i][0], JSON.stringify(r));
        assert.equal(m.op, '==');
        assert.equal(m.right, prefix);
        assert.deepEqual(r.expr[1], { jump: { target: want[i][1] } }, 'dispatch rules only jump');
      });
    }
    // Hook chains accept by default: everything not on our links passes untouched.
    const hooks = chainsOf(cmds).filter((h) => h.hook);
    assert.deepEqual(hooks.map((h) => [h.name, h.type, h.hook, h.prio, h.policy]), [
      ['forward', 'filter', 'forward', 0, 'accept'], ['input', 'filter', 'input', 0, 'accept'],
      ['output', 'filter', 'output', 0, 'accept'], ['postrouting', 'nat', 'postrouting', 100, 'accept'],
      // After the filter (prio 10): what a sandbox received, by whatever rule let it through.
      ['forward_delivered', 'filter', 'forward', 10, 'accept'],
      // Published ports: destination NAT for packets coming in and for the host's own.
      ['publish_in', 'nat', 'prerouting', -100, 'accept'], ['publish_local', 'nat', 'output', -100, 'accept'],
    ]);
  });

  it('drops, first in the forward and input hooks, a sandbox address arriving on any link but the instance\'s (or the host\'s loopback)', () => {
    for (const chain of ['forward', 'input']) {
      const first = chainRules(cmds, chain)[0];
      assert.equal(first.comment, 'sandbox address from elsewhere', chain);
      assert.deepEqual(first.expr, [
        { match: { op: '!=', left: { meta: { key: 'iifname' } }, right: 'lo' } },
        { match: { op: '!=', left: { meta: { key: 'iifname' } }, right: 'tn727b*' } },
        { match: { op: '==', left: saddr, right: { prefix: { addr: '10.166.0.0', len: 16 } } } },
        { counter: null }, { drop: null },
      ]);
    }
  });

  it('every jump (in rules, egress_policy and conn_tier elements) goes to a declared chain; every deny chain is jumped to', () => {
    // A sandbox with limits.maxConnections: its connection tier (chain conns_<max>) is the
    // only way to deny_connections.
    const specs = [...goldenSandboxes(), sandbox(4, '10.166.0.5', 'veth', { limits: { maxConnections: 64 } })];
    const withTier = builder.fullTable(liveElements(specs), liveObjects(specs)) as Cmd[];
    const chains = new Set(chainsOf(withTier).map((c) => c.name));
    assert.ok(chains.has('conns_64'), 'the tier chain exists');
    const inet = withTier.filter((c) => JSON.stringify(c).includes('"family":"inet"'));
    const targets = [...JSON.stringify(inet).matchAll(/"target":"([^"]+)"/g)].map((m) => m[1]);
    assert.ok(targets.length > 10);
    for (const t of targets) assert.ok(chains.has(t), `jump to undeclared chain ${t}`);
    assert.ok(targets.includes('conns_64'), 'the conn_tier element jumps to the tier chain');
    assert.deepEqual(
      withTier.filter((c) => c.add?.element?.name === 'conn_tier').map((c) => c.add.element.elem),
      [[['10.166.0.5', { jump: { target: 'conns_64' } }]]],
    );
    // And every deny_<reason> chain exists and is used somewhere.
    for (const reason of Object.keys(DENY_REASONS)) {
      assert.ok(chains.has(`deny_${reason}`), reason);
      assert.ok(targets.includes(`deny_${reason}`), `deny_${reason} is never jumped to`);
    }
    // deny_connections only from tier chains: without a tier nothing reaches it.
    const toConnections = rulesOf(withTier).filter((r) => JSON.stringify(r.expr).includes('"deny_connections"'));
    assert.deepEqual(toConnections.map((r) => r.chain), ['conns_64']);
    assert.deepEqual(rulesOf(cmds).filter((r) => JSON.stringify(r.expr).includes('"target":"deny_connections"')), [], 'no tier in the golden table, no jump to deny_connections');
  });

  it('judges traffic from a sandbox in the documented order', () => {
    const r = chainRules(cmds, 'from_sandbox');
    assert.deepEqual(r[0].expr, [{ jump: { target: 'source_check' } }]);
    // Accounting and limits: every packet, before the established shortcut.
    const ctNew = { match: { op: 'in', left: { ct: { key: 'state' } }, right: ['new'] } };
    const unconfirmed = { match: { op: '!', left: { ct: { key: 'status' } }, right: 'confirmed' } };
    const lookup = (data: string) => ({ map: { key: saddr, data } });
    assert.deepEqual(r.slice(1, 7).map((x) => [x.comment, x.expr]), [
      ['what the sandbox sent', acctLookup(saddr, 'acct_out')],
      ['limits.packetsPerSecond', [{ limit: lookup('@limit_packets') }, jumpTo('packets')]],
      ['limits.egressBytes', [{ quota: lookup('@quota_egress') }, jumpTo('quota_out')]],
      // New connections: a flow's first packet (its entry not yet confirmed), not every packet
      // of a flow without a reply yet (one-way UDP stays `new`).
      ['limits.newConnsPerSecond', [ctNew, unconfirmed, { limit: lookup('@limit_newconns') }, jumpTo('connrate')]],
      // The instance's ceiling: every sandbox, a bucket per sender made by the kernel.
      ['newConnsPerSecond', [ctNew, unconfirmed, { set: { op: 'update', elem: saddr, set: '@conn_flood', stmt: [{ limit: { rate: 1000, burst: 1000, per: 'second', inv: true } }] } }, jumpTo('conn_flood')]],
      ['limits.maxConnections', [ctNew, { vmap: { key: saddr, data: '@conn_tier' } }]],
    ]);
    assert.deepEqual(r.slice(7, 11).map((x) => x.expr), ownFlowExprs, 'established flows, then related ones only of its own flows');
    const order: [string, unknown][] = [
      ['denyCidrs 172.16.5.66', jumpTo('config')],
      ['denyCidrs 203.0.113.0/24/udp', jumpTo('config')],
      ['cloud metadata', jumpTo('metadata')],
      ['DNS elsewhere than the gateway', jumpTo('dns')],
      ['per-sandbox egress policy', undefined],
      ['same group', { accept: null }],
      ['other sandboxes', jumpTo('sandbox')],
      ['allowCidrs 172.16.5.0/24:5432/tcp', { accept: null }],
      ['allowCidrs 10.20.0.0/16:8000-8999', { accept: null }],
      ['allowCidrs 192.168.1.1/icmp', { accept: null }],
      ['private, metadata', jumpTo('private')],
      ['UDP to an admitted address names nothing', jumpTo('unnamed_udp')],
      ['name pending: answered for an allowed name', { accept: null }],
      ['answered for an allowed name', { accept: null }],
      ['domain allow-list', jumpTo('domain')],
      ['internet switched off', jumpTo('internet')],
      ['UDP to the internet names nothing', jumpTo('unnamed_udp')],
      ['another protocol to the internet names nothing', jumpTo('unnamed_proto')],
      ['name pending: to be named on the first flight', { accept: null }],
      ['internet', { accept: null }],
    ];
    const idx = order.map(([c]) => (c === 'internet' ? r.findIndex((x) => x.comment === 'internet') : indexOfComment(r, c)));
    assert.deepEqual(idx, order.map((_, i) => i + 11), `out of order or missing: ${JSON.stringify(idx)}`);
    assert.equal(r.length, order.length + 11, 'nothing else in the chain');
    for (const [c, verdict] of order) {
      if (verdict !== undefined) assert.deepEqual(r[idx[order.findIndex(([x]) => x === c)]].expr.at(-1), verdict, c);
    }
    assert.deepEqual(r.at(-1)!.expr, [{ counter: null }, { accept: null }], 'the internet is the last rule, unconditional');
  });

  it('blocks the metadata address before any sandbox policy can open it', () => {
    const r = chainRules(cmds, 'from_sandbox');
    const md = ruleWithComment(r, 'cloud metadata');
    assert.equal(METADATA_ADDRESS, '169.254.169.254');
    assert.deepEqual(md.expr, [{ match: { op: '==', left: daddr, right: '169.254.169.254' } }, { counter: null }, jumpTo('metadata')]);
    assert.ok(indexOfComment(r, 'cloud metadata') < indexOfComment(r, 'per-sandbox egress policy'));
    assert.ok(indexOfComment(r, 'cloud metadata') < indexOfComment(r, 'same group'));
    assert.ok(indexOfComment(r, 'cloud metadata') < indexOfComment(r, 'allowCidrs'));
  });

  it('allowMetadata removes only the metadata rule (the policy map then decides before the private ranges)', () => {
    const open = new RulesetBuilder(config({ ...goldenConfigInput(), allowMetadata: true })).fullTable([]) as Cmd[];
    const closed = new RulesetBuilder(config(goldenConfigInput())).fullTable([]) as Cmd[];
    assert.equal(indexOfComment(chainRules(open, 'from_sandbox'), 'cloud metadata'), -1);
    assert.ok(indexOfComment(chainRules(closed, 'from_sandbox'), 'cloud metadata') >= 0);
    const strip = (c: Cmd[]) => rulesOf(c).filter((x) => x.comment !== 'cloud metadata');
    assert.deepEqual(strip(open), strip(closed));
    assert.equal(rulesOf(open).length, rulesOf(closed).length - 1);
    // The metadata address is in the private ranges, which come after the policy map.
    const r = chainRules(open, 'from_sandbox');
    assert.ok(indexOfComment(r, 'per-sandbox egress policy') < indexOfComment(r, 'private'));
  });

  it('looks up the per-sandbox policy and group pairs by source . destination . protocol . port', () => {
    const r = chainRules(cmds, 'from_sandbox');
    const key = { concat: [saddr, daddr, l4, dport] };
    assert.deepEqual(ruleWithComment(r, 'per-sandbox egress policy').expr, [{ vmap: { key, data: '@egress_policy' } }]);
    assert.deepEqual(ruleWithComment(r, 'same group').expr, [{ match: { op: '==', left: key, right: '@group_pairs' } }, { counter: null }, { accept: null }]);
    assert.deepEqual(ruleWithComment(r, 'internet switched off').expr, [{ match: { op: '==', left: saddr, right: '@no_internet' } }, { counter: null }, jumpTo('internet')]);
  });

  it('sends DNS and DNS-over-TLS anywhere but the gateway to deny_dns, right after the metadata rule and before any policy', () => {
    const r = chainRules(cmds, 'from_sandbox');
    const dns = ruleWithComment(r, 'DNS elsewhere than the gateway');
    assert.deepEqual(dns.expr, [
      { match: { op: '==', left: l4, right: { set: ['tcp', 'udp'] } } },
      { match: { op: '==', left: dport, right: { set: [53, 853] } } },
      { counter: null }, jumpTo('dns'),
    ]);
    assert.equal(indexOfComment(r, 'DNS elsewhere than the gateway'), indexOfComment(r, 'cloud metadata') + 1);
    for (const later of ['per-sandbox egress policy', 'same group', 'allowCidrs', 'answered for an allowed name', 'internet switched off']) {
      assert.ok(indexOfComment(r, 'DNS elsewhere than the gateway') < indexOfComment(r, later), later);
    }
    // Without the metadata rule it still comes right after the instance's denials.
    const open = chainRules(new RulesetBuilder(config({ ...goldenConfigInput(), allowMetadata: true })).fullTable([]) as Cmd[], 'from_sandbox');
    assert.equal(indexOfComment(open, 'DNS elsewhere than the gateway'), indexOfComment(open, 'denyCidrs 203.0.113.0/24/udp') + 1);
    // The gateway's own resolver is reached through the input hook, where DNS is allowed.
    assert.ok(indexOfComment(chainRules(cmds, 'sandbox_to_host'), 'DNS on the gateway') >= 0);
  });

  it('after the private ranges: addresses answered for an allowed name pass, the rest of a domain-mode sandbox\'s internet is denied', () => {
    const r = chainRules(cmds, 'from_sandbox');
    assert.deepEqual(ruleWithComment(r, 'answered for an allowed name').expr, [
      { match: { op: '==', left: { concat: [saddr, daddr] }, right: '@dns_allowed' } }, { counter: null }, { accept: null },
    ]);
    assert.deepEqual(ruleWithComment(r, 'domain allow-list').expr, [
      { match: { op: '==', left: saddr, right: '@domain_mode' } }, { counter: null }, jumpTo('domain'),
    ]);
    const at = (c: string) => indexOfComment(r, c);
    // A name-checked sandbox's admitted TCP is let open pending its name, its UDP refused (core/name-check.ts).
    const admitted = { match: { op: '==', left: { concat: [saddr, daddr] }, right: '@dns_allowed' } };
    const checked = { match: { op: '==', left: saddr, right: '@name_check' } };
    assert.deepEqual(ruleWithComment(r, 'name pending').expr, [
      admitted, checked, { match: { op: '==', left: l4, right: 'tcp' } },
      { mangle: { key: { ct: { key: 'mark' } }, value: { '|': [{ ct: { key: 'mark' } }, CT_MARK_NAME_PENDING] } } },
      { counter: null }, { accept: null },
    ]);
    assert.deepEqual(ruleWithComment(r, 'UDP to an admitted address').expr, [
      admitted, checked, { match: { op: '==', left: l4, right: 'udp' } },
      { match: { op: '!=', left: { concat: [saddr, l4, dport] }, right: '@unnamed_ports' } },
      { counter: null }, jumpTo('unnamed_udp'),
    ]);
    assert.equal(at('UDP to an admitted address'), at('private, metadata') + 1, 'a DNS answer never opens private space');
    assert.equal(at('name pending'), at('UDP to an admitted address') + 1);
    assert.equal(at('answered for an allowed name'), at('name pending') + 1);
    assert.equal(at('domain allow-list'), at('answered for an allowed name') + 1);
    assert.equal(at('internet switched off'), at('domain allow-list') + 1);
    assert.ok(at('other sandboxes') < at('answered for an allowed name'), 'nor another sandbox');
    // Checks without an allow-list: the same two rules on the rest of the internet, after
    // everything that denies (a domain-mode sandbox never gets there), before the internet.
    assert.deepEqual(ruleWithComment(r, 'name pending: to be named').expr, [
      checked, { match: { op: '==', left: l4, right: 'tcp' } },
      { mangle: { key: { ct: { key: 'mark' } }, value: { '|': [{ ct: { key: 'mark' } }, CT_MARK_NAME_PENDING] } } },
      { counter: null }, { accept: null },
    ]);
    assert.deepEqual(ruleWithComment(r, 'UDP to the internet names nothing').expr, [
      checked, { match: { op: '==', left: l4, right: 'udp' } },
      { match: { op: '!=', left: { concat: [saddr, l4, dport] }, right: '@unnamed_ports' } },
      { counter: null }, jumpTo('unnamed_udp'),
    ]);
    assert.equal(at('UDP to the internet names nothing'), at('internet switched off') + 1);
    assert.deepEqual(ruleWithComment(r, 'another protocol to the internet').expr, [
      checked, { match: { op: '!=', left: l4, right: { set: ['tcp', 'udp'] } } }, { counter: null }, jumpTo('unnamed_proto'),
    ]);
    assert.equal(at('another protocol to the internet'), at('UDP to the internet names nothing') + 1);
    assert.equal(at('name pending: to be named'), at('another protocol to the internet') + 1);
  });

  it('rejects the sandbox subnet and every private/reserved range before the internet', () => {
    const r = chainRules(cmds, 'from_sandbox');
    assert.deepEqual(ruleWithComment(r, 'other sandboxes').expr[0].match, { op: '==', left: daddr, right: { prefix: { addr: '10.166.0.0', len: 16 } } });
    const priv = ruleWithComment(r, 'private');
    assert.deepEqual(priv.expr[0].match.left, daddr);
    const set = priv.expr[0].match.right.set;
    assert.deepEqual(set.map((p: any) => `${p.prefix.addr}/${p.prefix.len}`), DENIED_RANGES);
    for (const must of ['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', '169.254.0.0/16', '127.0.0.0/8', '100.64.0.0/10', '224.0.0.0/4', '240.0.0.0/4', '0.0.0.0/8']) {
      assert.ok(DENIED_RANGES.includes(must), must);
    }
  });

  it('every denying rule says why and counts', () => {
    // With a connection tier, so that its chain is judged too.
    const specs = [...goldenSandboxes(), sandbox(4, '10.166.0.5', 'veth', { limits: { maxConnections: 64 } })];
    const all = builder.fullTable(liveElements(specs), liveObjects(specs)) as Cmd[];
    /** A deny chain counts what it denies in the sandbox's blocked counter (before dropping or rejecting). */
    const denyChainCounts = (target: string): boolean => chainRules(all, target).some((x) => JSON.stringify(x.expr) === JSON.stringify(
      blockedCount(INBOUND_REASONS.includes(target.slice('deny_'.length) as DenyReason) ? daddr : saddr),
    ));
    let viaObjects = 0;
    for (const chain of ['source_check', 'from_sandbox', 'to_sandbox', 'sandbox_ingress', 'sandbox_to_host', 'host_to_sandbox', 'conns_64']) {
      const rules = chainRules(all, chain);
      assert.ok(rules.length > 0, chain);
      for (const r of rules) {
        const last = r.expr.at(-1)!;
        if (!isDeny(r) && !('drop' in last)) continue;
        assert.ok(r.comment, `${chain}: ${JSON.stringify(r)}`);
        if (r.comment === 'no ICMP redirects') continue;
        if (hasCounter(r)) continue;
        // A limit rule counts through its named objects: what matches is the limit (or quota,
        // or connection count) being over, and the deny chain it jumps to counts the packet.
        const objref = r.expr.some((e) => e.limit?.map?.data?.startsWith('@limit_') || e.quota?.map?.data?.startsWith('@quota_')
          || e.set?.stmt?.some((x: Cmd) => 'ct count' in x || 'limit' in x));
        assert.ok(objref && isDeny(r), `${chain}: ${r.comment} neither counts nor is a limit`);
        assert.ok(denyChainCounts(last.jump.target), `${chain}: ${r.comment}: ${last.jump.target} does not count`);
        viaObjects++;
      }
    }
    // packets (twice), egress quota, new connections, ingress quota, the tier, the DNS meter,
    // the new-connection ceiling (bandwidth is shaped, not here).
    assert.equal(viaObjects, 8);
  });

  it('checks the source link, MAC and address of every sandbox packet', () => {
    const r = chainRules(cmds, 'source_check');
    const veth = ruleWithComment(r, 'spoofed source (veth)');
    assert.equal(veth.expr[0].match.right, 'tn727bs*');
    assert.deepEqual(veth.expr[1].match, {
      op: '!=', left: { concat: [{ meta: { key: 'iifname' } }, { payload: { protocol: 'ether', field: 'saddr' } }, saddr] }, right: '@veth_src',
    });
    assert.deepEqual(veth.expr.at(-1), { drop: null });
    const mv = ruleWithComment(r, 'spoofed source (macvlan)');
    assert.equal(mv.expr[0].match.right, 'tn727bg');
    assert.deepEqual(mv.expr[1].match, { op: '!=', left: { concat: [{ payload: { protocol: 'ether', field: 'saddr' } }, saddr] }, right: '@macvlan_src' });
    assert.deepEqual(mv.expr.at(-1), { drop: null });
    assert.ok(r.some((x) => x.comment === 'no IPv6 from sandboxes'));
    assert.ok(r.some((x) => x.comment === 'invalid conntrack state'));
    // No IP options at all (source routes among them), before anything could accept the packet.
    assert.deepEqual(ruleWithComment(r, 'IP options').expr, [
      { match: { op: '!=', left: { payload: { protocol: 'ip', field: 'hdrlength' } }, right: 5 } }, { counter: null }, { drop: null },
    ]);
    // Nothing shorter than the 4 bytes `th dport` reads: the egress lookups would skip it.
    assert.deepEqual(ruleWithComment(r, 'no room for ports').expr, [
      { match: { op: '<', left: { payload: { protocol: 'ip', field: 'length' } }, right: 24 } }, { counter: null }, { drop: null },
    ]);
    assert.ok(r.indexOf(ruleWithComment(r, 'IP options')) < r.indexOf(ruleWithComment(r, 'no room for ports')), 'after IP options: the header is 20 bytes');
    assert.ok(r.every((x) => JSON.stringify(x.expr.at(-1)) === '{"drop":null}'), 'source_check only drops (or returns)');
    // Both sandbox-facing chains start with it.
    for (const chain of ['from_sandbox', 'sandbox_to_host']) {
      assert.deepEqual(chainRules(cmds, chain)[0].expr, [{ jump: { target: 'source_check' } }], chain);
    }
  });

  it('lets sandboxes reach the host only for DNS on the gateway', () => {
    const r = chainRules(cmds, 'sandbox_to_host');
    const accepts = r.filter((x) => JSON.stringify(x.expr.at(-1)) === '{"accept":null}');
    assert.equal(accepts.length, 4, 'established, related to its own flows (twice), and DNS');
    const dns = ruleWithComment(r, 'DNS on the gateway');
    assert.equal(dns.expr[0].match.right, '10.166.0.1');
    assert.deepEqual(dns.expr[1].match.right, { set: ['udp', 'tcp'] });
    assert.equal(dns.expr[2].match.right, 53);
    // Only to a socket carrying the resolver's mark: with the daemon down, no other *:53 service answers.
    assert.deepEqual(dns.expr[3].match, { op: '==', left: { socket: { key: 'mark' } }, right: RESOLVER_SOCKET_MARK });
    assert.deepEqual(r.at(-1)!.expr, [{ counter: null }, jumpTo('host')]);
    // What it sends the host is accounted, and its packet rate limited, before any accept.
    assert.deepEqual(r.map((x) => x.comment), [
      undefined, 'what the sandbox sent', 'limits.packetsPerSecond', 'dnsPacketsPerSecond', 'DNS datagram larger than any query',
      undefined, 'related to a flow it opened', 'related to a flow opened towards it', 'related to a flow of others',
      'DNS on the gateway, to toastnet\'s resolver', 'host services',
    ]);
    // Each sender's DNS packets to the gateway are metered (one bucket per address, made by
    // the kernel) before they can reach the resolver's shared sockets.
    const flood = ruleWithComment(r, 'dnsPacketsPerSecond');
    assert.deepEqual(flood.expr.slice(0, 3), dns.expr.slice(0, 3), 'the same packets as the DNS accept');
    assert.deepEqual(flood.expr[3], { set: { op: 'update', elem: saddr, set: '@dns_flood', stmt: [{ limit: { rate: 1000, burst: 1000, per: 'second', inv: true } }] } });
    assert.deepEqual(flood.expr[4], jumpTo('dns_flood'));
    // Datagrams larger than any query the resolver takes never take room in its buffer.
    const big = ruleWithComment(r, 'DNS datagram larger than any query');
    assert.deepEqual(big.expr.slice(0, 3), dns.expr.slice(0, 3));
    assert.deepEqual(big.expr.slice(3), [
      { match: { op: '==', left: { meta: { key: 'l4proto' } }, right: 'udp' } },
      { match: { op: '>', left: { meta: { key: 'length' } }, right: MAX_DNS_QUERY_BYTES + 28 } },
      { counter: null }, { drop: null },
    ]);
    assert.deepEqual(cmds.find((c) => c.add?.set?.name === 'dns_flood')?.add.set, { family: 'inet', table: 'toastnet', name: 'dns_flood', type: 'ipv4_addr', flags: ['timeout'], timeout: 60, size: 65536, comment: 'sandbox -> its DNS packets to the gateway, metered' });
    assert.deepEqual(cmds.find((c) => c.add?.set?.name === 'conn_flood')?.add.set, { family: 'inet', table: 'toastnet', name: 'conn_flood', type: 'ipv4_addr', flags: ['timeout'], timeout: 60, size: 65536, comment: 'sandbox -> its new connections through the host, metered' });
    assert.deepEqual(r[1].expr, acctLookup(saddr, 'acct_out'));
    // The same accounting rule as from_sandbox: one counter for everything the sandbox sends.
    assert.deepEqual(r[1], { ...ruleWithComment(chainRules(cmds, 'from_sandbox'), 'what the sandbox sent'), chain: 'sandbox_to_host' });
    assert.deepEqual(r[2].expr, [{ limit: { map: { key: saddr, data: '@limit_packets' } } }, jumpTo('packets')]);
    assert.deepEqual(r.slice(5, 9).map((x) => x.expr), ownFlowExprs);
    // The same packet-rate object as from_sandbox: one budget for everything the sandbox sends.
    assert.deepEqual(r[2], { ...ruleWithComment(chainRules(cmds, 'from_sandbox'), 'limits.packetsPerSecond'), chain: 'sandbox_to_host' });
  });

  it('the kernel-filled meters have room for every address of a subnet larger than a /16', () => {
    const big = new RulesetBuilder(config({ ...goldenConfigInput(), subnet: '10.160.0.0/12' })).fullTable([]) as Cmd[];
    for (const name of ['dns_flood', 'conn_flood']) {
      assert.equal(big.find((c) => c.add?.set?.name === name)?.add.set.size, 2 ** 20, name);
      assert.equal(cmds.find((c) => c.add?.set?.name === name)?.add.set.size, 65536, `${name}: at least 65,536`);
    }
  });

  it('lets nothing but replies into sandboxes from elsewhere', () => {
    const r = chainRules(cmds, 'to_sandbox');
    assert.deepEqual(r.map((x) => [x.comment, x.expr]), [
      [undefined, [{ match: { op: 'in', left: { ct: { key: 'state' } }, right: ['established', 'related'] } }, { accept: null }]],
      ['a published port', [
        { match: { op: 'in', left: { ct: { key: 'status' } }, right: 'dnat' } },
        { match: { op: '==', left: { concat: [daddr, { meta: { key: 'l4proto' } }, { payload: { protocol: 'th', field: 'dport' } }] }, right: '@published' } }, { accept: null },
      ]],
      ['no new connections into sandboxes from elsewhere', [{ counter: null }, { drop: null }]],
    ]);
  });

  it('translates published ports for traffic from outside and from the host, never from sandboxes, never to loopback', () => {
    const key = { concat: [daddr, { meta: { key: 'l4proto' } }, { payload: { protocol: 'th', field: 'dport' } }] };
    const translate = [
      { match: { op: '==', left: { meta: { key: 'l4proto' } }, right: { set: ['tcp', 'udp'] } } },
      { match: { op: '!=', left: daddr, right: { prefix: { addr: '127.0.0.0', len: 8 } } } },
      { match: { op: '==', left: { fib: { result: 'type', flags: ['daddr'] } }, right: 'local' } },
      { dnat: { family: 'ip', addr: { map: { key, data: '@publish_addr' } }, port: { map: { key, data: '@publish_port' } } } },
    ];
    assert.deepEqual(chainRules(cmds, 'publish_in').map((x) => x.expr), [
      [{ match: { op: '==', left: { meta: { key: 'iifname' } }, right: 'tn727b*' } }, { return: null }],
      translate,
    ]);
    assert.deepEqual(chainRules(cmds, 'publish_local').map((x) => x.expr), [translate]);
  });

  it('accounts and limits what a sandbox receives after the filter, whatever let it through', () => {
    const r = chainRules(cmds, 'sandbox_ingress');
    assert.deepEqual(r.map((x) => [x.comment, x.expr]), [
      ['what the sandbox received', acctLookup(daddr, 'acct_in')],
      ['limits.ingressBytes', [{ quota: { map: { key: daddr, data: '@quota_ingress' } } }, jumpTo('quota_in')]],
    ]);
  });

  it('accounts with plain lookups of the sandbox\'s address in the acct sets: sent by source, received by destination, blocked by the denial\'s side', () => {
    const uses = rulesOf(cmds).filter((r) => JSON.stringify(r.expr).includes('"@acct_'));
    const inbound = ['inbound', 'quota_in'];
    assert.deepEqual(uses.map((r) => [r.chain, r.comment, r.expr]), [
      ...Object.keys(DENY_REASONS).map((reason) => [`deny_${reason}`, 'the sandbox\'s blocked count', blockedCount(inbound.includes(reason) ? daddr : saddr)]),
      ['from_sandbox', 'what the sandbox sent', acctLookup(saddr, 'acct_out')],
      ['sandbox_ingress', 'what the sandbox received', acctLookup(daddr, 'acct_in')],
      ['sandbox_to_host', 'what the sandbox sent', acctLookup(saddr, 'acct_out')],
      ['host_to_sandbox', 'what the sandbox received', acctLookup(daddr, 'acct_in')],
    ]);
    const text = JSON.stringify(cmds);
    assert.ok(!text.includes('"counter":{'), 'no counter object reference (counter map lookup) anywhere');
    assert.equal(rulesOf(cmds, 'arp').filter((r) => JSON.stringify(r).includes('acct_')).length, 0);
  });

  it('lets the host into a sandbox unless its inbound policy closes or narrows it; no ICMP redirects', () => {
    const r = chainRules(cmds, 'host_to_sandbox');
    assert.equal(r.length, 5);
    assert.deepEqual(r[0], {
      family: 'inet', table: 'toastnet', chain: 'host_to_sandbox', comment: 'no ICMP redirects',
      expr: [{ match: { op: '==', left: { payload: { protocol: 'icmp', field: 'type' } }, right: 'redirect' } }, { counter: null }, { drop: null }],
    });
    // What the host sends it is accounted (not limited), before the established shortcut.
    assert.deepEqual(r[1], {
      family: 'inet', table: 'toastnet', chain: 'host_to_sandbox', comment: 'what the sandbox received',
      expr: acctLookup(daddr, 'acct_in'),
    });
    assert.deepEqual(r[2].expr, [{ match: { op: 'in', left: { ct: { key: 'state' } }, right: ['established', 'related'] } }, { accept: null }]);
    assert.deepEqual(r[3].expr, [{ match: { op: '==', left: daddr, right: '@inbound_closed' } }, { counter: null }, jumpTo('inbound')]);
    assert.deepEqual(r[4].expr, [
      { match: { op: '==', left: daddr, right: '@inbound_only' } },
      { match: { op: '!=', left: { concat: [daddr, l4, dport] }, right: '@inbound_ports' } },
      { counter: null }, jumpTo('inbound'),
    ]);
    // Nothing here accepts a new connection: the hook's policy (accept) does, after the checks.
    assert.equal(r.filter((x) => 'accept' in x.expr.at(-1)!).length, 1);
  });

  it('masquerades only sandbox traffic leaving the subnet and the instance\'s links', () => {
    const r = chainRules(cmds, 'postrouting');
    assert.equal(r.length, 1);
    const [src, dst, oif, verdict] = r[0].expr;
    assert.deepEqual(src.match, { op: '==', left: saddr, right: { prefix: { addr: '10.166.0.0', len: 16 } } });
    assert.deepEqual(dst.match, { op: '!=', left: daddr, right: { prefix: { addr: '10.166.0.0', len: 16 } } });
    assert.deepEqual(oif.match, { op: '!=', left: { meta: { key: 'oifname' } }, right: 'tn727b*' });
    assert.deepEqual(verdict, { masquerade: null });
  });

  it('each deny_<reason> chain logs (rate-limited) to the instance\'s NFLOG group, passes report mode (except hard limits), counts, then rejects (rate-limited); limits only drop', () => {
    const limits = ['conn_flood', 'connections', 'connrate', 'dns_flood', 'packets', 'quota_in', 'quota_out'];
    assert.deepEqual(Object.keys(DENY_REASONS).sort(), [
      'config', 'conn_flood', 'connections', 'connrate', 'dns', 'dns_flood', 'domain', 'host', 'inbound', 'internet',
      'metadata', 'packets', 'policy', 'private', 'quota_in', 'quota_out', 'sandbox', 'unnamed_proto', 'unnamed_udp',
    ]);
    assert.deepEqual([...LIMIT_REASONS].sort(), limits);
    assert.deepEqual([...HARD_REASONS].sort(), ['config', 'dns', 'host', 'metadata', ...limits].sort());
    assert.deepEqual([...INBOUND_REASONS].sort(), ['inbound', 'quota_in']);
    assert.ok(!HARD_REASONS.includes('domain'), 'report mode lifts the domain allow-list');
    for (const reason of Object.keys(DENY_REASONS) as DenyReason[]) {
      const r = chainRules(cmds, `deny_${reason}`);
      const hard = HARD_REASONS.includes(reason);
      const limit = LIMIT_REASONS.includes(reason);
      const addr = INBOUND_REASONS.includes(reason) ? daddr : saddr;
      assert.deepEqual(r.map((x) => x.expr), [
        [{ limit: { rate: 20, per: 'second', burst: 50 } }, { counter: null }, { log: { prefix: `tn:${reason} `, group: 1234 } }],
        ...(hard ? [] : [[{ match: { op: '==', left: addr, right: '@report_mode' } }, { counter: null }, { accept: null }]]),
        blockedCount(addr),
        ...(limit ? [[{ drop: null }]] : [
          [{ limit: { rate: 1000, per: 'second', burst: 1000, inv: true } }, { drop: null }],
          [{ match: { op: '==', left: l4, right: 'tcp' } }, { reject: { type: 'tcp reset' } }],
          [{ reject: { type: 'icmpx', expr: 'admin-prohibited' } }],
        ]),
      ], reason);
      if (!hard) assert.equal(r[1].comment, 'report mode: log only');
      else assert.ok(!JSON.stringify(r).includes('@report_mode'), `report mode must not lift ${reason}`);
      assert.equal(r[hard ? 1 : 2].comment, 'the sandbox\'s blocked count', reason);
      if (limit) assert.ok(!JSON.stringify(r).includes('reject'), `${reason} is dropped, never rejected`);
    }
  });

  it('logs to config.logGroup (derived from the instance by default)', () => {
    const c = config({ instance: 'other', subnet: '10.99.0.0/24' });
    const logs = rulesOf(new RulesetBuilder(c).fullTable([]) as Cmd[], 'inet').flatMap((x) => x.expr.filter((e) => e.log).map((e) => e.log.group));
    assert.equal(logs.length, Object.keys(DENY_REASONS).length);
    assert.ok(logs.every((g) => g === c.logGroup), JSON.stringify(logs));
    assert.notEqual(c.logGroup, 1234);
  });

  it('denyAction drop: every deny chain logs, passes report mode, then drops; nothing rejects', () => {
    const d = new RulesetBuilder(config({ ...goldenConfigInput(), denyAction: 'drop' })).fullTable([]) as Cmd[];
    assert.ok(!JSON.stringify(d).includes('reject'));
    for (const reason of Object.keys(DENY_REASONS) as DenyReason[]) {
      const r = chainRules(d, `deny_${reason}`);
      const hard = HARD_REASONS.includes(reason);
      assert.equal(r.length, hard ? 3 : 4, reason);
      assert.ok(r[0].expr.some((e) => e.log), reason);
      if (!hard) assert.deepEqual(r[1].expr.at(-1), { accept: null }, reason);
      assert.equal(r.at(-2)!.comment, 'the sandbox\'s blocked count', reason);
      assert.deepEqual(r.at(-1)!.expr, [{ drop: null }], reason);
    }
    // Only the deny chains of policy denials differ from the reject variant: limits drop in both.
    const reject = new RulesetBuilder(config(goldenConfigInput())).fullTable([]) as Cmd[];
    const outside = (c: Cmd[]) => rulesOf(c).filter((x) => !x.chain.startsWith('deny_') || LIMIT_REASONS.includes(x.chain.slice('deny_'.length) as DenyReason));
    assert.deepEqual(outside(d), outside(reject));
    assert.ok(rulesOf(reject).length > rulesOf(d).length, 'the reject variant has more deny rules');
  });

  it('does not grow in rules with the number of sandboxes, whatever their policies and limits', () => {
    const b = new RulesetBuilder(config());
    const rnd = prng(42);
    const many = Array.from({ length: 300 }, (_, i) => variedSandbox(i, rnd));
    const none = b.fullTable([]) as Cmd[];
    const two = b.fullTable(liveElements(many.slice(0, 2)), liveObjects(many.slice(0, 2))) as Cmd[];
    const lots = b.fullTable(liveElements(many), liveObjects(many)) as Cmd[];
    const tierChain = /^conns_\d+$/;
    /** Commands for the sandboxes' objects: limits, quotas, and each tier's set, chain and rule (and any named counter, of which there must be none). */
    const isObjectCmd = (x: Cmd): boolean => !!x.add && ('counter' in x.add || 'limit' in x.add || 'quota' in x.add
      || /^connc_\d+$/.test(x.add.set?.name ?? '') || tierChain.test(x.add.chain?.name ?? '') || tierChain.test(x.add.rule?.chain ?? ''));
    const allRules = (c: Cmd[]) => c.filter((x) => x.add?.rule && !tierChain.test(x.add.rule.chain));
    assert.ok(allRules(none).length > 10);
    assert.equal(allRules(two).length, allRules(none).length);
    assert.equal(allRules(lots).length, allRules(none).length);
    // One rule per connection tier in use (a distinct maxConnections), not one per sandbox.
    const withMax = many.filter((s) => s.policy.limits.maxConnections);
    assert.ok(withMax.length > 50, `${withMax.length}`);
    const tierRules = lots.filter((x) => x.add?.rule && tierChain.test(x.add.rule.chain)).map((x) => x.add.rule.chain);
    assert.deepEqual([...tierRules].sort(), ['conns_100', 'conns_1000']);
    assert.deepEqual([...new Set(withMax.map((s) => `conns_${s.policy.limits.maxConnections}`))].sort(), tierRules.sort());
    // The same structure: only element and object commands differ.
    const structure = (c: Cmd[]) => c.filter((x) => !x.add?.element && !isObjectCmd(x));
    assert.deepEqual(structure(lots), structure(none));
    assert.deepEqual(structure(two), structure(none));
    const elemCmds = lots.filter((c) => c.add?.element);
    const objCmds = lots.filter(isObjectCmd);
    assert.equal(lots.length, none.length + objCmds.length + elemCmds.length);
    assert.deepEqual(lots.slice(none.length), [...objCmds, ...elemCmds], 'objects come after the rules that use them, before the elements that point at them');
    assert.equal(none.filter(isObjectCmd).length, 0);
    // No named counters: accounting is one element per sandbox in each acct set; the objects are as its limits say.
    const named = (kind: string) => objCmds.filter((c) => kind in c.add).map((c) => c.add[kind].name);
    assert.deepEqual(named('counter'), []);
    const objects = liveObjects(many);
    assert.ok(objects.every((o) => o.kind !== ('counter' as string)));
    assert.ok(named('limit').length > 50 && named('quota').length > 50, `${named('limit').length} ${named('quota').length}`);
    assert.deepEqual(named('limit'), objects.filter((o) => o.kind === 'limit').map((o) => o.name));
    assert.deepEqual(named('quota'), objects.filter((o) => o.kind === 'quota').map((o) => o.name));
    const inetElems = elemCmds.filter((c) => c.add.element.family === 'inet');
    const arpElems = elemCmds.filter((c) => c.add.element.family === 'arp');
    assert.equal(inetElems.length + arpElems.length, elemCmds.length);
    assert.deepEqual(inetElems.map((c) => c.add.element.name).sort(), Object.keys(SANDBOX_SETS).sort(), 'every set and map used, once');
    assert.deepEqual(arpElems.map((c) => c.add.element.name), ['veth_src', 'macvlan_src'], 'the ARP table holds only the admission sets');
    for (const name of ACCT) assert.deepEqual(inetElems.find((c) => c.add.element.name === name)!.add.element.elem, many.map((s) => s.ip), name);
    assert.equal(inetElems.find((c) => c.add.element.name === 'conn_tier')!.add.element.elem.length, withMax.length);
    for (const name of ['veth_src', 'macvlan_src']) {
      const i = inetElems.find((c) => c.add.element.name === name)!.add.element.elem;
      const a = arpElems.find((c) => c.add.element.name === name)!.add.element.elem;
      assert.equal(i.length, 150, name);
      assert.deepEqual(a, i, `${name}: ARP holds the same elements`);
    }
    assert.equal(none.filter((c) => c.add?.element).length, 0);
  });

  it('follows the instance, subnet and gateway of the config', () => {
    const b = new RulesetBuilder(config({ instance: 'other', subnet: '10.99.0.0/24', gateway: '10.99.0.254' }));
    const c = b.fullTable([]) as Cmd[];
    const text = JSON.stringify(c);
    assert.ok(!text.includes('tn727b'), 'no trace of the default instance');
    assert.ok(!text.includes('10.166.'), 'no trace of the default subnet');
    assert.deepEqual(c[0], { add: { table: { family: 'inet', name: 'other' } } });
    assert.deepEqual(c[3], { add: { table: { family: 'arp', name: 'other' } } });
    assert.deepEqual(ruleWithComment(chainRules(c, 'from_sandbox', 'arp'), 'asks only for subnet addresses').expr[1].match.right, { prefix: { addr: '10.99.0.0', len: 24 } });
    assert.ok(!text.includes('"toastnet"'), 'no trace of the default table');
    assert.equal(chainRules(c, 'forward')[0].expr[1].match.right, 'tnd929*');
    assert.deepEqual(chainRules(c, 'forward')[0].expr[2].match.right, { prefix: { addr: '10.99.0.0', len: 24 } });
    assert.equal(chainRules(c, 'forward')[1].expr[0].match.right, 'tnd929*');
    assert.equal(ruleWithComment(chainRules(c, 'sandbox_to_host'), 'DNS on the gateway').expr[0].match.right, '10.99.0.254');
    const fromSandbox = chainRules(c, 'from_sandbox');
    assert.deepEqual(ruleWithComment(fromSandbox, 'other sandboxes').expr[0].match.right, { prefix: { addr: '10.99.0.0', len: 24 } });
    assert.equal(indexOfComment(fromSandbox, 'allowCidrs'), -1);
    assert.equal(indexOfComment(fromSandbox, 'denyCidrs'), -1);
  });
});

describe('RulesetBuilder.fullTable: the ARP table', () => {
  const cmds = new RulesetBuilder(goldenConfig()).fullTable(liveElements(goldenSandboxes())) as Cmd[];
  const a = { family: 'arp', table: 'toastnet' };
  const arpField = (field: string) => ({ payload: { protocol: 'arp', field } });

  it('holds only the two admission sets, typed like their inet twins', () => {
    assert.deepEqual(setsOf(cmds, 'arp'), [
      { ...a, name: 'veth_src', type: ['ifname', 'ether_addr', 'ipv4_addr'] },
      { ...a, name: 'macvlan_src', type: ['ether_addr', 'ipv4_addr'] },
    ]);
    for (const s of setsOf(cmds, 'arp')) assert.deepEqual(s.type, SANDBOX_SETS[s.name as 'veth_src' | 'macvlan_src'].type);
    assert.equal(cmds.filter((c) => c.add?.map?.family === 'arp').length, 0);
  });

  it('judges only ARP arriving on the instance\'s links', () => {
    assert.deepEqual(chainsOf(cmds, 'arp'), [
      { ...a, name: 'input', type: 'filter', hook: 'input', prio: 0, policy: 'accept' },
      { ...a, name: 'from_sandbox' },
    ]);
    assert.deepEqual(chainRules(cmds, 'input', 'arp').map((r) => r.expr), [
      [{ match: { op: '==', left: { meta: { key: 'iifname' } }, right: 'tn727b*' } }, { jump: { target: 'from_sandbox' } }],
    ]);
    assert.equal(rulesOf(cmds, 'arp').length, 4, 'no other ARP rule');
  });

  it('drops ARP for addresses outside the subnet and ARP from a sender that is not the sandbox on that link', () => {
    const r = chainRules(cmds, 'from_sandbox', 'arp');
    assert.deepEqual(r.map((x) => x.comment), ['asks only for subnet addresses', 'spoofed sender (veth)', 'spoofed sender (macvlan)']);
    // Only requests are limited to the subnet: replies answer whatever the host asked.
    assert.deepEqual(r[0].expr, [
      { match: { op: '==', left: arpField('operation'), right: 'request' } },
      { match: { op: '!=', left: arpField('daddr ip'), right: { prefix: { addr: '10.166.0.0', len: 16 } } } },
      { counter: null }, { drop: null },
    ]);
    assert.deepEqual(r[1].expr, [
      { match: { op: '==', left: { meta: { key: 'iifname' } }, right: 'tn727bs*' } },
      { match: { op: '!=', left: { concat: [{ meta: { key: 'iifname' } }, arpField('saddr ether'), arpField('saddr ip')] }, right: '@veth_src' } },
      { counter: null }, { drop: null },
    ]);
    assert.deepEqual(r[2].expr, [
      { match: { op: '==', left: { meta: { key: 'iifname' } }, right: 'tn727bg' } },
      { match: { op: '!=', left: { concat: [arpField('saddr ether'), arpField('saddr ip')] }, right: '@macvlan_src' } },
      { counter: null }, { drop: null },
    ]);
  });

  it('mirrors exactly the live admission elements', () => {
    const el = (family: Family, name: string) => cmds.filter((c) => c.add?.element?.family === family && c.add.element.name === name).map((c) => c.add.element.elem);
    assert.deepEqual(el('arp', 'veth_src'), el('inet', 'veth_src'));
    assert.deepEqual(el('arp', 'macvlan_src'), el('inet', 'macvlan_src'));
    assert.deepEqual(el('arp', 'veth_src'), [[
      { concat: ['tn727bs1', sandboxMac('test', 1), '10.166.0.2'] }, { concat: ['tn727bs3', sandboxMac('test', 3), '10.166.0.4'] },
    ]]);
    assert.deepEqual(el('arp', 'macvlan_src'), [[{ concat: [sandboxMac('test', 2), '10.166.0.3'] }]]);
    assert.deepEqual(cmds.filter((c) => c.add?.element?.family === 'arp').map((c) => c.add.element.name), ['veth_src', 'macvlan_src']);
  });
});

describe('per-sandbox commands', () => {
  const b = new RulesetBuilder(config());
  const t = { family: 'inet', table: 'toastnet' };
  const a = { family: 'arp', table: 'toastnet' };
  const veth = sandbox(7, '10.166.0.9', 'veth');
  const mv = sandbox(8, '10.166.0.10', 'macvlan');
  const rich = sandbox(9, '10.166.0.11', 'veth', {
    mode: 'report', egress: { internet: false, deny: ['198.51.100.7'], domains: ['pypi.org'] }, group: 'g', inbound: { ports: ['22/tcp'] },
  });
  const peer = sandbox(10, '10.166.0.12', 'macvlan', { group: 'g' });
  const vethElem = [{ concat: ['tn727bs7', sandboxMac('test', 7), '10.166.0.9'] }];
  const mvElem = [{ concat: [sandboxMac('test', 8), '10.166.0.10'] }];
  const selfCmd = (op: 'add' | 'delete', ip: string) => ({ [op]: { element: { ...t, name: 'sandbox_self', elem: [{ concat: [ip, ip] }] } } });
  /** A sandbox's accounting element commands: its address in each acct set (inet only). */
  const acctCmds = (op: 'add' | 'delete', ip: string | string[]) => ACCT.map((name) => ({ [op]: { element: { ...t, name, elem: Array.isArray(ip) ? ip : [ip] } } }));

  /** Only element commands, on sets the tables declare: never a rule, chain or set. */
  function assertOnlyElements(cmds: Cmd[], op: 'add' | 'delete'): void {
    for (const c of cmds) {
      assert.deepEqual(Object.keys(c), [op], JSON.stringify(c));
      assert.deepEqual(Object.keys(c[op]), ['element'], JSON.stringify(c));
      const e = c[op].element;
      if (e.family === 'arp') {
        assert.deepEqual({ family: e.family, table: e.table }, a);
        assert.ok(['veth_src', 'macvlan_src'].includes(e.name), `arp ${e.name}`);
      } else {
        assert.deepEqual({ family: e.family, table: e.table }, t);
        assert.ok(e.name in SANDBOX_SETS, e.name);
      }
      assert.ok(Array.isArray(e.elem) && e.elem.length > 0);
    }
    const ids = cmds.map((c) => `${c[op].element.family} ${c[op].element.name}`);
    assert.equal(new Set(ids).size, cmds.length, 'one command per set');
    // Every admission element is mirrored into the ARP table, right after its inet command.
    cmds.forEach((c, i) => {
      const e = c[op].element;
      if (e.family === 'inet' && ['veth_src', 'macvlan_src'].includes(e.name)) {
        assert.deepEqual(cmds[i + 1], { [op]: { element: { ...a, name: e.name, elem: e.elem } } }, `${e.name} mirrored`);
      }
    });
    assert.equal(ids.filter((x) => x.startsWith('arp ')).length, ids.filter((x) => x === 'inet veth_src' || x === 'inet macvlan_src').length);
  }

  it('add for a default sandbox is exactly its admission element, in the inet and the ARP table, and its accounting elements; no rule, no object', () => {
    assert.deepEqual(sandboxObjects(veth), []);
    assert.deepEqual(b.add(sandboxElements(veth), sandboxObjects(veth)), [
      { add: { element: { ...t, name: 'veth_src', elem: vethElem } } },
      { add: { element: { ...a, name: 'veth_src', elem: vethElem } } },
      { add: { element: { ...t, name: 'acct_out', elem: ['10.166.0.9'] } } },
      { add: { element: { ...t, name: 'acct_in', elem: ['10.166.0.9'] } } },
      { add: { element: { ...t, name: 'acct_blocked', elem: ['10.166.0.9'] } } },
      selfCmd('add', '10.166.0.9'),
    ]);
    assert.deepEqual(b.add(sandboxElements(mv)), [
      { add: { element: { ...t, name: 'macvlan_src', elem: mvElem } } },
      { add: { element: { ...a, name: 'macvlan_src', elem: mvElem } } },
      ...acctCmds('add', '10.166.0.10'),
      selfCmd('add', '10.166.0.10'),
    ]);
    assert.deepEqual(b.add([]), []);
  });

  it('add groups a sandbox\'s elements by set, keeping their order; only admission goes to ARP', () => {
    const elements = sandboxElements(rich, [peer]);
    const cmds = b.add(elements) as Cmd[];
    assertOnlyElements(cmds, 'add');
    assert.deepEqual(cmds.map((c) => `${c.add.element.family} ${c.add.element.name}`), [
      'inet veth_src', 'arp veth_src', 'inet acct_out', 'inet acct_in', 'inet acct_blocked', 'inet sandbox_self', 'inet egress_policy', 'inet no_internet', 'inet domain_mode', 'inet name_check', 'inet report_mode', 'inet inbound_only', 'inet inbound_ports', 'inet group_pairs',
    ]);
    const inet = cmds.filter((c) => c.add.element.family === 'inet');
    const flat = inet.flatMap((c) => c.add.element.elem.map((e: unknown) => ({ set: c.add.element.name, elem: e })));
    assert.deepEqual(
      [...flat].sort((x, y) => JSON.stringify(x).localeCompare(JSON.stringify(y))),
      [...elements].sort((x, y) => JSON.stringify(x).localeCompare(JSON.stringify(y))),
      'every element exactly once',
    );
    assert.deepEqual(cmds.find((c) => c.add.element.name === 'egress_policy')!.add.element.elem, [
      [{ concat: ['10.166.0.11', '198.51.100.7', { range: [0, 255] }, { range: [0, 65535] }] }, { jump: { target: 'deny_policy' } }],
    ]);
  });

  it('remove deletes exactly what add added', () => {
    for (const s of [veth, mv, rich]) {
      const elements = sandboxElements(s, s === rich ? [peer] : []);
      const added = b.add(elements) as Cmd[];
      const removed = b.remove(elements) as Cmd[];
      assertOnlyElements(removed, 'delete');
      assert.deepEqual(removed, added.map((c) => ({ delete: c.add })));
      // Recomputed from the same input: the same commands (what the engine does on rm).
      assert.deepEqual(b.remove(sandboxElements(s, s === rich ? [peer] : [])), removed);
    }
  });

  it('replace deletes the elements that go, then adds the ones that come; elements in both stay untouched', () => {
    const before = sandboxElements(veth);
    const afterSpec = sandbox(7, '10.166.0.9', 'veth', { egress: { internet: false } });
    const after = sandboxElements(afterSpec);
    const cmds = b.replace(before, after) as Cmd[];
    // Admission and accounting are the same before and after: only the switch is added, so
    // the accounting counters keep counting.
    assert.deepEqual(cmds, [{ add: { element: { ...t, name: 'no_internet', elem: ['10.166.0.9'] } } }]);
    assert.deepEqual(b.replace(after, before) as Cmd[], [{ delete: { element: { ...t, name: 'no_internet', elem: ['10.166.0.9'] } } }]);
    // An unchanged sandbox: nothing at all.
    assert.deepEqual(b.replace(before, sandboxElements(veth), sandboxObjects(veth), sandboxObjects(veth)), []);
    // A different sandbox: everything of the old out, everything of the new in.
    const other = sandbox(8, '10.166.0.10', 'veth');
    const swap = b.replace(before, sandboxElements(other)) as Cmd[];
    assert.deepEqual(swap, [...b.remove(before), ...b.add(sandboxElements(other))]);
    assert.ok(swap.some((c) => JSON.stringify(c).includes('acct_out')));
  });

  it('per-sandbox changes are element commands only, for any policy (property)', () => {
    const rnd = prng(7);
    const pop = Array.from({ length: 60 }, (_, i) => variedSandbox(i, rnd));
    for (let i = 0; i < pop.length; i++) {
      const s = pop[i];
      const peers = groupPeers(s, pop.slice(0, i));
      const elements = sandboxElements(s, peers);
      assertOnlyElements(b.add(elements) as Cmd[], 'add');
      assertOnlyElements(b.remove(elements) as Cmd[], 'delete');
      const next = variedSandbox(i, rnd);
      const r = b.replace(elements, sandboxElements(next, groupPeers(next, pop.slice(0, i)))) as Cmd[];
      assertOnlyElements(r.filter((c) => c.delete), 'delete');
      assertOnlyElements(r.filter((c) => c.add), 'add');
      assert.ok(r.every((c) => c.delete || c.add));
      const firstAdd = r.findIndex((c) => c.add);
      assert.ok(firstAdd === -1 || r.slice(firstAdd).every((c) => c.add), 'all deletes before all adds');
    }
  });

  it('resetSandboxes flushes every per-sandbox set and map (and the ARP copies), then adds the given elements', () => {
    const flushes = [
      { flush: { set: { ...t, name: 'veth_src' } } },
      { flush: { set: { ...t, name: 'macvlan_src' } } },
      { flush: { set: { ...t, name: 'sandbox_self' } } },
      { flush: { map: { ...t, name: 'egress_policy' } } },
      { flush: { set: { ...t, name: 'group_pairs' } } },
      { flush: { set: { ...t, name: 'no_internet' } } },
      { flush: { set: { ...t, name: 'report_mode' } } },
      { flush: { set: { ...t, name: 'inbound_closed' } } },
      { flush: { set: { ...t, name: 'inbound_only' } } },
      { flush: { set: { ...t, name: 'inbound_ports' } } },
      { flush: { set: { ...t, name: 'domain_mode' } } },
      { flush: { set: { ...t, name: 'name_check' } } },
      { flush: { set: { ...t, name: 'unnamed_ports' } } },
      { flush: { set: { ...t, name: 'acct_out' } } },
      { flush: { set: { ...t, name: 'acct_in' } } },
      { flush: { set: { ...t, name: 'acct_blocked' } } },
      { flush: { map: { ...t, name: 'limit_packets' } } },
      { flush: { map: { ...t, name: 'limit_newconns' } } },
      { flush: { map: { ...t, name: 'quota_egress' } } },
      { flush: { map: { ...t, name: 'quota_ingress' } } },
      { flush: { map: { ...t, name: 'conn_tier' } } },
      { flush: { map: { ...t, name: 'publish_addr' } } },
      { flush: { map: { ...t, name: 'publish_port' } } },
      { flush: { set: { ...t, name: 'published' } } },
      { flush: { set: { ...a, name: 'veth_src' } } },
      { flush: { set: { ...a, name: 'macvlan_src' } } },
      // Not a per-sandbox set, but what DNS admitted must not outlive a reset either.
      { flush: { set: { ...t, name: 'dns_allowed' } } },
    ];
    assert.equal(flushes.length, Object.keys(SANDBOX_SETS).length + 3);
    const elements = [...sandboxElements(veth), ...sandboxElements(mv)];
    assert.deepEqual(b.resetSandboxes(elements), [...flushes, ...b.add(elements)]);
    // Both sandboxes' accounting elements in one command per acct set.
    assert.deepEqual(b.add(elements), [
      { add: { element: { ...t, name: 'veth_src', elem: vethElem } } },
      { add: { element: { ...a, name: 'veth_src', elem: vethElem } } },
      ...acctCmds('add', ['10.166.0.9', '10.166.0.10']),
      { add: { element: { ...t, name: 'sandbox_self', elem: [{ concat: ['10.166.0.9', '10.166.0.9'] }, { concat: ['10.166.0.10', '10.166.0.10'] }] } } },
      { add: { element: { ...t, name: 'macvlan_src', elem: mvElem } } },
      { add: { element: { ...a, name: 'macvlan_src', elem: mvElem } } },
    ]);
    assert.deepEqual(b.resetSandboxes(elements, [...sandboxObjects(veth), ...sandboxObjects(mv)]), b.resetSandboxes(elements), 'default sandboxes: no object commands');
    assert.deepEqual(b.resetSandboxes([]), flushes);
  });

  it('allowResolved adds sandbox . address elements to dns_allowed, each with the TTL as timeout, in one command', () => {
    assert.deepEqual(b.allowResolved('10.166.0.9', ['151.101.0.223', '151.101.64.223'], 300), [
      { add: { element: { ...t, name: 'dns_allowed', elem: [
        { elem: { val: { concat: ['10.166.0.9', '151.101.0.223'] }, timeout: 300 } },
        { elem: { val: { concat: ['10.166.0.9', '151.101.64.223'] }, timeout: 300 } },
      ] } } },
    ]);
    assert.deepEqual(b.allowResolved('10.166.0.10', ['192.0.2.1'], 5), [
      { add: { element: { ...t, name: 'dns_allowed', elem: [{ elem: { val: { concat: ['10.166.0.10', '192.0.2.1'] }, timeout: 5 } }] } } },
    ]);
    assert.deepEqual(b.allowResolved('10.166.0.9', [], 300), [], 'nothing to admit: no command (an empty element list is an nft error)');
    // The set is the one fullTable declares; the ARP table knows nothing of it.
    const declared = setsOf(b.fullTable([]) as Cmd[]).find((x) => x.name === 'dns_allowed')!;
    assert.deepEqual(declared.type, ['ipv4_addr', 'ipv4_addr']);
    assert.ok(!JSON.stringify(b.allowResolved('10.166.0.9', ['192.0.2.1'], 1)).includes('"arp"'));
  });

  it('forgetResolved deletes exactly the keys allowResolved added (without timeouts)', () => {
    const addrs = ['151.101.0.223', '151.101.64.223'];
    assert.deepEqual(b.forgetResolved('10.166.0.9', addrs), [
      { delete: { element: { ...t, name: 'dns_allowed', elem: [{ concat: ['10.166.0.9', '151.101.0.223'] }, { concat: ['10.166.0.9', '151.101.64.223'] }] } } },
    ]);
    const added = (b.allowResolved('10.166.0.9', addrs, 60) as Cmd[])[0].add.element;
    const deleted = (b.forgetResolved('10.166.0.9', addrs) as Cmd[])[0].delete.element;
    assert.deepEqual(deleted.elem, added.elem.map((e: any) => e.elem.val));
    assert.deepEqual({ ...deleted, elem: undefined }, { ...added, elem: undefined });
    assert.deepEqual(b.forgetResolved('10.166.0.9', []), []);
  });

  it('deleteTable adds then deletes both tables (no error when absent)', () => {
    assert.deepEqual(b.deleteTable(), [
      { add: { table: { family: 'inet', name: 'toastnet' } } },
      { delete: { table: { family: 'inet', name: 'toastnet' } } },
      { add: { table: { family: 'arp', name: 'toastnet' } } },
      { delete: { table: { family: 'arp', name: 'toastnet' } } },
      { add: { table: { family: 'ip', name: 'toastnet' } } },
      { delete: { table: { family: 'ip', name: 'toastnet' } } },
    ]);
  });
});

/**
 * A toy kernel: what nf_tables checks, in order, within one batch, about the sandboxes'
 * objects, object maps and tier chains: an element must point at an object or chain that
 * exists, an object in use cannot be deleted, an element to delete must exist, a set cannot
 * be made twice; a limit added again is left as it is, a quota added again is updated in
 * place (keeping what it used). There are no named counters: a counter command is refused.
 */
class ToyKernel {
  readonly objects = new Map<string, { serial: number; data: Cmd }>();
  readonly elements = new Map<string, Map<string, string>>();
  readonly chains = new Set<string>(Object.keys(DENY_REASONS).map((r) => `deny_${r}`));
  readonly sets = new Set<string>();
  private serial = 0;

  apply(cmds: Cmd[]): void {
    for (const c of cmds) {
      const [op] = Object.keys(c);
      const [what] = Object.keys(c[op]);
      const x = c[op][what];
      if (x.family === 'arp') continue;
      assert.equal(x.table, 'toastnet');
      if (what === 'element') {
        for (const e of x.elem) (op === 'add' ? this.addElem(x.name, e) : this.delElem(x.name, e));
      } else if (what === 'limit' || what === 'quota') {
        const id = `${what}:${x.name}`;
        const have = this.objects.get(id);
        if (op === 'add') {
          if (!have) this.objects.set(id, { serial: ++this.serial, data: { used: 0, ...x } });
          else if (what === 'quota') have.data = { ...x, used: have.data.used };
        } else {
          assert.equal(op, 'delete');
          assert.ok(have, `delete of missing ${id}`);
          for (const [map, elems] of this.elements) {
            if (!(map in LIMIT_MAPS) || LIMIT_MAPS[map as keyof typeof LIMIT_MAPS].map !== what) continue;
            for (const v of elems.values()) assert.notEqual(v, JSON.stringify(x.name), `${id} deleted while ${map} points at it`);
          }
          this.objects.delete(id);
        }
      } else if (what === 'set' && op === 'add') {
        assert.ok(!this.sets.has(x.name), `set ${x.name} made twice`);
        this.sets.add(x.name);
      } else if (what === 'chain' && op === 'add') {
        this.chains.add(x.name);
      } else if (what === 'rule' && op === 'add') {
        assert.ok(this.chains.has(x.chain), `rule in missing chain ${x.chain}`);
        for (const m of JSON.stringify(x.expr).matchAll(/"@(connc_\d+)"/g)) assert.ok(this.sets.has(m[1]), `rule uses missing set ${m[1]}`);
        for (const m of JSON.stringify(x.expr).matchAll(/"target":"([^"]+)"/g)) assert.ok(this.chains.has(m[1]), `rule jumps to missing ${m[1]}`);
      } else {
        assert.fail(`unexpected command ${JSON.stringify(c)}`);
      }
    }
  }

  private isMap(set: string): boolean {
    return set in LIMIT_MAPS || set === 'egress_policy';
  }

  private addElem(set: string, e: any): void {
    const key = JSON.stringify(this.isMap(set) ? e[0] : e);
    const val = this.isMap(set) ? JSON.stringify(e[1]) : '';
    if (set in LIMIT_MAPS) {
      const kind = LIMIT_MAPS[set as keyof typeof LIMIT_MAPS].map;
      if (kind === 'verdict') assert.ok(this.chains.has(e[1].jump.target), `${set} jumps to missing chain ${e[1].jump.target}`);
      else assert.ok(this.objects.has(`${kind}:${e[1]}`), `${set} points at missing ${kind} ${e[1]}`);
    }
    const m = this.elements.get(set) ?? new Map<string, string>();
    this.elements.set(set, m);
    if (m.has(key)) assert.equal(m.get(key), val, `${set} ${key}: an element with other data exists`);
    m.set(key, val);
  }

  private delElem(set: string, e: any): void {
    const key = JSON.stringify(this.isMap(set) ? e[0] : e);
    assert.ok(this.elements.get(set)?.has(key), `delete of missing element ${set} ${key}`);
    this.elements.get(set)!.delete(key);
  }

  /** Which acct sets hold `ip` (each such element is the sandbox's counter). */
  accounting(ip: string): string[] {
    return ACCT.filter((set) => this.elements.get(set)?.has(JSON.stringify(ip)));
  }

  /** What the object maps hold for `ip`, by map. */
  objectMaps(ip: string): Record<string, unknown> {
    const out: Record<string, unknown> = {};
    for (const map of Object.keys(LIMIT_MAPS)) {
      const v = this.elements.get(map)?.get(JSON.stringify(ip));
      if (v !== undefined) out[map] = JSON.parse(v);
    }
    return out;
  }
}

describe('per-sandbox objects (limits, quotas, tiers) next to the accounting elements', () => {
  const b = new RulesetBuilder(config());
  const t = { family: 'inet', table: 'toastnet' };
  const ip = '10.166.0.9';
  const limited = (limits: PolicyInput['limits']) => sandbox(7, ip, 'veth', { limits });
  const every = limited({
    egressRate: '8mbit', ingressRate: '5MB/s', packetsPerSecond: 2000, newConnsPerSecond: 50, maxConnections: 100, egressBytes: '1GB', ingressBytes: '2GiB',
  });
  /** Marks connection tiers the kernel does not have yet for creation, as the engine does. */
  const mark = (objects: SandboxObject[], k?: ToyKernel): SandboxObject[] => objects.map((o) => (o.kind === 'tier' && !k?.chains.has(o.name) ? { ...o, create: true } : o));
  /** An object command ('counter' too, so that a named counter would show up here). */
  const objectCmd = (c: Cmd): boolean => ['counter', 'limit', 'quota'].some((k) => k in (c.add ?? c.delete ?? {}));
  const kindOf = (c: Cmd): string => Object.keys(c)[0] + ' ' + Object.keys(Object.values(c)[0] as Cmd)[0];

  it('add makes the objects first, then the elements pointing at them', () => {
    const objects = sandboxObjects(every);
    const cmds = b.add(sandboxElements(every), objects) as Cmd[];
    assert.deepEqual(cmds.slice(0, 4), [
      { add: { limit: { ...t, name: 'lp_0aa60009_2000_200', rate: 2000, per: 'second', burst: 200, inv: true } } },
      { add: { limit: { ...t, name: 'ln_0aa60009_50_50', rate: 50, per: 'second', burst: 50, inv: true } } },
      { add: { quota: { ...t, name: 'qe_0aa60009', bytes: 1000000000, inv: true } } },
      { add: { quota: { ...t, name: 'qi_0aa60009', bytes: 2147483648, inv: true } } },
    ]);
    const elems = cmds.slice(4);
    assert.ok(elems.every((c) => c.add?.element), 'then only elements (no tier: not marked for creation)');
    assert.deepEqual(elems.map((c) => `${c.add.element.family} ${c.add.element.name}`), [
      'inet veth_src', 'arp veth_src', 'inet acct_out', 'inet acct_in', 'inet acct_blocked', 'inet sandbox_self', ...Object.keys(LIMIT_MAPS).map((m) => `inet ${m}`),
    ]);
    const el = (name: string) => elems.find((c) => c.add.element.family === 'inet' && c.add.element.name === name)!.add.element.elem;
    assert.deepEqual(el('acct_out'), [ip]);
    assert.deepEqual(el('acct_in'), [ip]);
    assert.deepEqual(el('acct_blocked'), [ip]);
    assert.deepEqual(el('limit_packets'), [[ip, 'lp_0aa60009_2000_200']]);
    assert.deepEqual(el('quota_ingress'), [[ip, 'qi_0aa60009']]);
    assert.deepEqual(el('conn_tier'), [[ip, { jump: { target: 'conns_100' } }]]);
    // Every element pointing at an object comes after that object's command.
    for (const o of objects.filter((x) => x.kind !== 'tier')) {
      const made = cmds.findIndex((c) => c.add?.[o.kind]?.name === o.name);
      const pointed = cmds.findIndex((c) => c.add?.element?.name === o.map);
      assert.ok(made >= 0 && pointed > made, `${o.name}: ${made} < ${pointed}`);
    }
    // In that order, a kernel takes it (with the tier made too).
    const k = new ToyKernel();
    k.apply(b.add(sandboxElements(every), mark(objects)) as Cmd[]);
    assert.equal(k.objects.size, 4);
    assert.deepEqual(k.objectMaps(ip), Object.fromEntries(objects.map((o) => [o.map, (objectElement(o).elem as unknown[])[1]])));
    assert.deepEqual(k.accounting(ip), ACCT);
  });

  it('a quota carries what was used into the kernel', () => {
    const used = new Map([['qe_0aa60009', 12345]]);
    const cmds = b.add([], sandboxObjects(every, used)) as Cmd[];
    assert.deepEqual(cmds.filter((c) => c.add?.quota).map((c) => c.add.quota), [
      { ...t, name: 'qe_0aa60009', bytes: 1000000000, inv: true, used: 12345 },
      { ...t, name: 'qi_0aa60009', bytes: 2147483648, inv: true },
    ]);
  });

  it('a connection tier is made only when marked create: its counting set, chain and rule, with the rule in the same batch', () => {
    const tier = sandboxObjects(every).find((o) => o.kind === 'tier')!;
    const elem = { add: { element: { ...t, name: 'conn_tier', elem: [[ip, { jump: { target: 'conns_100' } }]] } } };
    assert.deepEqual(b.add([], [tier]), [elem], 'a known tier: only the map element');
    const made = b.add([], [{ ...tier, create: true }]) as Cmd[];
    assert.deepEqual(made, [
      { add: { set: { ...t, name: 'connc_100', type: 'ipv4_addr', size: 65535 } } },
      { add: { chain: { ...t, name: 'conns_100' } } },
      { add: { rule: { ...t, chain: 'conns_100', comment: 'over 100 connections', expr: [
        { set: { op: 'add', elem: saddr, set: '@connc_100', stmt: [{ 'ct count': { val: 100, inv: true } }] } },
        { jump: { target: 'deny_connections' } },
      ] } } },
      elem,
    ]);
    // Two sandboxes with the same maxConnections created together: the tier is made once.
    const other = sandboxObjects(sandbox(8, '10.166.0.10', 'veth', { limits: { maxConnections: 100 } }));
    const both = b.add([], mark([...sandboxObjects(every), ...other])) as Cmd[];
    assert.equal(both.filter((c) => c.add?.chain).length, 1);
    assert.equal(both.filter((c) => c.add?.set).length, 1);
    assert.deepEqual(both.find((c) => c.add?.element?.name === 'conn_tier')!.add.element.elem, [
      [ip, { jump: { target: 'conns_100' } }], ['10.166.0.10', { jump: { target: 'conns_100' } }],
    ]);
    new ToyKernel().apply(both);
  });

  it('remove deletes the elements first, then the objects; never a tier', () => {
    const elements = sandboxElements(every);
    const objects = sandboxObjects(every);
    const cmds = b.remove(elements, objects) as Cmd[];
    const firstObject = cmds.findIndex(objectCmd);
    assert.ok(firstObject > 0);
    assert.ok(cmds.slice(0, firstObject).every((c) => c.delete?.element), 'elements first');
    assert.deepEqual(cmds.slice(firstObject), objects.filter((o) => o.kind !== 'tier').map((o) => ({ delete: { [o.kind]: { ...t, name: o.name } } })));
    assert.ok(cmds.every((c) => Object.keys(c)[0] === 'delete'));
    assert.ok(!JSON.stringify(cmds.slice(firstObject)).includes('conns_'), 'tiers stay');
    assert.deepEqual(cmds.find((c) => c.delete.element?.name === 'conn_tier'), { delete: { element: { ...t, name: 'conn_tier', elem: [[ip, { jump: { target: 'conns_100' } }]] } } });
    // The element commands are exactly what add added, as deletes.
    const added = (b.add(elements, objects) as Cmd[]).filter((c) => c.add.element);
    assert.deepEqual(cmds.slice(0, firstObject), added.map((c) => ({ delete: c.add })));
    // Against the toy kernel: add then remove leaves only the tier.
    const k = new ToyKernel();
    k.apply(b.add(elements, mark(objects, k)) as Cmd[]);
    assert.equal(k.objects.size, 4);
    assert.deepEqual(k.accounting(ip), ACCT);
    k.apply(cmds);
    assert.equal(k.objects.size, 0);
    assert.deepEqual(k.objectMaps(ip), {});
    assert.deepEqual(k.accounting(ip), [], 'its accounting elements are gone');
    for (const name of ACCT) assert.deepEqual(cmds.find((c) => c.delete?.element?.name === name), { delete: { element: { ...t, name, elem: [ip] } } }, name);
    assert.ok(k.chains.has('conns_100') && k.sets.has('connc_100'));
  });

  it('replace leaves unchanged objects alone, updates a quota in place, adds changed limits before and deletes removed ones after the elements', () => {
    const before = limited({ newConnsPerSecond: 50, packetsPerSecond: 2000, egressBytes: '1GB', ingressBytes: '1GB' });
    const after = limited({ newConnsPerSecond: 60, packetsPerSecond: 2000, egressBytes: '2GB' });
    const oldObjects = sandboxObjects(before);
    const nextObjects = sandboxObjects(after);
    const cmds = b.replace(sandboxElements(before), sandboxElements(after), oldObjects, nextObjects) as Cmd[];
    const objCmds = cmds.filter(objectCmd);
    assert.deepEqual(objCmds, [
      { add: { limit: { ...t, name: 'ln_0aa60009_60_60', rate: 60, per: 'second', burst: 60, inv: true } } },
      { add: { quota: { ...t, name: 'qe_0aa60009', bytes: 2000000000, inv: true } } },
      { delete: { limit: { ...t, name: 'ln_0aa60009_50_50' } } },
      { delete: { quota: { ...t, name: 'qi_0aa60009' } } },
    ]);
    assert.ok(!JSON.stringify(objCmds).includes('counter'), 'no counter objects: no command for them');
    // Accounting elements are the same before and after: untouched, their counters keep counting.
    for (const name of ACCT) assert.deepEqual(cmds.filter((c) => c.delete?.element?.name === name || c.add?.element?.name === name), [], name);
    assert.ok(!JSON.stringify(objCmds).includes('lp_0aa60009'), 'the unchanged packet limit is not touched');
    assert.ok(!objCmds.some((c) => c.delete?.quota?.name === 'qe_0aa60009'), 'the changed quota is not deleted');
    // Order: old elements out, new objects in, new elements in, old objects out.
    assert.deepEqual(cmds.map(kindOf), [
      ...Array(cmds.findIndex((c) => c.add)).fill('delete element'),
      'add limit', 'add quota',
      ...Array(cmds.filter((c) => c.add?.element).length).fill('add element'),
      'delete limit', 'delete quota',
    ]);
    assert.deepEqual(cmds.find((c) => c.delete?.element?.name === 'limit_newconns'), { delete: { element: { ...t, name: 'limit_newconns', elem: [[ip, 'ln_0aa60009_50_50']] } } });
    assert.deepEqual(cmds.find((c) => c.add?.element?.name === 'limit_newconns'), { add: { element: { ...t, name: 'limit_newconns', elem: [[ip, 'ln_0aa60009_60_60']] } } });
    assert.equal(cmds.find((c) => c.add?.element?.name === 'quota_ingress'), undefined);
    // Nothing changes: no command at all.
    assert.deepEqual(b.replace(sandboxElements(before), sandboxElements(before), oldObjects, sandboxObjects(before)), []);
    // And a kernel takes the change: the packet limit and the quota are the same objects after it.
    const k = new ToyKernel();
    k.apply(b.add(sandboxElements(before), oldObjects) as Cmd[]);
    const serial = (id: string) => k.objects.get(id)?.serial;
    const ids = ['limit:lp_0aa60009_2000_200', 'quota:qe_0aa60009'];
    const kept = ids.map(serial);
    assert.ok(kept.every((x) => typeof x === 'number'));
    k.apply(cmds);
    assert.deepEqual(ids.map(serial), kept);
    assert.equal(k.objects.get('quota:qe_0aa60009')!.data.bytes, 2000000000);
    assert.ok(!k.objects.has('quota:qi_0aa60009') && !k.objects.has('limit:ln_0aa60009_50_50'));
    assert.deepEqual(k.accounting(ip), ACCT);
  });

  it('replace makes a new tier only when marked, and never deletes one', () => {
    const a = limited({ maxConnections: 100 });
    const c = limited({ maxConnections: 200 });
    const up = b.replace([], [], sandboxObjects(a), mark(sandboxObjects(c))) as Cmd[];
    assert.deepEqual(up.filter((x) => !x.add?.element && !x.delete?.element), (b.add([], [{ ...sandboxObjects(c).find((o) => o.kind === 'tier')!, create: true }]) as Cmd[]).slice(0, 3));
    assert.ok(up.some((x) => x.add?.rule?.chain === 'conns_200' && JSON.stringify(x).includes('"ct count":{"val":200,"inv":true}')));
    assert.ok(!up.some((x) => x.delete && !x.delete.element), 'nothing but elements deleted');
    const known = b.replace([], [], sandboxObjects(a), sandboxObjects(c)) as Cmd[];
    assert.ok(known.every((x) => x.add?.element || x.delete?.element), 'a known tier: only its map element');
    const off = b.replace([], [], sandboxObjects(a), sandboxObjects(limited({}))) as Cmd[];
    assert.ok(off.every((x) => x.add?.element || x.delete?.element), JSON.stringify(off));
    assert.deepEqual(off.find((x) => x.delete?.element?.name === 'conn_tier'), { delete: { element: { ...t, name: 'conn_tier', elem: [[ip, { jump: { target: 'conns_100' } }]] } } });
    assert.equal(off.find((x) => x.add?.element?.name === 'conn_tier'), undefined);
  });

  it('replace keeps the kernel consistent for any change of limits (property)', () => {
    const rnd = prng(11);
    const maybe = <T>(xs: T[]): T | undefined => (rnd() < 0.5 ? undefined : xs[Math.floor(rnd() * xs.length)]);
    const randomLimits = (): PolicyInput['limits'] => {
      const l: PolicyInput['limits'] = {
        egressRate: maybe(['10mbit', '20mbit', 125000]), egressBurst: maybe(['1MB']), ingressRate: maybe(['1MB/s', '8mbit']),
        packetsPerSecond: maybe([100, 1000]), newConnsPerSecond: maybe([10, 20]), newConnsBurst: maybe([40]),
        maxConnections: maybe([50, 100, 200]), egressBytes: maybe(['1GB', '2GB']), ingressBytes: maybe(['1MB', '5MB']),
      };
      // A burst only comes with its rate (a burst alone is refused).
      if (l.egressRate === undefined) delete l.egressBurst;
      if (l.newConnsPerSecond === undefined) delete l.newConnsBurst;
      return l;
    };
    const k = new ToyKernel();
    let cur = limited(randomLimits());
    const used = new Map([['qe_0aa60009', 777], ['qi_0aa60009', 888]]);
    let objs = mark(sandboxObjects(cur, used), k);
    k.apply(b.add(sandboxElements(cur), objs) as Cmd[]);
    const sizes = new Set<number>();
    for (let i = 0; i < 200; i++) {
      const next = limited(randomLimits());
      const nextObjs = mark(sandboxObjects(next), k);
      const serials = new Map([...k.objects].map(([id, o]) => [id, o.serial]));
      const usedBefore = new Map([...k.objects].filter(([id]) => id.startsWith('quota:')).map(([id, o]) => [id, o.data.used]));
      k.apply(b.replace(sandboxElements(cur), sandboxElements(next), sandboxObjects(cur), nextObjs) as Cmd[]);
      // The kernel holds exactly the next objects (and every tier made so far), each as specified.
      const want = nextObjs.filter((o) => o.kind !== 'tier');
      assert.deepEqual([...k.objects.keys()].sort(), want.map((o) => `${o.kind}:${o.name}`).sort(), `step ${i}`);
      for (const o of want) {
        const got = k.objects.get(`${o.kind}:${o.name}`)!;
        if (o.kind === 'limit') assert.deepEqual([got.data.rate, got.data.burst], [o.rate, o.burst]);
        if (o.kind === 'quota') {
          assert.equal(got.data.bytes, o.bytes);
          if (usedBefore.has(`quota:${o.name}`)) assert.equal(got.data.used, usedBefore.get(`quota:${o.name}`), 'a kept quota keeps what it used');
        }
        // Whatever existed before under the same name was kept, not made anew.
        if (serials.has(`${o.kind}:${o.name}`)) assert.equal(got.serial, serials.get(`${o.kind}:${o.name}`), `${o.name} made anew`);
      }
      assert.deepEqual(k.objectMaps(ip), Object.fromEntries(nextObjs.map((o) => [o.map, (objectElement(o).elem as unknown[])[1]])));
      assert.deepEqual(k.accounting(ip), ACCT, `step ${i}: accounting elements`);
      sizes.add(nextObjs.length);
      cur = next;
      objs = nextObjs;
    }
    // The walk went through sandboxes without objects and with many.
    assert.ok(sizes.has(0) || sizes.has(1), JSON.stringify([...sizes]));
    assert.ok(Math.max(...sizes) >= 5, JSON.stringify([...sizes]));
    assert.deepEqual([...k.chains].filter((c) => c.startsWith('conns_')).sort(), ['conns_100', 'conns_200', 'conns_50']);
  });

  it('resetSandboxes flushes, deletes stale objects, makes the live ones, then adds the elements', () => {
    const elements = sandboxElements(every);
    const objects = mark(sandboxObjects(every));
    const stale = [{ kind: 'quota' as const, name: 'qe_0aa600ff' }, { kind: 'limit' as const, name: 'le_0aa600ff_1_1' }, { kind: 'tier' as const, name: 'conns_7' }];
    const cmds = b.resetSandboxes(elements, objects, stale) as Cmd[];
    const flushes = b.resetSandboxes([]) as Cmd[];
    assert.ok(flushes.length > 0 && flushes.every((c) => c.flush));
    for (const name of ACCT) assert.equal(flushes.filter((c) => c.flush.set?.name === name).length, 1, `${name} flushed as a set`);
    assert.deepEqual(cmds, [
      ...flushes,
      { delete: { quota: { ...t, name: 'qe_0aa600ff' } } },
      { delete: { limit: { ...t, name: 'le_0aa600ff_1_1' } } },
      ...(b.add(elements, objects) as Cmd[]),
    ]);
    // The accounting elements come back with the rest.
    for (const name of ACCT) assert.deepEqual(cmds.filter((c) => c.add?.element?.name === name), [{ add: { element: { ...t, name, elem: [ip] } } }], name);
    assert.ok((b.add(elements, objects) as Cmd[]).some((c) => c.add?.chain?.name === 'conns_100'));
  });
});

describe('egressRuleMatch', () => {
  const m = (left: unknown, right: unknown) => ({ match: { op: '==', left, right } });

  it('prefix only: destination match alone', () => {
    assert.deepEqual(egressRuleMatch(parseEgressRule('10.0.0.0/8')), [m(daddr, { prefix: { addr: '10.0.0.0', len: 8 } })]);
  });

  it('a /32 is a plain address', () => {
    assert.deepEqual(egressRuleMatch(parseEgressRule('192.0.2.1')), [m(daddr, '192.0.2.1')]);
  });

  it('protocol without ports', () => {
    assert.deepEqual(egressRuleMatch(parseEgressRule('192.0.2.1/udp')), [m(daddr, '192.0.2.1'), m(l4, 'udp')]);
    assert.deepEqual(egressRuleMatch(parseEgressRule('192.0.2.0/24/icmp')), [m(daddr, { prefix: { addr: '192.0.2.0', len: 24 } }), m(l4, 'icmp')]);
  });

  it('ports without protocol mean tcp and udp', () => {
    assert.deepEqual(egressRuleMatch(parseEgressRule('198.51.100.0/24:8000-8999')), [
      m(daddr, { prefix: { addr: '198.51.100.0', len: 24 } }), m(l4, { set: ['tcp', 'udp'] }), m(dport, { range: [8000, 8999] }),
    ]);
    assert.deepEqual(egressRuleMatch(parseEgressRule('192.0.2.1:53')), [m(daddr, '192.0.2.1'), m(l4, { set: ['tcp', 'udp'] }), m(dport, 53)]);
  });

  it('port and protocol', () => {
    assert.deepEqual(egressRuleMatch(parseEgressRule('172.16.5.5:5432/tcp')), [m(daddr, '172.16.5.5'), m(l4, 'tcp'), m(dport, 5432)]);
    assert.deepEqual(egressRuleMatch(parseEgressRule('172.16.5.5:1000-2000/udp')), [m(daddr, '172.16.5.5'), m(l4, 'udp'), m(dport, { range: [1000, 2000] })]);
  });
});
