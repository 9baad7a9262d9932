import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { resolve } from '../../src/config/load.js';
import { ConfigSchema } from '../../src/config/schema.js';
import { parseEgressRule } from '../../src/core/egress-rule.js';
import { instanceNames, sandboxLinkName, sandboxMac } from '../../src/core/names.js';
import { DENIED_RANGES, RulesetBuilder, egressRuleMatch, type SandboxAddressing } from '../../src/core/ruleset.js';

// dist/test/unit/ruleset.test.js -> test/unit/golden/ruleset.json (tsc does not copy JSON).
const GOLDEN = new URL('../../../test/unit/golden/ruleset.json', import.meta.url);

type Cmd = Record<string, any>;
interface Rule { chain: string; expr: Cmd[]; comment?: string }

const rulesOf = (cmds: Cmd[]): Rule[] => cmds.filter((c) => c.add?.rule).map((c) => c.add.rule as Rule);
const chainRules = (cmds: Cmd[], chain: string): Rule[] => rulesOf(cmds).filter((r) => r.chain === chain);
const indexOfComment = (rules: Rule[], prefix: string): number => rules.findIndex((r) => r.comment?.startsWith(prefix));

function config(o: Record<string, unknown> = {}) {
  return resolve(ConfigSchema.parse({ dnsUpstreams: ['192.0.2.53'], ...o }), []);
}

function sandbox(id: number, ip: string, mode: 'veth' | 'macvlan'): SandboxAddressing {
  return { ip, mac: sandboxMac(ip), mode, hostLink: sandboxLinkName(instanceNames('toastnet'), id) };
}

// What golden/ruleset.json was generated from (then reviewed by hand). Deny entries overlap
// allow entries on purpose: deny must come first. If a change to the ruleset is intended,
// regenerate the file from fullTable(goldenSandboxes()) and review the diff rule by rule.
const goldenConfig = () => config({
  instance: 'toastnet',
  subnet: '10.166.0.0/16',
  allowCidrs: ['172.16.5.0/24:5432/tcp', '10.20.0.0/16:8000-8999', '192.168.1.1/icmp'],
  denyCidrs: ['172.16.5.66', '203.0.113.0/24/udp'],
});
const goldenSandboxes = (): SandboxAddressing[] => [sandbox(1, '10.166.0.2', 'veth'), sandbox(2, '10.166.0.3', 'macvlan')];

