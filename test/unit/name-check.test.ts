// Name checks' pure parts: the judgement of a first flight against a sandbox's allow-list,
// the reassembly of a connection's first bytes from its queued segments (in order, out of
// order, retransmitted, and retransmitted with other bytes), the policy that turns them on,
// and the gate table the kernel gets.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  AnsweredNames, CheckedSandboxes, CT_MARK_NAME_DENIED, CT_MARK_NAME_PENDING, SKB_MARK_NAME_DENIED, SKB_MARK_NAME_QUEUED, FirstFlightStream, NAME_GATE, NameCheckPolicy, judge, nameCheckPolicy, startsFirstFlight, takeTurns,
} from '../../src/core/name-check.js';
import { parseFirstFlight } from '../../src/core/first-flight.js';
import { resolvePolicy } from '../../src/core/policy.js';
import { RulesetBuilder } from '../../src/core/ruleset.js';
import { ConfigSchema } from '../../src/config/schema.js';
import { resolve } from '../../src/config/load.js';

const policy: NameCheckPolicy = { domains: ['cdn.test', '*.example.com'], unnamedPorts: [{ from: 22, to: 22, proto: 'tcp' }], report: false };
const http = (host: string) => Buffer.from(`GET / HTTP/1.1\r\nHost: ${host}\r\n\r\n`);

describe('judge', () => {
  it('allows an allowed name, by TLS SNI or HTTP Host, wildcards as the resolver reads them', () => {
    assert.deepEqual(judge(policy, 443, { kind: 'tls', name: 'cdn.test', ech: false }), { verdict: 'allow', kind: 'tls', name: 'cdn.test' });
    assert.deepEqual(judge(policy, 80, parseFirstFlight(http('a.example.com'))), { verdict: 'allow', kind: 'http', name: 'a.example.com' });
    assert.equal(judge(policy, 80, parseFirstFlight(http('example.com'))).verdict, 'deny', '*.x does not cover x');
  });

  it('denies another name, no name, an address as the name, a malformed flight, and what names nothing off the listed ports', () => {
    const deny = (f: Parameters<typeof judge>[2], port = 443) => judge(policy, port, f) as { verdict: string; why: string; name?: string };
    assert.deepEqual(deny({ kind: 'tls', name: 'other.test', ech: false }), { verdict: 'deny', kind: 'tls', name: 'other.test', why: 'SNI other.test is not in egress.domains' });
    assert.match(deny({ kind: 'tls', name: undefined, ech: false }).why, /no SNI/);
    assert.match(deny({ kind: 'http', name: '203.0.113.20' }, 80).why, /Host is an address/);
    assert.match(deny({ kind: 'malformed', why: 'two Host headers' }, 80).why, /two Host/);
    assert.match(deny({ kind: 'other' }, 5432).why, /names nothing/);
    assert.equal(judge(policy, 22, { kind: 'other' }).verdict, 'allow', 'SSH on a listed port');
    assert.equal(judge(policy, 22, { kind: 'tls', name: 'other.test', ech: false }).verdict, 'deny', 'TLS on a listed port is still checked');
    assert.deepEqual(judge(policy, 443, { kind: 'more' }), { verdict: 'more' });
  });
});

describe('startsFirstFlight', () => {
  it('tells a new first flight (or its start) from the rest of a connection\'s bytes', () => {
    const hello = Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01]);
    assert.equal(startsFirstFlight(http('other.test')), true);
    assert.equal(startsFirstFlight(Buffer.from('GE')), true, 'the start of a request');
    assert.equal(startsFirstFlight(hello), true, 'the start of a ClientHello');
    assert.equal(startsFirstFlight(Buffer.from([0x17, 0x03, 0x03, 0x00, 0x20, 1, 2, 3])), false, 'TLS application data');
    assert.equal(startsFirstFlight(Buffer.from([0x14, 0x03, 0x03, 0x00, 0x01, 0x01])), false, 'ChangeCipherSpec');
    assert.equal(startsFirstFlight(Buffer.from('{"a":1}')), false, 'a request body');
  });
});

