import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import dnsPacket from 'dns-packet';
import { resolvePolicy, type PolicyInput } from '../../src/core/policy.js';
import { DnsGate, packetFacts, plainQuestion, wireFacts, type GateOptions, type GateSandbox, type QueryDecision, type QueryLogEntry } from '../../src/dns/gate.js';
import { prng, intIn } from './prng.js';

// The gate is pure: fake hooks stand in for the engine (who is at this address, who has this
// id now, admission in the kernel, the query log), and every packet is built with
// dns-packet. No socket anywhere.

const T0 = 1_700_000_000_000;
const RCODE = { NOERROR: 0, SERVFAIL: 2, NXDOMAIN: 3, REFUSED: 5 } as const;

interface Admit {
  sandbox: string;
  addresses: string[];
  ttl: number;
}

interface Harness {
  gate: DnsGate;
  admits: Admit[];
  /** What answeredName heard: names and their addresses, for checks without an allow-list. */
  named: (Admit & { name: string })[];
  logs: QueryLogEntry[];
  /** The sandbox id each log entry was given with. */
  loggedIds: number[];
  asked: string[];
  sandboxes: Map<string, GateSandbox>;
  /** A new sandbox (a new id) the fake engine knows, by address. */
  add(name: string, ip: string, policy?: PolicyInput): GateSandbox;
  /** `policy set`: same sandbox (id, name, address), a new policy object. */
  setPolicy(s: GateSandbox, policy: PolicyInput): GateSandbox;
  /** The sandbox is removed: neither its address nor its id finds it. */
  remove(s: GateSandbox): void;
}

function harness(o: Partial<GateOptions> = {}): Harness {
  const sandboxes = new Map<string, GateSandbox>();
  const admits: Admit[] = [];
  const named: (Admit & { name: string })[] = [];
  const logs: QueryLogEntry[] = [];
  const loggedIds: number[] = [];
  const asked: string[] = [];
  let nextId = 1;
  const gate = new DnsGate({
    sandbox: (ip) => {
      asked.push(ip);
      return sandboxes.get(ip);
    },
    sandboxById: (id) => [...sandboxes.values()].find((s) => s.id === id),
    admit: (s, addresses, ttl) => admits.push({ sandbox: s.name, addresses: [...addresses], ttl }),
    answeredName: (s, name, addresses, ttl) => named.push({ sandbox: s.name, name, addresses: [...addresses], ttl }),
    log: (e, s) => {
      logs.push(structuredClone(e));
      loggedIds.push(s.id);
    },
  }, { minTtl: 5, maxTtl: 3600, refuseWith: 'refused', subnet: '10.166.0.0/16', ...o });
  return {
    gate, admits, named, logs, loggedIds, asked, sandboxes,
    add(name, ip, policy = {}) {
      const s = { id: nextId++, name, ip, policy: resolvePolicy(policy) };
      sandboxes.set(ip, s);
      return s;
    },
    setPolicy(s, policy) {
      const next = { ...s, policy: resolvePolicy(policy) };
      sandboxes.set(s.ip, next);
      return next;
    },
    remove(s) {
      if (sandboxes.get(s.ip)?.id === s.id) sandboxes.delete(s.ip);
    },
  };
}

function query(name: string, o: { type?: dnsPacket.RecordType; id?: number; rd?: boolean } = {}): Buffer {
  return dnsPacket.encode({
    type: 'query', id: o.id ?? 4242, flags: o.rd === false ? 0 : dnsPacket.RECURSION_DESIRED,
    questions: [{ type: o.type ?? 'A', name }],
  });
}

const A = (name: string, data: string, ttl = 300): dnsPacket.Answer => ({ type: 'A', name, ttl, data });
const CNAME = (name: string, data: string, ttl = 300): dnsPacket.Answer => ({ type: 'CNAME', name, ttl, data });

function answer(name: string, answers: dnsPacket.Answer[], o: { rcode?: number; id?: number; type?: dnsPacket.RecordType; authorities?: dnsPacket.Answer[] } = {}): Buffer {
  return dnsPacket.encode({
    type: 'response', id: o.id ?? 4242,
    flags: dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE | (o.rcode ?? RCODE.NOERROR),
    questions: [{ type: o.type ?? 'A', name }],
    answers,
    authorities: o.authorities ?? [],
  });
}

/** The reply of a decision that answers the sandbox itself, decoded. */
function replyOf(d: QueryDecision): dnsPacket.DecodedPacket & { rcode?: string } {
  assert.equal(d.forward, false, 'expected the gate to answer itself');
  assert.ok(!d.forward && d.reply, 'expected a reply');
  return dnsPacket.decode(d.reply) as dnsPacket.DecodedPacket & { rcode?: string };
}

/** What the gate sends for an answer to a sandbox that is still there: always something. */
function sent(gate: DnsGate, s: GateSandbox, buf: Buffer, t: number, cached?: { packet: dnsPacket.Packet; age: number }): Buffer {
  const out = gate.onAnswer(s, buf, t, cached);
  assert.ok(out, 'an answer for a live sandbox is sent');
  return out;
}

const rcodeOf = (buf: Buffer): number => buf.readUInt16BE(2) & 0x0f;
const forwarded = (d: QueryDecision): boolean => d.forward;
const dataOf = (r: dnsPacket.Answer): unknown => ('data' in r ? r.data : undefined);
const aRecords = (buf: Buffer): string[] => (dnsPacket.decode(buf).answers ?? []).filter((r) => r.type === 'A').map((r) => String(dataOf(r)));

describe('DnsGate.onQuery: who may ask', () => {
  it('a client that is no sandbox: not forwarded, no reply, nothing logged', () => {
    const h = harness();
    h.add('web', '10.166.0.2');
    const d = h.gate.onQuery('10.166.0.99', query('pypi.org'), T0);
    assert.deepEqual(d, { forward: false });
    assert.deepEqual(h.asked, ['10.166.0.99'], 'the sandbox is looked up by the client address');
    assert.deepEqual(h.logs, []);
    assert.deepEqual(h.admits, []);
  });

  it('a sandbox without an allow-list: forwarded, with the sandbox the hook gave', () => {
    const h = harness();
    const s = h.add('web', '10.166.0.2');
    const d = h.gate.onQuery('10.166.0.2', query('anything.example'), T0);
    assert.equal(d.forward, true);
    assert.ok(d.forward);
    assert.equal(d.sandbox, s);
    assert.deepEqual(h.logs, [], 'a forwarded query is logged with its answer, not before');
  });

  it('a malformed query from a sandbox: not forwarded, no reply', () => {
    const h = harness();
    h.add('web', '10.166.0.2');
    assert.deepEqual(h.gate.onQuery('10.166.0.2', Buffer.from([1, 2, 3]), T0), { forward: false });
    const truncated = query('pypi.org').subarray(0, 20);
    assert.deepEqual(h.gate.onQuery('10.166.0.2', truncated, T0), { forward: false });
    assert.deepEqual(h.logs, []);
  });
});

