import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ConfigSchema } from '../../src/config/schema.js';
import { resolve } from '../../src/config/load.js';
import { FlowJudge } from '../../src/core/flow-decision.js';
import { instanceNames, sandboxLinkName, sandboxMac } from '../../src/core/names.js';
import { resolvePolicy, type PolicyInput } from '../../src/core/policy.js';
import type { SandboxSpec } from '../../src/core/sandbox-elements.js';

const config = resolve(ConfigSchema.parse({
  dnsUpstreams: ['192.0.2.53'],
  allowCidrs: ['172.16.5.0/24:5432/tcp'],
  denyCidrs: ['203.0.113.66'],
}), []);
const judge = new FlowJudge(config);

function sandbox(id: number, policy: PolicyInput = {}): SandboxSpec {
  const ip = `10.166.0.${id}`;
  return { ip, mac: sandboxMac('test', id), mode: 'veth', hostLink: sandboxLinkName(instanceNames('toastnet'), id), policy: resolvePolicy(policy) };
}
const tcp = (daddr: string, dport = 443) => ({ daddr, proto: 6, dport });

describe('FlowJudge', () => {
  it('follows the from_sandbox order: hard denials, own policy, instance allows, defaults', () => {
    const s = sandbox(2, { egress: { allow: ['10.1.2.3:22/tcp', '203.0.113.66'] } });
    assert.equal(judge.decide(s, [], tcp('203.0.113.66')).verdict, 'deny', 'denyCidrs beat the policy');
    assert.deepEqual(judge.decide(s, [], tcp('169.254.169.254', 80)), { verdict: 'deny', reason: 'metadata', by: 'cloud metadata' });
    assert.equal((judge.decide(s, [], { daddr: '203.0.113.10', proto: 17, dport: 53 }) as { reason: string }).reason, 'dns');
    assert.equal((judge.decide(s, [], tcp('8.8.8.8', 853)) as { reason: string }).reason, 'dns');
    assert.equal(judge.decide(s, [], tcp('10.1.2.3', 22)).verdict, 'allow', 'own allow opens a private address');
    assert.equal((judge.decide(s, [], tcp('10.1.2.3', 23)) as { reason: string }).reason, 'private');
    assert.equal(judge.decide(s, [], tcp('172.16.5.9', 5432)).by, 'allowCidrs 172.16.5.0/24:5432/tcp');
    assert.equal((judge.decide(s, [], tcp('10.166.0.3')) as { reason: string }).reason, 'sandbox');
    assert.deepEqual(judge.decide(s, [], tcp('203.0.113.10')), { verdict: 'allow', by: 'internet' });
    assert.equal((judge.decide(sandbox(3, { egress: { internet: false } }), [], tcp('203.0.113.10')) as { reason: string }).reason, 'internet');
  });

  it('under a domain allow-list, admits only what the resolver answered', () => {
    const s = sandbox(4, { egress: { domains: ['example.test'], allow: ['198.51.100.7'] } });
    const answered = (d: string) => d === '203.0.113.10';
    // Name checks are on by default with an allow-list: TCP opens pending its first flight, UDP is refused.
    assert.deepEqual(judge.decide(s, [], tcp('203.0.113.10'), answered), { verdict: 'allow', by: 'name pending: answered for an allowed name, to be named on the first flight', namePending: true });
    assert.deepEqual(judge.decide(s, [], { daddr: '203.0.113.10', proto: 17, dport: 443 }, answered), { verdict: 'deny', reason: 'unnamed_udp', by: 'UDP to an admitted address names nothing' });
    const ntp = sandbox(4, { egress: { domains: ['example.test'], unnamedPorts: ['123/udp'] } });
    assert.deepEqual(judge.decide(ntp, [], { daddr: '203.0.113.10', proto: 17, dport: 123 }, answered), { verdict: 'allow', by: 'answered for an allowed name' });
    const unchecked = sandbox(4, { egress: { domains: ['example.test'], verifyNames: false } });
    assert.deepEqual(judge.decide(unchecked, [], tcp('203.0.113.10'), answered), { verdict: 'allow', by: 'answered for an allowed name' });
    assert.deepEqual(judge.decide(s, [], tcp('203.0.113.20'), answered), { verdict: 'deny', reason: 'domain', by: 'egress.domains' });
    assert.equal(judge.decide(s, [], tcp('203.0.113.20')).verdict, 'deny', 'nothing answered: nothing open');
    assert.equal(judge.decide(s, [], tcp('198.51.100.7'), answered).verdict, 'allow', 'an allow entry still opens its CIDR');
    // An answered address in private space stays closed: the private ranges come first.
    assert.equal((judge.decide(s, [], tcp('10.99.0.5'), () => true) as { reason: string }).reason, 'private');
  });

  it('with name checks and no allow-list, opens TCP to the internet pending its name and refuses UDP there', () => {
    const s = sandbox(4, { egress: { verifyNames: true, unnamedPorts: ['123/udp'], allow: ['198.51.100.7'] } });
    assert.deepEqual(judge.decide(s, [], tcp('203.0.113.10')), { verdict: 'allow', by: 'name pending: to be named on the first flight as the sandbox\'s DNS answered', namePending: true });
    assert.deepEqual(judge.decide(s, [], { daddr: '203.0.113.10', proto: 17, dport: 443 }), { verdict: 'deny', reason: 'unnamed_udp', by: 'UDP to the internet names nothing' });
    assert.deepEqual(judge.decide(s, [], { daddr: '203.0.113.10', proto: 17, dport: 123 }), { verdict: 'allow', by: 'internet' });
    for (const proto of [1, 47, 132]) {
      assert.deepEqual(judge.decide(s, [], { daddr: '203.0.113.10', proto, dport: 0 }), { verdict: 'deny', reason: 'unnamed_proto', by: 'another protocol to the internet names nothing' }, `protocol ${proto}`);
    }
    assert.equal(judge.decide(s, [], tcp('198.51.100.7')).by, 'egress.allow 198.51.100.7', 'an allow entry is not name-checked');
    assert.equal((judge.decide(s, [], tcp('10.99.0.5')) as { reason: string }).reason, 'private');
    const off = sandbox(4, { egress: { verifyNames: true, internet: false } });
    assert.equal((judge.decide(off, [], tcp('203.0.113.10')) as { reason: string }).reason, 'internet');
  });

  it('a peer in the same group is reachable on its group ports only', () => {
    const a = sandbox(5, { group: { name: 'g', ports: ['8080/tcp'] } });
    const b = sandbox(6, { group: { name: 'g', ports: ['8080/tcp'] } });
    assert.equal(judge.decide(a, [b], tcp(b.ip, 8080)).verdict, 'allow');
    assert.equal((judge.decide(a, [b], tcp(b.ip, 8081)) as { reason: string }).reason, 'sandbox');
  });
});