describe('FirstFlightStream', () => {
  const req = http('cdn.test');

  it('reassembles in-order and out-of-order segments, whatever the initial sequence number (wrapping too)', () => {
    for (const isn of [1000, 0xfffffff0]) {
      const s = new FirstFlightStream();
      assert.equal(s.add(isn, req.subarray(0, 10)).kind, 'more');
      assert.equal(s.add((isn + 20) >>> 0, req.subarray(20)).kind, 'more', 'a gap: waits');
      assert.deepEqual(s.add((isn + 10) >>> 0, req.subarray(10, 20)), { kind: 'http', name: 'cdn.test' });
    }
  });

  it('takes a retransmission of the same bytes, and refuses one with other bytes (what evades a filter that reads the first copy)', () => {
    const s = new FirstFlightStream();
    s.add(5, req.subarray(0, 16));
    assert.equal(s.add(5, req.subarray(0, 16)).kind, 'more');
    assert.deepEqual(s.add(5, req), { kind: 'http', name: 'cdn.test' }, 'overlapping, then new bytes');
    const evasive = new FirstFlightStream();
    evasive.add(5, req.subarray(0, 16));
    const other = Buffer.from(req);
    other[3] = 0x58;
    assert.equal(evasive.add(5, other.subarray(0, 20)).kind, 'malformed');
  });

  it('bounds what it keeps: bytes before the first, too far ahead, too many pieces', () => {
    const s = new FirstFlightStream();
    s.add(100, req.subarray(0, 4));
    assert.equal(s.add(90, Buffer.from('x')).kind, 'malformed');
    assert.equal(new FirstFlightStream().add(0, Buffer.alloc(17 * 1024)).kind, 'malformed');
    const many = new FirstFlightStream();
    many.add(0, Buffer.from('G'));
    let last = 'more';
    for (let i = 0; i < 70; i++) last = many.add(10 + 2 * i, Buffer.from('x')).kind;
    assert.equal(last, 'malformed');
  });
});