describe('DnsGate.onQuery: what may be asked', () => {
  it('a response or a packet without a question is no query: not forwarded, no reply', () => {
    const h = harness();
    h.add('web', '10.166.0.2');
    const response = answer('pypi.org', [A('pypi.org', '151.101.0.223')]);
    assert.deepEqual(h.gate.onQuery('10.166.0.2', response, T0), { forward: false });
    const empty = dnsPacket.encode({ type: 'query', id: 1, flags: dnsPacket.RECURSION_DESIRED, questions: [] });
    assert.deepEqual(h.gate.onQuery('10.166.0.2', empty, T0), { forward: false });
    assert.equal(forwarded(h.gate.onQuery('10.166.0.2', query('pypi.org'), T0)), true, 'a real query still is');
    assert.deepEqual(h.logs, []);
  });

  it('names longer than dns.maxNameLength, or with a label longer than dns.maxLabelLength, are refused and logged', () => {
    const h = harness();
    h.add('web', '10.166.0.2', { dns: { maxNameLength: 40, maxLabelLength: 10 } });
    const ask = (name: string) => h.gate.onQuery('10.166.0.2', query(name), T0);
    const reason = 'over dns.maxNameLength 40 or dns.maxLabelLength 10';
    assert.equal(forwarded(ask(`${'a'.repeat(10)}.example`)), true, 'a label of exactly the limit');
    const atLimit = `${'a'.repeat(10)}.${'b'.repeat(10)}.${'c'.repeat(10)}.example`;
    assert.equal(atLimit.length, 40);
    assert.equal(forwarded(ask(atLimit)), true, '40 characters');
    const long = ask(`${'a'.repeat(11)}.example`);
    assert.equal(replyOf(long).rcode, 'REFUSED');
    assert.deepEqual(h.logs.at(-1), { sandbox: 'web', name: `${'a'.repeat(11)}.example`, type: 'A', verdict: 'refused', answer: [], reason });
    const tooLong = `${atLimit}1`;
    assert.equal(tooLong.length, 41);
    assert.equal(replyOf(ask(tooLong)).rcode, 'REFUSED');
    assert.equal(h.logs.at(-1)!.reason, reason);
    assert.equal(h.logs.length, 2);
  });

  it('the defaults are the protocol\'s own limits (253 and 63)', () => {
    const h = harness();
    h.add('web', '10.166.0.2');
    const label = 'a'.repeat(63);
    const longest = `${label}.${label}.${label}.${'b'.repeat(61)}`;
    assert.equal(longest.length, 253);
    assert.equal(forwarded(h.gate.onQuery('10.166.0.2', query(longest), T0)), true, '253 characters');
    assert.deepEqual(h.logs, []);
  });

  it('the length limits apply to allowed names too, and before the allow-list', () => {
    const h = harness();
    h.add('web', '10.166.0.2', { egress: { domains: ['*.example.com'] }, dns: { maxLabelLength: 8 } });
    assert.equal(forwarded(h.gate.onQuery('10.166.0.2', query('abcdefgh.example.com'), T0)), true);
    assert.equal(replyOf(h.gate.onQuery('10.166.0.2', query('abcdefghi.example.com'), T0)).rcode, 'REFUSED');
    assert.match(h.logs.at(-1)!.reason!, /maxLabelLength 8/);
  });
});

describe('DnsGate.onQuery: rate limit (token bucket per sandbox)', () => {
  it('allows a burst, then refuses with REFUSED and logs "limited"', () => {
    const h = harness();
    h.add('web', '10.166.0.2', { dns: { qps: 4, burst: 3 } });
    for (let i = 0; i < 3; i++) assert.equal(forwarded(h.gate.onQuery('10.166.0.2', query(`q${i}.example`), T0)), true, `query ${i}`);
    const d = h.gate.onQuery('10.166.0.2', query('Over.Example', { id: 777 }), T0);
    const r = replyOf(d);
    assert.equal(r.type, 'response');
    assert.equal(r.id, 777, 'the reply carries the query ID');
    assert.equal(rcodeOf((d as { reply: Buffer }).reply), RCODE.REFUSED);
    assert.equal(r.rcode, 'REFUSED');
    assert.deepEqual(r.questions, [{ name: 'Over.Example', type: 'A', class: 'IN' }], 'the question is echoed');
    assert.equal(r.flag_rd, true, 'RD echoed');
    assert.equal(r.flag_ra, true);
    assert.deepEqual(r.answers, []);
    assert.deepEqual(h.logs, [{ sandbox: 'web', name: 'over.example', type: 'A', verdict: 'limited', answer: [], reason: 'over dns.qps 4' }]);
  });

  it('recovers as time passes, at qps tokens per second, never above burst', () => {
    const h = harness();
    h.add('web', '10.166.0.2', { dns: { qps: 4, burst: 3 } });
    const ask = (t: number) => forwarded(h.gate.onQuery('10.166.0.2', query('x.example'), t));
    assert.deepEqual([ask(T0), ask(T0), ask(T0), ask(T0)], [true, true, true, false]);
    assert.equal(ask(T0 + 200), false, '0.8 tokens after 200 ms');
    assert.equal(ask(T0 + 300), true, '1.2 tokens after 300 ms');
    assert.equal(ask(T0 + 300), false, '0.2 left');
    assert.equal(ask(T0 + 550), true, '0.2 + 1.0 = 1.2 tokens at 550 ms');
    assert.equal(ask(T0 + 550), false);
    // A long pause refills to burst, not beyond.
    const later = T0 + 3_600_000;
    assert.deepEqual([ask(later), ask(later), ask(later), ask(later)], [true, true, true, false]);
    assert.equal(h.logs.filter((e) => e.verdict === 'limited').length, 5);
    assert.equal(h.logs.length, 5, 'forwarded queries are not logged here');
  });

  it('each sandbox has its own bucket; forget() starts a sandbox afresh', () => {
    const h = harness();
    const a = h.add('a', '10.166.0.2', { dns: { qps: 1, burst: 1 } });
    h.add('b', '10.166.0.3', { dns: { qps: 1, burst: 1 } });
    assert.equal(forwarded(h.gate.onQuery('10.166.0.2', query('x.example'), T0)), true);
    assert.equal(forwarded(h.gate.onQuery('10.166.0.2', query('x.example'), T0)), false);
    assert.equal(forwarded(h.gate.onQuery('10.166.0.3', query('x.example'), T0)), true, 'b is not limited by a');
    h.gate.forget(a.id);
    assert.equal(forwarded(h.gate.onQuery('10.166.0.2', query('x.example'), T0)), true, 'a fresh bucket holds burst tokens');
    assert.equal(forwarded(h.gate.onQuery('10.166.0.3', query('x.example'), T0)), false, 'forget touched only a');
  });

  it('the defaults (qps 50, burst 100) apply when the policy sets no limits', () => {
    const h = harness();
    h.add('web', '10.166.0.2');
    const results = Array.from({ length: 101 }, () => forwarded(h.gate.onQuery('10.166.0.2', query('x.example'), T0)));
    assert.equal(results.filter(Boolean).length, 100);
    assert.equal(results[100], false);
    assert.equal(forwarded(h.gate.onQuery('10.166.0.2', query('x.example'), T0 + 19)), false, '0.95 tokens');
    assert.equal(forwarded(h.gate.onQuery('10.166.0.2', query('x.example'), T0 + 21)), true, '1.05 tokens');
  });
});