describe('RulesetBuilder.fullTable', () => {
  const builder = new RulesetBuilder(goldenConfig());
  const cmds = builder.fullTable(goldenSandboxes()) as Cmd[];

  it('matches the golden ruleset', () => {
    const golden = JSON.parse(fs.readFileSync(GOLDEN, 'utf8'));
    assert.deepEqual(JSON.parse(JSON.stringify(cmds)), golden);
  });

  it('replaces the table atomically: add, delete, add first', () => {
    const t = { family: 'inet', name: 'toastnet' };
    assert.deepEqual(cmds.slice(0, 3), [{ add: { table: t } }, { delete: { table: t } }, { add: { table: t } }]);
  });

  it('dispatches only traffic on the instance\'s links', () => {
    const prefix = `${builder.names.linkPrefix}*`;
    assert.equal(prefix, 'tn727b*');
    for (const chain of ['forward', 'input']) {
      const rules = chainRules(cmds, chain);
      assert.ok(rules.length > 0);
      for (const r of rules) {
        const m = r.expr[0].match;
        assert.ok(['iifname', 'oifname'].includes(m.left.meta.key), JSON.stringify(r));
        assert.equal(m.op, '==');
        assert.equal(m.right, prefix);
        assert.ok(r.expr[1].jump, 'dispatch rules only jump');
      }
    }
    // Hook chains accept by default: everything not on our links passes untouched.
    const hooks = cmds.filter((c) => c.add?.chain?.hook).map((c) => c.add.chain);
    assert.deepEqual(hooks.map((h) => [h.name, h.hook, h.policy]), [
      ['forward', 'forward', 'accept'], ['input', 'input', 'accept'], ['postrouting', 'postrouting', 'accept'],
    ]);
  });

  it('judges traffic from a sandbox in the documented order', () => {
    const r = chainRules(cmds, 'from_sandbox');
    assert.deepEqual(r[0].expr, [{ jump: { target: 'source_check' } }]);
    assert.deepEqual(r[1].expr[0].match.right, ['established', 'related']);
    assert.deepEqual(r[1].expr.at(-1), { accept: null });
    const order = ['denyCidrs 172.16.5.66', 'denyCidrs 203.0.113.0/24/udp', 'allowCidrs 172.16.5.0/24:5432/tcp',
      'allowCidrs 10.20.0.0/16:8000-8999', 'allowCidrs 192.168.1.1/icmp', 'other sandboxes', 'private, metadata', 'internet'];
    const idx = order.map((c) => indexOfComment(r, c));
    assert.ok(idx.every((i) => i > 1), JSON.stringify(idx));
    assert.deepEqual([...idx].sort((a, b) => a - b), idx, `out of order: ${JSON.stringify(idx)}`);
    assert.equal(idx.at(-1), r.length - 1, 'internet is the last rule');
    for (const c of order.slice(0, 2).concat(order.slice(5, 7))) {
      assert.deepEqual(r[indexOfComment(r, c)].expr.at(-1), { jump: { target: 'deny' } }, c);
    }
    for (const c of order.slice(2, 5).concat(order.slice(7))) assert.deepEqual(r[indexOfComment(r, c)].expr.at(-1), { accept: null }, c);
  });

  it('rejects the sandbox subnet and every private/reserved range before the internet', () => {
    const r = chainRules(cmds, 'from_sandbox');
    assert.deepEqual(r[indexOfComment(r, 'other sandboxes')].expr[0].match.right, { prefix: { addr: '10.166.0.0', len: 16 } });
    const set = r[indexOfComment(r, 'private')].expr[0].match.right.set;
    assert.deepEqual(set.map((p: any) => `${p.prefix.addr}/${p.prefix.len}`), DENIED_RANGES);
    for (const must of ['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', '169.254.0.0/16', '127.0.0.0/8', '100.64.0.0/10', '224.0.0.0/4', '240.0.0.0/4']) {
      assert.ok(DENIED_RANGES.includes(must), must);
    }
  });

  it('checks the source address of every sandbox packet', () => {
    const r = chainRules(cmds, 'source_check');
    const veth = r.find((x) => x.comment === 'spoofed source (veth)')!;
    assert.equal(veth.expr[0].match.right, 'tn727bs*');
    assert.equal(veth.expr[1].match.op, '!=');
    assert.equal(veth.expr[1].match.right, '@veth_src');
    assert.deepEqual(veth.expr.at(-1), { drop: null });
    const mv = r.find((x) => x.comment === 'spoofed source (macvlan)')!;
    assert.equal(mv.expr[0].match.right, 'tn727bg');
    assert.equal(mv.expr[1].match.right, '@macvlan_src');
    assert.deepEqual(mv.expr.at(-1), { drop: null });
    assert.ok(r.some((x) => x.comment === 'no IPv6 from sandboxes'));
    assert.ok(r.some((x) => x.comment === 'invalid conntrack state'));
    // Both sandbox-facing chains start with it.
    for (const chain of ['from_sandbox', 'sandbox_to_host']) {
      assert.deepEqual(chainRules(cmds, chain)[0].expr, [{ jump: { target: 'source_check' } }], chain);
    }
  });

  it('lets sandboxes reach the host only for DNS on the gateway', () => {
    const r = chainRules(cmds, 'sandbox_to_host');
    const accepts = r.filter((x) => JSON.stringify(x.expr.at(-1)) === '{"accept":null}');
    assert.equal(accepts.length, 2, 'established replies and DNS');
    const dns = r.find((x) => x.comment === 'DNS on the gateway')!;
    assert.equal(dns.expr[0].match.right, '10.166.0.1');
    assert.deepEqual(dns.expr[1].match.right, { set: ['udp', 'tcp'] });
    assert.equal(dns.expr[2].match.right, 53);
    assert.deepEqual(r.at(-1)!.expr.at(-1), { jump: { target: 'deny' } });
  });

  it('lets nothing but replies into sandboxes', () => {
    const r = chainRules(cmds, 'to_sandbox');
    assert.equal(r.length, 2);
    assert.deepEqual(r[1].expr.at(-1), { drop: null });
  });

  it('masquerades only sandbox traffic leaving the subnet and the instance\'s links', () => {
    const r = chainRules(cmds, 'postrouting');
    assert.equal(r.length, 1);
    const [src, dst, oif, verdict] = r[0].expr;
    assert.deepEqual(src.match, { op: '==', left: { payload: { protocol: 'ip', field: 'saddr' } }, right: { prefix: { addr: '10.166.0.0', len: 16 } } });
    assert.deepEqual(dst.match, { op: '!=', left: { payload: { protocol: 'ip', field: 'daddr' } }, right: { prefix: { addr: '10.166.0.0', len: 16 } } });
    assert.deepEqual(oif.match, { op: '!=', left: { meta: { key: 'oifname' } }, right: 'tn727b*' });
    assert.deepEqual(verdict, { masquerade: null });
  });

  it('denies with a reset for TCP and admin-prohibited otherwise', () => {
    const r = chainRules(cmds, 'deny');
    assert.deepEqual(r.map((x) => x.expr.at(-1)), [{ reject: { type: 'tcp reset' } }, { reject: { type: 'icmpx', expr: 'admin-prohibited' } }]);
  });

  it('does not grow in rules with the number of sandboxes', () => {
    const b = new RulesetBuilder(config());
    const many = Array.from({ length: 300 }, (_, i) => sandbox(i + 1, `10.166.${(i + 2) >> 8}.${(i + 2) & 255}`, i % 2 ? 'macvlan' : 'veth'));
    const none = b.fullTable([]) as Cmd[];
    const two = b.fullTable(many.slice(0, 2)) as Cmd[];
    const lots = b.fullTable(many) as Cmd[];
    assert.ok(rulesOf(none).length > 10);
    assert.equal(rulesOf(two).length, rulesOf(none).length);
    assert.equal(rulesOf(lots).length, rulesOf(none).length);
    // Sandboxes only add (at most one per set) element commands.
    assert.equal(lots.length, none.length + 2);
    const elems = lots.filter((c) => c.add?.element).map((c) => [c.add.element.name, c.add.element.elem.length]);
    assert.deepEqual(elems, [['veth_src', 150], ['macvlan_src', 150]]);
    assert.equal(none.filter((c) => c.add?.element).length, 0);
  });

  it('follows the instance, subnet and gateway of the config', () => {
    const b = new RulesetBuilder(config({ instance: 'other', subnet: '10.99.0.0/24', gateway: '10.99.0.254' }));
    const c = b.fullTable([]) as Cmd[];
    const text = JSON.stringify(c);
    assert.ok(!text.includes('tn727b'), 'no trace of the default instance');
    assert.ok(!text.includes('10.166.'), 'no trace of the default subnet');
    assert.deepEqual(c[0], { add: { table: { family: 'inet', name: 'other' } } });
    assert.equal(chainRules(c, 'forward')[0].expr[0].match.right, 'tnd929*');
    assert.equal(chainRules(c, 'sandbox_to_host').find((x) => x.comment === 'DNS on the gateway')!.expr[0].match.right, '10.99.0.254');
    const fromSandbox = chainRules(c, 'from_sandbox');
    assert.deepEqual(fromSandbox[indexOfComment(fromSandbox, 'other sandboxes')].expr[0].match.right, { prefix: { addr: '10.99.0.0', len: 24 } });
    assert.equal(indexOfComment(fromSandbox, 'allowCidrs'), -1);
    assert.equal(indexOfComment(fromSandbox, 'denyCidrs'), -1);
  });
});