describe('nameCheckPolicy', () => {
  it('is on with a domain allow-list unless verifyNames is false, and without one when asked; report mode judges without cutting', () => {
    assert.equal(nameCheckPolicy(resolvePolicy({})), undefined);
    assert.deepEqual(nameCheckPolicy(resolvePolicy({ egress: { domains: ['A.test.'] } })), { domains: ['a.test'], unnamedPorts: [], report: false });
    assert.equal(nameCheckPolicy(resolvePolicy({ egress: { domains: ['a.test'], verifyNames: false } })), undefined);
    assert.deepEqual(nameCheckPolicy(resolvePolicy({ mode: 'report', egress: { domains: ['a.test'], unnamedPorts: ['22/tcp'] } })), { domains: ['a.test'], unnamedPorts: [{ from: 22, to: 22, proto: 'tcp' }], report: true });
    // Without an allow-list: asked for, checked against the sandbox's DNS answers.
    assert.deepEqual(nameCheckPolicy(resolvePolicy({ egress: { verifyNames: true, unnamedPorts: [22] } })), { unnamedPorts: [{ from: 22, to: 22 }], report: false });
    assert.equal(resolvePolicy({ egress: { verifyNames: true } }).domains, undefined);
    assert.throws(() => resolvePolicy({ egress: { unnamedPorts: [22] } }), /unnamedPorts" needs name checks/);
    assert.throws(() => resolvePolicy({ egress: { domains: ['a.test'], verifyNames: false, unnamedPorts: [22] } }), /unnamedPorts" needs name checks/);
  });
});

describe('judge without an allow-list', () => {
  const open: NameCheckPolicy = { unnamedPorts: [], report: false };
  it('allows a name the sandbox\'s DNS answered with the connection\'s address, nothing else', () => {
    const asked: string[] = [];
    const answered = (n: string) => (asked.push(n), n === 'cdn.test');
    assert.deepEqual(judge(open, 443, { kind: 'tls', name: 'cdn.test', ech: false }, answered), { verdict: 'allow', kind: 'tls', name: 'cdn.test' });
    assert.deepEqual(judge(open, 80, parseFirstFlight(http('other.test')), answered), {
      verdict: 'deny', kind: 'http', name: 'other.test', why: 'Host other.test is not a name the sandbox\'s DNS answered with this address',
    });
    assert.deepEqual(asked, ['cdn.test', 'other.test']);
    // No name, an address, or nothing named: denied without asking.
    assert.match((judge(open, 443, { kind: 'tls', name: undefined, ech: false }, answered) as { why: string }).why, /no SNI/);
    assert.match((judge(open, 443, { kind: 'tls', name: '203.0.113.20', ech: false }, () => true) as { why: string }).why, /SNI is an address/);
    assert.match((judge(open, 5432, { kind: 'other' }, () => true) as { why: string }).why, /names nothing/);
    assert.equal(judge(open, 443, { kind: 'tls', name: 'cdn.test', ech: false }).verdict, 'deny', 'nothing answered: nothing passes');
  });
});

describe('CheckedSandboxes', () => {
  const open: NameCheckPolicy = { unnamedPorts: [], report: false };
  const answer = (id: number, name = 'cdn.test') => ({ ip: '10.166.0.9', id, answer: { name, addresses: ['203.0.113.20'], until: 10_000 } });
  const answered = (c: CheckedSandboxes, name = 'cdn.test') => c.get('10.166.0.9')?.answers?.answered(name, '203.0.113.20', 1) ?? false;

  it('keeps a sandbox\'s answers across its policy changes, never for the next sandbox at its address', () => {
    const c = new CheckedSandboxes();
    c.apply({ ip: '10.166.0.9', id: 7, policy: open }, 0);
    c.apply(answer(7), 0);
    assert.equal(answered(c), true);
    c.apply({ ip: '10.166.0.9', id: 7, policy: { ...open, report: true } }, 0);
    assert.equal(answered(c), true, 'a policy change keeps the answers given');
    // Removed; an answer to it that was on its way arrives; another sandbox takes the address.
    c.apply({ ip: '10.166.0.9', id: 7 }, 0);
    assert.equal(c.get('10.166.0.9'), undefined);
    c.apply(answer(7), 0);
    c.apply({ ip: '10.166.0.9', id: 8, policy: open }, 0);
    c.apply(answer(7, 'late.test'), 0);
    assert.equal(answered(c), false, 'the old sandbox\'s answers do not pass to the new one');
    assert.equal(answered(c, 'late.test'), false, 'nor does an answer to the old one that arrives late');
    c.apply(answer(8), 0);
    assert.equal(answered(c), true);
  });

  it('records no answers for a sandbox checked against its allow-list', () => {
    const c = new CheckedSandboxes();
    c.apply({ ip: '10.166.0.9', id: 7, policy: { ...open, domains: ['cdn.test'] } }, 0);
    c.apply(answer(7), 0);
    assert.equal(c.get('10.166.0.9')?.answers, undefined);
  });
});

describe('AnsweredNames', () => {
  it('holds each name\'s addresses until their answer expires, compared as the resolver compares names', () => {
    const a = new AnsweredNames();
    a.add('CDN.test.', ['203.0.113.20', '203.0.113.21'], 2000, 0);
    assert.equal(a.answered('cdn.test', '203.0.113.20', 1000), true);
    assert.equal(a.answered('cdn.TEST.', '203.0.113.21', 1999), true);
    assert.equal(a.answered('cdn.test', '203.0.113.22', 1000), false, 'an address the answer did not give');
    assert.equal(a.answered('other.test', '203.0.113.20', 1000), false, 'another name of the same address');
    assert.equal(a.answered('cdn.test', '203.0.113.20', 2000), false, 'expired');
    // A later answer adds its addresses and drops the expired ones; a longer life wins.
    a.add('cdn.test', ['203.0.113.30'], 5000, 2500);
    assert.equal(a.answered('cdn.test', '203.0.113.30', 4000), true);
    assert.equal(a.answered('cdn.test', '203.0.113.20', 1000), false, 'expired entries are dropped when the name is answered again');
    a.add('cdn.test', ['203.0.113.30'], 3000, 2500);
    assert.equal(a.answered('cdn.test', '203.0.113.30', 4000), true, 'a shorter answer does not cut a longer one');
  });

  it('forgets the names answered longest ago past its bound on pairs, and keeps a name\'s latest addresses', () => {
    const a = new AnsweredNames(4, 2);
    a.add('a.test', ['203.0.113.1'], 1000, 0);
    a.add('b.test', ['203.0.113.2', '203.0.113.3'], 1000, 0);
    a.add('a.test', ['203.0.113.1'], 1000, 0); // answered again: now the newest
    a.add('c.test', ['203.0.113.4', '203.0.113.5'], 1000, 0); // 5 pairs: b.test goes
    assert.deepEqual([a.size, a.pairs], [2, 3]);
    assert.equal(a.answered('b.test', '203.0.113.2', 10), false);
    assert.equal(a.answered('a.test', '203.0.113.1', 10), true);
    assert.equal(a.answered('c.test', '203.0.113.5', 10), true);
    // At most perName addresses a name: an answer of many keeps its last ones, and a new
    // answer's addresses push out the oldest.
    a.add('d.test', ['203.0.113.6', '203.0.113.7', '203.0.113.8'], 1000, 0);
    assert.deepEqual(['203.0.113.6', '203.0.113.7', '203.0.113.8'].map((x) => a.answered('d.test', x, 10)), [false, true, true]);
    a.add('d.test', ['203.0.113.9'], 1000, 0);
    assert.deepEqual(['203.0.113.7', '203.0.113.8', '203.0.113.9'].map((x) => a.answered('d.test', x, 10)), [false, true, true]);
    assert.ok(a.pairs <= 4);
  });

  it('stays within its bound however much a zone answers (a hostile zone\'s thousands of records, over and over)', () => {
    const a = new AnsweredNames();
    const many = Array.from({ length: 4000 }, (_, i) => `198.18.${i >> 8}.${i & 255}`);
    const t0 = performance.now();
    for (let i = 0; i < 3000; i++) a.add(`n${i % 5000}.evil.test`, many, 3_600_000, 0);
    assert.ok(a.pairs <= 2048, `pairs held: ${a.pairs}`);
    assert.ok(performance.now() - t0 < 5000, 'linear in what is added, not in what is held');
  });
});

describe('RulesetBuilder.nameGateTable', () => {
  const b = new RulesetBuilder(resolve(ConfigSchema.parse({ dnsUpstreams: ['192.0.2.53'] }), []));
  const cmds = b.nameGateTable() as { add?: { chain?: Record<string, unknown>; set?: Record<string, unknown>; rule?: { chain: string; expr: unknown[]; comment: string } } }[];
  const rules = cmds.filter((c) => c.add?.rule?.chain === NAME_GATE.chain).map((c) => c.add!.rule!);
  const unjudged = cmds.filter((c) => c.add?.rule?.chain === NAME_GATE.unjudged.chain).map((c) => c.add!.rule!);

  it('is a table of its own after the filter on the forward hook, dropping by policy (fail closed without the queue rule)', () => {
    assert.deepEqual(cmds.slice(0, 3).map((c) => Object.keys(c)[0]), ['add', 'delete', 'add']);
    const chain = cmds.find((c) => c.add?.chain)!.add!.chain!;
    assert.deepEqual(chain, { family: 'ip', table: 'toastnet', name: NAME_GATE.chain, type: 'filter', hook: 'forward', prio: NAME_GATE.priority, policy: 'drop' });
    assert.ok(NAME_GATE.priority > 0, 'after the filter (priority 0): only what it let through is judged');
  });

  it('passes what is not this instance\'s, not pending, and data-less segments (the handshake too); resets what was judged against; nothing passes for being new', () => {
    assert.deepEqual(rules.map((r) => r.comment), [
      'not from this instance\'s sandboxes', 'not waiting for a name', 'judged against just now', 'judged against: named what it may not, or nothing',
      ...Array(11).fill('no data'), 'to the reader',
    ]);
    // Data in a SYN (TCP Fast Open) or in a packet conntrack picked up mid-stream is new too:
    // no rule lets a packet past for its conntrack state.
    assert.ok(!JSON.stringify(rules).includes('"state"'));
    const text = JSON.stringify(rules);
    assert.ok(text.includes(String(CT_MARK_NAME_PENDING | CT_MARK_NAME_DENIED)) && text.includes(String(CT_MARK_NAME_DENIED)));
    assert.deepEqual(rules[3].expr.at(-1), { reject: { type: 'tcp reset' } });
    // A packet the reader has just judged against goes round again with its own mark and is
    // reset, before anything could pass it (its connection's mark may not be written yet; it
    // is still pending or denied, so 'not waiting' does not pass it, and a mark bit set by
    // other software on packets that are not waiting resets nothing).
    assert.deepEqual(rules[2].expr, [
      { match: { op: '==', left: { '&': [{ meta: { key: 'mark' } }, SKB_MARK_NAME_DENIED] }, right: SKB_MARK_NAME_DENIED } }, { counter: null }, { reject: { type: 'tcp reset' } },
    ]);
    // Every (IP length, TCP data offset) pair without data: 40/5 to 80/15.
    assert.deepEqual(rules.slice(4, -1).map((r) => (r.expr as { match: { right: number } }[]).slice(0, 2).map((m) => m.match.right)), Array.from({ length: 11 }, (_, i) => [40 + 4 * i, 5 + i]));
    assert.ok(!text.includes('queue'), 'the queue rule comes from the kernel layer (nfqueue-codec.ts)');
  });

  it('marks what goes on to the queue, and the chain after it drops and counts by source what comes back still marked (no verdict)', () => {
    assert.deepEqual(rules.at(-1)!.expr, [{ mangle: { key: { meta: { key: 'mark' } }, value: { '|': [{ meta: { key: 'mark' } }, SKB_MARK_NAME_QUEUED] } } }]);
    const chain = cmds.filter((c) => c.add?.chain).map((c) => c.add!.chain!).find((c) => c.name === NAME_GATE.unjudged.chain)!;
    assert.equal(chain.hook, 'forward');
    assert.ok((chain.prio as number) > NAME_GATE.priority, 'after the gate: it sees what the queue rule let go on without a verdict');
    assert.equal(chain.policy, 'accept', 'everything else passes: judged packets had the bit cleared by their verdict');
    assert.equal(unjudged.length, 1);
    const [link, bit, update, drop] = unjudged[0].expr as Record<string, unknown>[];
    assert.deepEqual(link, { match: { op: '==', left: { meta: { key: 'iifname' } }, right: `${b.names.linkPrefix}*` } }, 'only what came from this instance\'s sandboxes');
    assert.deepEqual(bit, { match: { op: '==', left: { '&': [{ meta: { key: 'mark' } }, SKB_MARK_NAME_QUEUED] }, right: SKB_MARK_NAME_QUEUED } });
    assert.deepEqual(update, { set: { op: 'update', elem: { payload: { protocol: 'ip', field: 'saddr' } }, set: `@${NAME_GATE.unjudged.set}` } });
    assert.deepEqual(drop, { drop: null });
    const set = cmds.find((c) => c.add?.set)!.add!.set!;
    assert.deepEqual(set.stmt, [{ counter: null }], 'a counter per source');
    assert.ok((set.flags as string[]).includes('timeout'), 'sources forgotten after a while, so the set does not grow for ever');
  });

  it('rebuilt with the set kept: its chains go and come back, the set and its counts stay', () => {
    const kept = b.nameGateTable({ keepUnjudged: true }) as Record<string, Record<string, Record<string, unknown>>>[];
    assert.ok(!kept.some((c) => c.delete?.table), 'the table is not deleted');
    assert.ok(!kept.some((c) => c.add?.set), 'the set is not added again (the kernel made it dynamic: an add would fail)');
    for (const name of [NAME_GATE.chain, NAME_GATE.unjudged.chain]) {
      const at = kept.findIndex((c) => c.delete?.chain?.name === name);
      assert.ok(at > 0 && kept[at - 1].flush?.chain?.name === name, `${name}: flushed, then deleted`);
      assert.ok(kept.slice(at).some((c) => c.add?.chain?.name === name), `${name}: made again after`);
    }
    const rulesOf = (cs: typeof kept) => cs.filter((c) => c.add?.rule).map((c) => JSON.stringify(c));
    assert.deepEqual(rulesOf(kept), rulesOf(cmds as typeof kept), 'the same rules either way');
  });
});

describe('takeTurns', () => {
  const key = (s: string) => s[0];
  it('takes one of each key a turn, keys in order of first appearance, each key\'s items in order', () => {
    assert.deepEqual(takeTurns(['a1', 'a2', 'a3', 'a4', 'b1', 'a5', 'c1', 'b2'], key), ['a1', 'b1', 'c1', 'a2', 'b2', 'a3', 'a4', 'a5']);
  });
  it('leaves one key\'s items, and nothing, as they are', () => {
    assert.deepEqual(takeTurns(['a1', 'a2'], key), ['a1', 'a2']);
    assert.deepEqual(takeTurns([], key), []);
  });
  it('a neighbour behind a burst of 200 comes second', () => {
    const items = [...Array.from({ length: 200 }, (_, i) => `f${i}`), 'n0'];
    assert.equal(takeTurns(items, key).indexOf('n0'), 1);
  });
});