describe('DnsGate: failures per minute', () => {
  /** A query and its answer with `rcode`, at `t`. */
  const round = (h: Harness, s: GateSandbox, t: number, rcode: number, name = 'x.example'): boolean => {
    const d = h.gate.onQuery(s.ip, query(name), t);
    if (d.forward) h.gate.onAnswer(d.sandbox, answer(name, [], { rcode }), t);
    return d.forward;
  };

  it('NXDOMAIN and REFUSED answers count; past the limit every query is refused until the oldest is a minute old', () => {
    const h = harness();
    const s = h.add('web', '10.166.0.2', { dns: { maxFailuresPerMinute: 3 } });
    assert.equal(round(h, s, T0, RCODE.NXDOMAIN), true);
    assert.equal(round(h, s, T0 + 10_000, RCODE.REFUSED), true);
    assert.equal(round(h, s, T0 + 20_000, RCODE.NXDOMAIN), true);
    const d = h.gate.onQuery(s.ip, query('fine.example', { id: 9 }), T0 + 30_000);
    assert.equal(replyOf(d).rcode, 'REFUSED');
    assert.equal(replyOf(d).id, 9);
    assert.deepEqual(h.logs.at(-1), { sandbox: 'web', name: 'fine.example', type: 'A', verdict: 'limited', answer: [], reason: 'over dns.maxFailuresPerMinute 3' });
    assert.equal(forwarded(h.gate.onQuery(s.ip, query('fine.example'), T0 + 59_999)), false, 'the first failure is still within the minute');
    assert.equal(forwarded(h.gate.onQuery(s.ip, query('fine.example'), T0 + 60_001)), true, 'the first failure has aged out');
    assert.equal(forwarded(h.gate.onQuery(s.ip, query('fine.example'), T0 + 60_002)), true, 'two failures left in the window: under the limit');
  });

  it('NOERROR and SERVFAIL answers do not count', () => {
    const h = harness();
    const s = h.add('web', '10.166.0.2', { dns: { maxFailuresPerMinute: 2 } });
    for (let i = 0; i < 10; i++) assert.equal(round(h, s, T0 + i, i % 2 ? RCODE.SERVFAIL : RCODE.NOERROR), true, `round ${i}`);
    assert.equal(round(h, s, T0 + 10, RCODE.NXDOMAIN), true);
    assert.equal(round(h, s, T0 + 11, RCODE.NXDOMAIN), true);
    assert.equal(round(h, s, T0 + 12, RCODE.NOERROR), false, 'two failures: limited');
  });

  it('refusals of names not in egress.domains count too', () => {
    const h = harness();
    const s = h.add('web', '10.166.0.2', { egress: { domains: ['pypi.org'] }, dns: { maxFailuresPerMinute: 2 } });
    assert.equal(forwarded(h.gate.onQuery(s.ip, query('evil.example'), T0)), false);
    assert.equal(forwarded(h.gate.onQuery(s.ip, query('pypi.org'), T0 + 1)), true, 'one failure: still answered');
    assert.equal(forwarded(h.gate.onQuery(s.ip, query('evil.example'), T0 + 2)), false);
    assert.deepEqual(h.logs.map((e) => e.verdict), ['refused', 'refused']);
    assert.equal(forwarded(h.gate.onQuery(s.ip, query('pypi.org'), T0 + 3)), false, 'two failures: even an allowed name is refused');
    assert.equal(h.logs.at(-1)!.verdict, 'limited');
    assert.equal(h.logs.at(-1)!.reason, 'over dns.maxFailuresPerMinute 2');
    assert.equal(forwarded(h.gate.onQuery(s.ip, query('pypi.org'), T0 + 60_003)), true, 'both aged out');
  });

  it('failures are counted per sandbox', () => {
    const h = harness();
    const a = h.add('a', '10.166.0.2', { dns: { maxFailuresPerMinute: 1 } });
    const b = h.add('b', '10.166.0.3', { dns: { maxFailuresPerMinute: 1 } });
    assert.equal(round(h, a, T0, RCODE.NXDOMAIN), true);
    assert.equal(round(h, b, T0, RCODE.NOERROR), true);
    assert.equal(round(h, a, T0 + 1, RCODE.NOERROR), false);
    assert.equal(round(h, b, T0 + 1, RCODE.NOERROR), true);
  });
});

describe('DnsGate.onQuery: the domain allow-list', () => {
  const policy: PolicyInput = { egress: { domains: ['PyPI.org', '*.example.com'] } };

  it('a name not on the list gets REFUSED, is logged "refused" and is not forwarded', () => {
    const h = harness();
    h.add('web', '10.166.0.2', policy);
    const d = h.gate.onQuery('10.166.0.2', query('Evil.NET', { id: 31, type: 'AAAA', rd: false }), T0);
    const r = replyOf(d);
    assert.equal(r.rcode, 'REFUSED');
    assert.equal(r.id, 31);
    assert.equal(r.type, 'response');
    assert.equal(r.flag_rd, false, 'RD is echoed, not invented');
    assert.deepEqual(r.questions, [{ name: 'Evil.NET', type: 'AAAA', class: 'IN' }]);
    assert.deepEqual(r.answers, []);
    assert.deepEqual(h.logs, [{ sandbox: 'web', name: 'evil.net', type: 'AAAA', verdict: 'refused', answer: [], reason: 'not in egress.domains' }]);
    assert.deepEqual(h.admits, []);
  });

  it('with refuseWith "nxdomain" the refusal is NXDOMAIN', () => {
    const h = harness({ refuseWith: 'nxdomain' });
    h.add('web', '10.166.0.2', policy);
    const d = h.gate.onQuery('10.166.0.2', query('evil.net'), T0);
    assert.equal(replyOf(d).rcode, 'NXDOMAIN');
    assert.equal(rcodeOf((d as { reply: Buffer }).reply), RCODE.NXDOMAIN);
    assert.equal(h.logs[0].verdict, 'refused');
    // Rate limiting still answers REFUSED.
    const l = harness({ refuseWith: 'nxdomain' });
    l.add('web', '10.166.0.2', { ...policy, dns: { burst: 1 } });
    l.gate.onQuery('10.166.0.2', query('pypi.org'), T0);
    assert.equal(replyOf(l.gate.onQuery('10.166.0.2', query('pypi.org'), T0)).rcode, 'REFUSED');
  });

  it('exact names and names under a wildcard are forwarded, whatever their case; the wildcard\'s own name is not', () => {
    const h = harness();
    h.add('web', '10.166.0.2', policy);
    const cases: [string, boolean][] = [
      ['pypi.org', true], ['PYPI.ORG', true], ['files.pypi.org', false],
      ['cdn.example.com', true], ['a.b.Example.COM', true], ['example.com', false], ['badexample.com', false],
    ];
    for (const [name, ok] of cases) assert.equal(forwarded(h.gate.onQuery('10.166.0.2', query(name), T0)), ok, name);
    assert.deepEqual(h.logs.map((e) => e.name), ['files.pypi.org', 'example.com', 'badexample.com']);
  });

  it('an empty list refuses every name; no list forwards every name', () => {
    const h = harness();
    h.add('closed', '10.166.0.2', { egress: { domains: [] } });
    h.add('open', '10.166.0.3');
    assert.equal(replyOf(h.gate.onQuery('10.166.0.2', query('pypi.org'), T0)).rcode, 'REFUSED');
    assert.equal(forwarded(h.gate.onQuery('10.166.0.3', query('pypi.org'), T0)), true);
  });
});