describe('per-sandbox commands', () => {
  const b = new RulesetBuilder(config());
  const veth = sandbox(7, '10.166.0.9', 'veth');
  const mv = sandbox(8, '10.166.0.10', 'macvlan');
  const t = { family: 'inet', table: 'toastnet' };

  it('addSandbox is exactly one set element, no rule', () => {
    assert.deepEqual(b.addSandbox(veth), [{ add: { element: { ...t, name: 'veth_src', elem: [{ concat: ['tn727bs7', '10.166.0.9'] }] } } }]);
    assert.deepEqual(b.addSandbox(mv), [{ add: { element: { ...t, name: 'macvlan_src', elem: [{ concat: ['02:74:0a:a6:00:0a', '10.166.0.10'] }] } } }]);
  });

  it('removeSandbox deletes exactly that element', () => {
    assert.deepEqual(b.removeSandbox(veth), [{ delete: { element: { ...t, name: 'veth_src', elem: [{ concat: ['tn727bs7', '10.166.0.9'] }] } } }]);
    assert.deepEqual(b.removeSandbox(mv), [{ delete: { element: { ...t, name: 'macvlan_src', elem: [{ concat: ['02:74:0a:a6:00:0a', '10.166.0.10'] }] } } }]);
  });

  it('resetSandboxes flushes both sets then adds the given elements', () => {
    assert.deepEqual(b.resetSandboxes([veth, mv]), [
      { flush: { set: { ...t, name: 'veth_src' } } },
      { flush: { set: { ...t, name: 'macvlan_src' } } },
      { add: { element: { ...t, name: 'veth_src', elem: [{ concat: ['tn727bs7', '10.166.0.9'] }] } } },
      { add: { element: { ...t, name: 'macvlan_src', elem: [{ concat: ['02:74:0a:a6:00:0a', '10.166.0.10'] }] } } },
    ]);
    assert.equal(b.resetSandboxes([]).length, 2);
  });

  it('deleteTable adds then deletes the table (no error when absent)', () => {
    assert.deepEqual(b.deleteTable(), [
      { add: { table: { family: 'inet', name: 'toastnet' } } },
      { delete: { table: { family: 'inet', name: 'toastnet' } } },
    ]);
  });
});

describe('egressRuleMatch', () => {
  const daddr = { payload: { protocol: 'ip', field: 'daddr' } };
  const l4 = { meta: { key: 'l4proto' } };
  const dport = { payload: { protocol: 'th', field: 'dport' } };
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