describe('DnsGate.onAnswer: admission', () => {
  const policy: PolicyInput = { egress: { domains: ['pypi.org', '*.example.com'] } };

  it('admits the A records at the end of the asked name\'s CNAME chain, for the smallest TTL, before it returns', () => {
    const h = harness();
    const s = h.add('web', '10.166.0.2', policy);
    const buf = answer('PyPI.org', [
      CNAME('PyPI.org', 'Dualstack.Python.Map.Fastly.NET', 300),
      CNAME('dualstack.python.map.fastly.net', 'edge.fastly.net', 600),
      A('edge.fastly.net', '151.101.0.223', 120),
      A('EDGE.fastly.net', '151.101.64.223', 60),
      A('unrelated.example.org', '203.0.113.9', 1), // not on the chain
    ]);
    const out = sent(h.gate, s, buf, T0);
    // Synchronously: by the time the answer is handed back, the kernel has been told.
    assert.deepEqual(h.admits, [{ sandbox: 'web', addresses: ['151.101.0.223', '151.101.64.223'], ttl: 60 }]);
    assert.ok(out.equals(buf), 'nothing stripped: the answer is passed on as it came');
    assert.deepEqual(h.logs, [{ sandbox: 'web', name: 'pypi.org', type: 'A', verdict: 'answered', answer: ['151.101.0.223', '151.101.64.223'] }]);
  });

  it('the admitted time is the TTL clamped to [minTtl, maxTtl]', () => {
    const cases: [number, number, number, number][] = [
      // minTtl, maxTtl, record TTL, admitted for
      [5, 3600, 300, 300],
      [5, 3600, 1, 5],
      [5, 3600, 0, 5],
      [5, 3600, 86400, 3600],
      [5, 3600, 5, 5],
      [5, 3600, 3600, 3600],
      [30, 60, 45, 45],
      [30, 60, 29, 30],
      [30, 60, 61, 60],
    ];
    for (const [minTtl, maxTtl, ttl, want] of cases) {
      const h = harness({ minTtl, maxTtl });
      const s = h.add('web', '10.166.0.2', policy);
      h.gate.onAnswer(s, answer('cdn.example.com', [A('cdn.example.com', '93.184.216.34', ttl)]), T0);
      assert.deepEqual(h.admits, [{ sandbox: 'web', addresses: ['93.184.216.34'], ttl: want }], `min ${minTtl} max ${maxTtl} ttl ${ttl}`);
    }
  });

  it('admits nothing when the chain ends without an address (NXDOMAIN, CNAME only, AAAA only, addresses of other names)', () => {
    const h = harness();
    const s = h.add('web', '10.166.0.2', policy);
    h.gate.onAnswer(s, answer('cdn.example.com', [], { rcode: RCODE.NXDOMAIN }), T0);
    h.gate.onAnswer(s, answer('cdn.example.com', [CNAME('cdn.example.com', 'elsewhere.example.net')]), T0);
    h.gate.onAnswer(s, answer('cdn.example.com', [{ type: 'AAAA', name: 'cdn.example.com', ttl: 60, data: '2001:db8::1' }], { type: 'AAAA' }), T0);
    h.gate.onAnswer(s, answer('cdn.example.com', [A('other.example.net', '198.51.100.1')]), T0);
    assert.deepEqual(h.admits, []);
    assert.deepEqual(h.logs.map((e) => [e.verdict, e.answer]), [['answered', []], ['answered', []], ['answered', []], ['answered', []]]);
  });

  it('a sandbox without domains is never admitted anything (its internet is not narrowed)', () => {
    const h = harness();
    const s = h.add('web', '10.166.0.2');
    const buf = answer('pypi.org', [A('pypi.org', '151.101.0.223'), A('pypi.org', '151.101.64.223')]);
    const out = sent(h.gate, s, buf, T0);
    assert.deepEqual(h.admits, []);
    assert.ok(out.equals(buf));
    assert.equal(h.logs.length, 1);
    assert.equal(h.logs[0].verdict, 'answered');
  });

  it('name checks without an allow-list hear each name asked and its chain\'s addresses, for the admitted time (a cached answer\'s TTL left), nothing admitted', () => {
    const h = harness({ minTtl: 5, maxTtl: 3600 });
    const s = h.add('web', '10.166.0.2', { egress: { verifyNames: true } });
    sent(h.gate, s, answer('PyPI.org', [CNAME('PyPI.org', 'edge.fastly.net', 300), A('edge.fastly.net', '151.101.0.223', 2)]), T0);
    assert.deepEqual(h.named, [{ sandbox: 'web', name: 'pypi.org', addresses: ['151.101.0.223'], ttl: 5 }], 'the TTL clamped up to minTtl');
    // From the cache, 100 s after it was stored: what is left of its TTL.
    const stored = answer('cdn.example.com', [A('cdn.example.com', '93.184.216.34', 300)]);
    sent(h.gate, s, stored, T0, { packet: dnsPacket.decode(stored), age: 100 });
    assert.deepEqual(h.named.at(-1), { sandbox: 'web', name: 'cdn.example.com', addresses: ['93.184.216.34'], ttl: 200 });
    // Without internet there is nothing to name: nothing posted.
    sent(h.gate, h.add('offline', '10.166.0.5', { egress: { verifyNames: true, internet: false } }), stored, T0);
    assert.equal(h.named.length, 2);
    assert.equal(h.admits.length, 0, 'its internet is not narrowed');
    // With an allow-list, the addresses are admitted instead; without checks, neither.
    sent(h.gate, h.add('listed', '10.166.0.3', { egress: { domains: ['pypi.org'] } }), answer('pypi.org', [A('pypi.org', '151.101.0.223')]), T0);
    sent(h.gate, h.add('plain', '10.166.0.4'), answer('pypi.org', [A('pypi.org', '151.101.0.223')]), T0);
    assert.deepEqual(h.named.map((n) => n.sandbox), ['web', 'web']);
    assert.deepEqual(h.admits.map((a) => a.sandbox), ['listed']);
  });

  it('an answer that needs no change is returned byte for byte, not re-encoded', () => {
    const h = harness();
    const s = h.add('web', '10.166.0.2', policy);
    // Trailing bytes survive only if the original buffer is what comes back.
    const buf = Buffer.concat([answer('cdn.example.com', [A('cdn.example.com', '93.184.216.34')]), Buffer.from([0xde, 0xad])]);
    assert.ok(sent(h.gate, s, buf, T0).equals(buf));
    assert.equal(h.admits.length, 1);
  });

  it('an answer it cannot parse is passed on unchanged and admits nothing', () => {
    const h = harness();
    const s = h.add('web', '10.166.0.2', policy);
    const junk = Buffer.from([0, 1, 0x81, 0x80, 0, 1]);
    assert.ok(sent(h.gate, s, junk, T0).equals(junk));
    assert.deepEqual(h.admits, []);
  });
});

describe('DnsGate.onAnswer: answers from the shared cache', () => {
  const policy: PolicyInput = { egress: { domains: ['pypi.org'] } };

  it('admits for what is left of the TTL, using the decoded form it is given', () => {
    const h = harness();
    const s = h.add('web', '10.166.0.2', policy);
    const stored = answer('pypi.org', [A('pypi.org', '151.101.0.223', 300)]);
    const out = sent(h.gate, s, stored, T0, { packet: dnsPacket.decode(stored), age: 100 });
    assert.ok(out.equals(stored), 'nothing stripped: the wire the cache built goes out as is');
    assert.deepEqual(h.admits, [{ sandbox: 'web', addresses: ['151.101.0.223'], ttl: 200 }]);
    // Older than its TTL (the cache serves it only until then): the floor applies.
    h.gate.onAnswer(s, stored, T0, { packet: dnsPacket.decode(stored), age: 299 });
    assert.equal(h.admits[1].ttl, 5);
  });

  it('a stripped cached answer keeps the asker\'s ID and question, with TTLs counted down', () => {
    const h = harness();
    const s = h.add('web', '10.166.0.2', policy);
    const stored = answer('pypi.org', [A('pypi.org', '10.99.0.5', 300), A('pypi.org', '151.101.0.223', 300)], { id: 1 });
    const asked = answer('PyPI.org', [A('pypi.org', '10.99.0.5', 290), A('pypi.org', '151.101.0.223', 290)], { id: 777 });
    const out = dnsPacket.decode(sent(h.gate, s, asked, T0, { packet: dnsPacket.decode(stored), age: 10 }));
    assert.equal(out.id, 777);
    assert.equal(out.questions![0].name, 'PyPI.org');
    assert.deepEqual(out.answers!.map((r) => [(r as { data: string }).data, (r as { ttl: number }).ttl]), [['151.101.0.223', 290]]);
  });
});

describe('DnsGate.onAnswer: rebinding protection', () => {
  it('strips A records pointing into private, loopback, link-local, multicast or reserved space, and into the sandbox subnet', () => {
    const h = harness();
    const s = h.add('web', '10.166.0.2', { egress: { domains: ['*.example.com'] } });
    const buf = answer('a.example.com', [
      CNAME('a.example.com', 'b.example.com'),
      A('b.example.com', '10.1.2.3'),
      A('b.example.com', '93.184.216.34', 100),
      A('b.example.com', '169.254.169.254'),
      A('b.example.com', '127.0.0.1'),
      A('b.example.com', '192.168.1.1'),
      A('b.example.com', '172.16.0.1'),
      A('b.example.com', '100.64.0.1'),
      A('b.example.com', '224.0.0.1'),
      A('b.example.com', '255.255.255.255'),
      A('b.example.com', '0.0.0.0'),
      A('b.example.com', '10.166.0.3'),
      A('b.example.com', '93.184.216.35', 200),
    ], { id: 55, authorities: [{ type: 'NS', name: 'example.com', ttl: 60, data: 'ns.example.com' }] });
    const out = sent(h.gate, s, buf, T0);
    const p = dnsPacket.decode(out) as dnsPacket.DecodedPacket & { rcode?: string };
    assert.deepEqual(aRecords(out), ['93.184.216.34', '93.184.216.35']);
    // Everything else of the answer is kept.
    assert.equal(p.id, 55);
    assert.equal(p.type, 'response');
    assert.equal(p.rcode, 'NOERROR');
    assert.equal(p.flag_rd, true);
    assert.equal(p.flag_ra, true);
    assert.deepEqual(p.questions, [{ name: 'a.example.com', type: 'A', class: 'IN' }]);
    assert.deepEqual((p.answers ?? []).filter((r) => r.type === 'CNAME').map((r) => [r.name, dataOf(r)]), [['a.example.com', 'b.example.com']]);
    assert.deepEqual((p.authorities ?? []).map((r) => [r.type, r.name, dataOf(r)]), [['NS', 'example.com', 'ns.example.com']]);
    // Only the public addresses are admitted, for their own TTLs.
    assert.deepEqual(h.admits, [{ sandbox: 'web', addresses: ['93.184.216.34', '93.184.216.35'], ttl: 100 }]);
    assert.equal(h.logs.length, 1);
    const log = h.logs[0];
    assert.equal(log.verdict, 'stripped');
    assert.deepEqual(log.answer, ['93.184.216.34', '93.184.216.35']);
    assert.equal(log.reason, 'rebinding: 10.1.2.3, 169.254.169.254, 127.0.0.1, 192.168.1.1, 172.16.0.1, 100.64.0.1, 224.0.0.1, 255.255.255.255, 0.0.0.0, 10.166.0.3');
  });

  it('the sandbox subnet is the configured one, even outside the private ranges', () => {
    const buf = answer('x.example.com', [A('x.example.com', '198.51.100.7')]);
    const mine = harness({ subnet: '198.51.100.0/24' });
    const s = mine.add('web', '198.51.100.2', { egress: { domains: ['*.example.com'] } });
    assert.deepEqual(aRecords(sent(mine.gate, s, buf, T0)), []);
    assert.equal(mine.logs[0].verdict, 'stripped');
    assert.deepEqual(mine.admits, [], 'nothing left to admit');
    const other = harness({ subnet: '10.166.0.0/16' });
    const t = other.add('web', '10.166.0.2', { egress: { domains: ['*.example.com'] } });
    assert.ok(sent(other.gate, t, buf, T0).equals(buf));
    assert.deepEqual(other.admits, [{ sandbox: 'web', addresses: ['198.51.100.7'], ttl: 300 }]);
  });

  it('keeps an address an egress.allow entry of the sandbox covers (any port or protocol), and only that one', () => {
    const h = harness();
    const s = h.add('web', '10.166.0.2', { egress: { domains: ['db.example.com'], allow: ['10.1.0.0/16:5432/tcp', '192.168.7.7'] } });
    const buf = answer('db.example.com', [A('db.example.com', '10.1.2.3'), A('db.example.com', '192.168.7.7'), A('db.example.com', '10.2.0.1')]);
    const out = sent(h.gate, s, buf, T0);
    assert.deepEqual(aRecords(out), ['10.1.2.3', '192.168.7.7']);
    assert.equal(h.logs[0].verdict, 'stripped');
    assert.equal(h.logs[0].reason, 'rebinding: 10.2.0.1');
    assert.deepEqual(h.admits, [{ sandbox: 'web', addresses: ['10.1.2.3', '192.168.7.7'], ttl: 300 }]);
    // Everything covered: returned as it came.
    const h2 = harness();
    const s2 = h2.add('web', '10.166.0.2', { egress: { allow: ['10.0.0.0/8'] } });
    const all = answer('db.example.com', [A('db.example.com', '10.1.2.3'), A('db.example.com', '10.2.0.1')]);
    assert.ok(sent(h2.gate, s2, all, T0).equals(all));
    assert.equal(h2.logs[0].verdict, 'answered');
    // Another sandbox's allow entries do not count.
    const h3 = harness();
    h3.add('db', '10.166.0.3', { egress: { allow: ['10.0.0.0/8'] } });
    const s3 = h3.add('web', '10.166.0.2');
    assert.deepEqual(aRecords(sent(h3.gate, s3, all, T0)), []);
  });

  it('protects sandboxes without domains too (stripping, but no admission)', () => {
    const h = harness();
    const s = h.add('web', '10.166.0.2');
    const buf = answer('intranet.example', [A('intranet.example', '192.168.0.10'), A('intranet.example', '203.0.113.10')]);
    const out = sent(h.gate, s, buf, T0);
    assert.deepEqual(aRecords(out), ['203.0.113.10']);
    assert.equal(h.logs[0].verdict, 'stripped');
    assert.deepEqual(h.admits, []);
  });

  it('an answer whose only addresses are stripped admits nothing and still answers (without them)', () => {
    const h = harness();
    const s = h.add('web', '10.166.0.2', { egress: { domains: ['*.example.com'] } });
    const out = sent(h.gate, s, answer('x.example.com', [A('x.example.com', '10.0.0.1'), A('x.example.com', '127.0.0.2')], { id: 8 }), T0);
    const p = dnsPacket.decode(out);
    assert.equal(p.id, 8);
    assert.deepEqual(p.answers, []);
    assert.deepEqual(h.admits, []);
    assert.deepEqual(h.logs, [{ sandbox: 'web', name: 'x.example.com', type: 'A', verdict: 'stripped', answer: [], reason: 'rebinding: 10.0.0.1, 127.0.0.2' }]);
  });
});

describe('DnsGate: smuggling and ordering', () => {
  const rcodeOf = (d: QueryDecision) => (!d.forward && d.reply ? d.reply[3] & 0x0f : -1);

  it('measures labels on the wire: a dot inside a label does not split it', () => {
    const h = harness();
    h.add('s', '10.166.0.2', { dns: { maxLabelLength: 10 } });
    // One 19-byte label "aaaaaaaaa.bbbbbbbbb", then "example": built by hand.
    const label = Buffer.from('aaaaaaaaa.bbbbbbbbb');
    const q = Buffer.concat([Buffer.from([0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, label.length]), label, Buffer.from([7]), Buffer.from('example'), Buffer.from([0, 0, 1, 0, 1])]);
    assert.equal(rcodeOf(h.gate.onQuery('10.166.0.2', q, T0)), RCODE.REFUSED);
    assert.equal(h.gate.onQuery('10.166.0.2', query('aaaaaaaaa.bbbbbbbbb.example', { id: 2 }), T0).forward, true, 'the same characters as separate labels are fine');
  });

  it('refuses a query with more than one question', () => {
    const h = harness();
    h.add('s', '10.166.0.2', { egress: { domains: ['pypi.org'] } });
    const q = dnsPacket.encode({ type: 'query', id: 9, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type: 'A', name: 'pypi.org' }, { type: 'TXT', name: 'secret.attacker.example' }] });
    assert.equal(rcodeOf(h.gate.onQuery('10.166.0.2', q, T0)), RCODE.REFUSED);
  });

  it('over-long queries spend the rate limit like any other', () => {
    const h = harness();
    h.add('s', '10.166.0.2', { dns: { qps: 1, burst: 1, maxLabelLength: 5 } });
    h.gate.onQuery('10.166.0.2', query('toolong.example'), T0);
    assert.equal(rcodeOf(h.gate.onQuery('10.166.0.2', query('ok.example', { id: 3 }), T0)), RCODE.REFUSED, 'the bucket was spent');
    assert.equal(h.logs.at(-1)?.verdict, 'limited');
  });

  it('a clock step backwards does not stall the bucket', () => {
    const h = harness();
    h.add('s', '10.166.0.2', { dns: { qps: 1, burst: 1 } });
    assert.equal(h.gate.onQuery('10.166.0.2', query('a.example'), T0).forward, true);
    assert.equal(h.gate.onQuery('10.166.0.2', query('a.example'), T0 - 3_600_000).forward, false);
    assert.equal(h.gate.onQuery('10.166.0.2', query('a.example'), T0 - 3_600_000 + 1500).forward, true, 'refills from the new time on');
  });

  it('follows a CNAME chain given in any order, and strips rebinding outside the chain too', () => {
    const h = harness();
    const s = h.add('s', '10.166.0.2', { egress: { domains: ['a.example.com'] } });
    const ans = answer('a.example.com', [CNAME('b.example.net', 'c.example.net'), CNAME('a.example.com', 'b.example.net'), A('c.example.net', '198.51.100.7'), A('unrelated.example', '10.0.0.1')]);
    const out = dnsPacket.decode(sent(h.gate, s, ans, T0));
    assert.deepEqual(h.admits.map((x) => x.addresses), [['198.51.100.7']]);
    assert.ok(!(out.answers ?? []).some((r) => r.type === 'A' && r.data === '10.0.0.1'), 'the private record outside the chain is stripped');
  });
});

describe('DnsGate.onAnswer: judged with the sandbox as it is when the answer arrives', () => {
  const broad: PolicyInput = { egress: { domains: ['pypi.org', '*.example.com'] } };
  const narrow: PolicyInput = { egress: { domains: ['*.example.com'] } };
  const pypi = () => answer('pypi.org', [A('pypi.org', '151.101.0.223')], { id: 4242 });

  it('control: under the policy it was asked with, the answer is admitted', () => {
    const h = harness();
    h.add('web', '10.166.0.2', broad);
    const d = h.gate.onQuery('10.166.0.2', query('pypi.org'), T0);
    assert.ok(d.forward);
    assert.deepEqual(aRecords(sent(h.gate, d.sandbox, pypi(), T0)), ['151.101.0.223']);
    assert.deepEqual(h.admits, [{ sandbox: 'web', addresses: ['151.101.0.223'], ttl: 300 }]);
  });

  it('a name the policy dropped while the query was upstream gets the refusal and no admission, and counts as a failure', () => {
    const h = harness();
    const s = h.add('web', '10.166.0.2', { ...broad, dns: { maxFailuresPerMinute: 1 } });
    const d = h.gate.onQuery('10.166.0.2', query('PyPI.org', { id: 4242 }), T0);
    assert.ok(d.forward);
    h.setPolicy(s, { ...narrow, dns: { maxFailuresPerMinute: 1 } });
    const out = sent(h.gate, d.sandbox, answer('PyPI.org', [A('pypi.org', '151.101.0.223')], { id: 4242 }), T0);
    const r = dnsPacket.decode(out) as dnsPacket.DecodedPacket & { rcode?: string };
    assert.equal(r.rcode, 'REFUSED');
    assert.equal(r.id, 4242);
    assert.deepEqual(r.questions, [{ name: 'PyPI.org', type: 'A', class: 'IN' }]);
    assert.deepEqual(r.answers, []);
    assert.deepEqual(h.admits, []);
    assert.deepEqual(h.logs, [{ sandbox: 'web', name: 'pypi.org', type: 'A', verdict: 'refused', answer: [], reason: 'not in egress.domains (changed while the query was upstream)' }]);
    assert.equal(h.gate.onQuery('10.166.0.2', query('a.example.com'), T0 + 1).forward, false, 'the failure budget of 1 is spent');
  });

  it('refuses with NXDOMAIN under refuseWith "nxdomain", and for a cached answer with the asker\'s ID and question', () => {
    const h = harness({ refuseWith: 'nxdomain' });
    const s = h.add('web', '10.166.0.2', broad);
    const d = h.gate.onQuery('10.166.0.2', query('PYPI.org', { id: 77 }), T0);
    assert.ok(d.forward);
    h.setPolicy(s, narrow);
    const stored = answer('pypi.org', [A('pypi.org', '151.101.0.223', 300)], { id: 1 });
    const asked = answer('PYPI.org', [A('pypi.org', '151.101.0.223', 290)], { id: 77 });
    const r = dnsPacket.decode(sent(h.gate, d.sandbox, asked, T0, { packet: dnsPacket.decode(stored), age: 10 })) as dnsPacket.DecodedPacket & { rcode?: string };
    assert.equal(r.rcode, 'NXDOMAIN');
    assert.equal(r.id, 77);
    assert.equal(r.questions![0].name, 'PYPI.org');
    assert.deepEqual(h.admits, []);
  });

  it('a policy change that keeps the name admits with the current policy: rebinding follows the current allow entries', () => {
    const h = harness();
    const s = h.add('db', '10.166.0.2', { egress: { domains: ['db.example.com'], allow: ['10.1.0.0/16'] } });
    const d = h.gate.onQuery('10.166.0.2', query('db.example.com'), T0);
    assert.ok(d.forward);
    h.setPolicy(s, { egress: { domains: ['db.example.com'] } }); // the private range is closed again
    const out = sent(h.gate, d.sandbox, answer('db.example.com', [A('db.example.com', '10.1.2.3'), A('db.example.com', '198.51.100.7')]), T0);
    assert.deepEqual(aRecords(out), ['198.51.100.7']);
    assert.deepEqual(h.admits, [{ sandbox: 'db', addresses: ['198.51.100.7'], ttl: 300 }]);
    assert.equal(h.logs[0].reason, 'rebinding: 10.1.2.3');
  });

  it('an allow entry covering the instance subnet does not let answers point at other sandboxes (only groups open them)', () => {
    const h = harness();
    h.add('vpc', '10.166.0.2', { egress: { allow: ['10.0.0.0/8'] } });
    const d = h.gate.onQuery('10.166.0.2', query('mixed.example.com'), T0);
    assert.ok(d.forward);
    const out = sent(h.gate, d.sandbox, answer('mixed.example.com', [A('mixed.example.com', '10.1.2.3'), A('mixed.example.com', '10.166.0.9')]), T0);
    assert.deepEqual(aRecords(out), ['10.1.2.3'], 'the VPC address the allow opens stays; the sandbox address goes');
    assert.equal(h.logs[0].reason, 'rebinding: 10.166.0.9');
  });

  it('an answer for a sandbox removed meanwhile is dropped (nothing sent, admitted or logged), though another sandbox has its address now', () => {
    const h = harness();
    const old = h.add('web', '10.166.0.2', broad);
    const d = h.gate.onQuery('10.166.0.2', query('pypi.org'), T0);
    assert.ok(d.forward);
    h.remove(old);
    const heir = h.add('web', '10.166.0.2', broad); // same name, same address, same policy: another sandbox
    assert.notEqual(heir.id, old.id);
    assert.equal(h.gate.onAnswer(d.sandbox, pypi(), T0), undefined, 'a fresh answer');
    const stored = pypi();
    assert.equal(h.gate.onAnswer(d.sandbox, stored, T0, { packet: dnsPacket.decode(stored), age: 0 }), undefined, 'a cached one');
    assert.equal(h.gate.onAnswer(d.sandbox, Buffer.from([0, 1, 0x81, 0x80, 0, 1]), T0), undefined, 'one it cannot parse');
    assert.deepEqual(h.admits, []);
    assert.deepEqual(h.logs, []);
    // The heir's own query is answered and admitted for it.
    const mine = h.gate.onQuery('10.166.0.2', query('pypi.org'), T0);
    assert.ok(mine.forward);
    assert.equal(mine.sandbox.id, heir.id);
    sent(h.gate, mine.sandbox, pypi(), T0);
    assert.equal(h.admits.length, 1);
    assert.deepEqual(h.loggedIds, [heir.id]);
  });
});

describe('DnsGate: per-sandbox state belongs to the sandbox, not its address', () => {
  const tight: PolicyInput = { dns: { maxFailuresPerMinute: 2, qps: 1, burst: 2 } };
  const nx = (h: Harness, ip: string, name: string, t: number) => {
    const d = h.gate.onQuery(ip, query(name), t);
    if (d.forward) h.gate.onAnswer(d.sandbox, answer(name, [], { rcode: RCODE.NXDOMAIN }), t);
    return d.forward;
  };

  it('an address\'s next owner starts with a full failure budget and a full bucket', () => {
    const h = harness();
    const a = h.add('a', '10.166.0.2', tight);
    assert.deepEqual([nx(h, a.ip, 'x.example', T0), nx(h, a.ip, 'y.example', T0)], [true, true]);
    assert.equal(h.gate.onQuery(a.ip, query('fine.example'), T0).forward, false, 'control: a has spent its failure budget');
    h.remove(a);
    const b = h.add('b', '10.166.0.2', tight);
    assert.equal(h.gate.onQuery(b.ip, query('fine.example'), T0).forward, true, 'b does not inherit a\'s failures');
    assert.equal(h.gate.onQuery(b.ip, query('fine.example'), T0).forward, true, 'nor its empty bucket');
  });

  it('log entries come with the identity of the sandbox they belong to', () => {
    const h = harness();
    const a = h.add('web', '10.166.0.2', { egress: { domains: [] } });
    h.gate.onQuery(a.ip, query('x.example'), T0);
    h.remove(a);
    const b = h.add('web', '10.166.0.2', { egress: { domains: [] } });
    h.gate.onQuery(b.ip, query('x.example'), T0);
    assert.deepEqual(h.logs.map((e) => e.sandbox), ['web', 'web']);
    assert.deepEqual(h.loggedIds, [a.id, b.id]);
  });

  it('forgetGone() drops the state of sandboxes that are gone and keeps the rest', () => {
    const h = harness();
    const a = h.add('a', '10.166.0.2', { dns: { qps: 1, burst: 1 } });
    const b = h.add('b', '10.166.0.3', { dns: { qps: 1, burst: 1 } });
    h.gate.onQuery(a.ip, query('x.example'), T0);
    h.gate.onQuery(b.ip, query('x.example'), T0);
    h.remove(a);
    h.gate.forgetGone();
    assert.equal(h.gate.onQuery(b.ip, query('x.example'), T0).forward, false, 'b\'s bucket is kept');
    // Only a test can bring an id back (the engine never reuses one): a's bucket went.
    h.sandboxes.set(a.ip, a);
    assert.equal(h.gate.onQuery(a.ip, query('x.example'), T0).forward, true);
  });
});

describe('DnsGate.onQuery: only what a stub resolver sends is forwarded, rebuilt', () => {
  const raw = (o: { opcode?: number; answers?: dnsPacket.Answer[]; authorities?: dnsPacket.Answer[]; additionals?: dnsPacket.Answer[] }) => {
    const q = dnsPacket.encode({ type: 'query', id: 5, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type: 'A', name: 'pypi.org' }], answers: o.answers ?? [], authorities: o.authorities ?? [], additionals: o.additionals ?? [] });
    if (o.opcode !== undefined) q[2] = (q[2] & 0x87) | (o.opcode << 3);
    return q;
  };
  const TXT = (name: string, data: string): dnsPacket.Answer => ({ type: 'TXT', name, ttl: 0, data });

  it('UPDATE and every opcode but QUERY are refused and count as failures', () => {
    const h = harness();
    h.add('s', '10.166.0.2', { egress: { domains: ['pypi.org'] }, dns: { maxFailuresPerMinute: 3 } });
    for (const opcode of [5 /* UPDATE */, 4 /* NOTIFY */, 2 /* STATUS */]) {
      const d = h.gate.onQuery('10.166.0.2', raw({ opcode }), T0);
      assert.equal(replyOf(d).rcode, 'REFUSED', `opcode ${opcode}`);
    }
    assert.deepEqual(h.logs.map((e) => [e.verdict, e.reason]), [['refused', 'opcode 5: only QUERY is forwarded'], ['refused', 'opcode 4: only QUERY is forwarded'], ['refused', 'opcode 2: only QUERY is forwarded']]);
    assert.equal(h.logs.length, 3);
    assert.equal(h.gate.onQuery('10.166.0.2', raw({}), T0).forward, false, 'three failures: limited');
    assert.equal(h.logs.at(-1)!.verdict, 'limited');
  });

  it('records in the answer or authority section are refused with FORMERR', () => {
    const h = harness();
    h.add('s', '10.166.0.2', { egress: { domains: ['pypi.org'] } });
    assert.equal(replyOf(h.gate.onQuery('10.166.0.2', raw({ answers: [TXT('pypi.org', 'secret')] }), T0)).rcode, 'FORMERR');
    assert.equal(replyOf(h.gate.onQuery('10.166.0.2', raw({ authorities: [TXT('pypi.org', 'secret')] }), T0)).rcode, 'FORMERR');
    assert.deepEqual(h.logs.map((e) => e.reason), ['records in the answer or authority section', 'records in the answer or authority section']);
  });

  it('a forwarded query carries the rebuilt query: no EDNS options, no other additional records', () => {
    const h = harness();
    h.add('s', '10.166.0.2', { egress: { domains: ['pypi.org'] } });
    const opt = { type: 'OPT', name: '.', udpPayloadSize: 4096, flags: 0, options: [{ code: 65001, data: Buffer.from('secret-payload') }] } as unknown as dnsPacket.Answer;
    const q = raw({ additionals: [TXT('x.pypi.org', 'more-secret'), opt] });
    const d = h.gate.onQuery('10.166.0.2', q, T0);
    assert.ok(d.forward);
    assert.ok(!d.query.includes('secret'), 'no payload goes upstream');
    const p = dnsPacket.decode(d.query);
    assert.deepEqual(p.questions, [{ name: 'pypi.org', type: 'A', class: 'IN' }]);
    assert.deepEqual(p.additionals!.map((r) => [r.type, (r as { udpPayloadSize?: number }).udpPayloadSize, (r as { options?: unknown[] }).options]), [['OPT', 1232, []]]);
  });
});

describe('plainQuestion reads a query as dns-packet decodes it', () => {
  it('on random and mangled queries', () => {
    const rnd = prng(18);
    let plain = 0;
    for (let i = 0; i < 5000; i++) {
      const labels = Array.from({ length: intIn(rnd, 0, 4) }, () => Buffer.from(Array.from({ length: intIn(rnd, 1, 20) }, () => (rnd() < 0.8 ? intIn(rnd, 0x41, 0x7a) : intIn(rnd, 0, 255)))));
      const name = Buffer.concat([...labels.flatMap((l) => [Buffer.from([l.length]), l]), Buffer.from([0])]);
      const tail = Buffer.alloc(4);
      tail.writeUInt16BE([1, 28, 5, 16, 255, 65, intIn(rnd, 0, 65535)][intIn(rnd, 0, 6)], 0);
      tail.writeUInt16BE(1, 2);
      const header = Buffer.from([intIn(rnd, 0, 255), intIn(rnd, 0, 255), rnd() < 0.9 ? 0x01 : 0x81, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
      const q = Buffer.concat([header, name, tail]);
      // Mangled: truncated, a byte changed, or a record count set.
      if (rnd() < 0.3) {
        const m = intIn(rnd, 0, 2);
        if (m === 0) q.writeUInt8(intIn(rnd, 0, 255), intIn(rnd, 0, q.length - 1));
        if (m === 1) q.writeUInt8(intIn(rnd, 1, 3), intIn(rnd, 4, 11));
      }
      const msg = rnd() < 0.1 ? q.subarray(0, intIn(rnd, 0, q.length)) : q;
      const ours = plainQuestion(msg);
      if (!ours) continue;
      plain++;
      const theirs = dnsPacket.decode(msg);
      assert.equal(theirs.type, 'query');
      assert.equal(theirs.questions?.length, 1);
      assert.deepEqual(ours, { name: theirs.questions![0].name.toLowerCase(), type: theirs.questions![0].type, questions: 1 }, msg.toString('hex'));
    }
    assert.ok(plain > 2500, `only ${plain} plain queries drawn`);
  });
});

describe('wireFacts reads an answer as dns-packet decodes it', () => {
  /** A name in wire form: labels, or a pointer to the question's name (offset 12). */
  const wire = (name: string | 'ptr'): Buffer =>
    name === 'ptr' ? Buffer.from([0xc0, 0x0c]) : Buffer.concat([...name.split('.').filter(Boolean).flatMap((l) => [Buffer.from([Buffer.byteLength(l)]), Buffer.from(l)]), Buffer.from([0])]);

  it('on random and mangled answers, compression pointers included', () => {
    const rnd = prng(2026);
    const names = ['a.test', 'B.Test', 'cdn.test', 'Edge.CDN.test', 'x.y.z.test', '\u00e9t\u00e9.test', 'ptr'];
    let read = 0;
    for (let i = 0; i < 5000; i++) {
      const qname = names[intIn(rnd, 0, names.length - 2)];
      const qtype = [1, 1, 28, 5][intIn(rnd, 0, 3)];
      const recs: Buffer[] = [];
      const count = intIn(rnd, 0, 5);
      for (let k = 0; k < count; k++) {
        const kind = intIn(rnd, 0, 9);
        const owner = wire(names[intIn(rnd, 0, names.length - 1)]);
        const rr = Buffer.alloc(10);
        const type = kind < 5 ? 1 : kind < 8 ? 5 : kind === 8 ? 28 : 16;
        const rdata = type === 1 ? Buffer.from([intIn(rnd, 0, 255), intIn(rnd, 0, 255), 0, intIn(rnd, 1, 9)])
          : type === 5 ? wire(names[intIn(rnd, 0, names.length - 1)])
            : type === 28 ? Buffer.alloc(16, 1) : Buffer.from([3, 0x61, 0x62, 0x63]);
        rr.writeUInt16BE(type, 0);
        rr.writeUInt16BE(1, 2);
        rr.writeUInt32BE(intIn(rnd, 0, 7200), 4);
        rr.writeUInt16BE(rdata.length, 8);
        recs.push(Buffer.concat([owner, rr, rdata]));
      }
      const opt = rnd() < 0.2 ? Buffer.from([0, 0, 41, 4, 208, 0, 0, 0, 0, 0, 0]) : Buffer.alloc(0);
      const header = Buffer.from([0, 1, 0x81, intIn(rnd, 0, 5), 0, 1, 0, count, 0, 0, 0, opt.length ? 1 : 0]);
      const question = Buffer.concat([wire(qname), Buffer.from([0, qtype, 0, 1])]);
      let msg = Buffer.concat([header, question, ...recs, opt]);
      if (rnd() < 0.3) {
        // Mangled: a byte changed, a count changed, or truncated.
        const m = intIn(rnd, 0, 2);
        if (m === 0) msg[intIn(rnd, 0, msg.length - 1)] = intIn(rnd, 0, 255);
        if (m === 1) msg[intIn(rnd, 4, 11)] = intIn(rnd, 0, 3);
        if (m === 2) msg = msg.subarray(0, intIn(rnd, 0, msg.length));
      }
      const ours = wireFacts(msg);
      if (!ours) continue;
      read++;
      let theirs: dnsPacket.Packet;
      try {
        theirs = dnsPacket.decode(msg);
      } catch (err) {
        assert.fail(`wireFacts read what dns-packet cannot decode (${(err as Error).message}): ${msg.toString('hex')}`);
      }
      assert.deepEqual(ours, packetFacts(theirs), msg.toString('hex'));
    }
    assert.ok(read > 2000, `only ${read} answers read`);
  });
});
