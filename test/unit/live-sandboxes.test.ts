import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { instanceNames, sandboxLinkName, sandboxMac } from '../../src/core/names.js';
import { resolvePolicy, type PolicyInput } from '../../src/core/policy.js';
import { groupPeers, sandboxElements, type Element } from '../../src/core/sandbox-elements.js';
import { LiveSandboxes, type LiveSpec } from '../../src/service/live-sandboxes.js';

const names = instanceNames('toastnet');
/** Sandbox `id` at 10.166.0.<host> (by default its id: another host number is an address reused). */
function spec(id: number, policy: PolicyInput = {}, host = id): LiveSpec {
  const ip = `10.166.0.${host}`;
  return { id, ip, mac: sandboxMac('test', id), mode: 'veth', hostLink: sandboxLinkName(names, id), policy: resolvePolicy(policy) };
}
const key = (e: Element) => JSON.stringify(e);
/** 10.166.0.0/16 as numbers: what the engine passes for its subnet. */
const SUBNET: [number, number] = [(10 << 24 | 166 << 16) >>> 0, (10 << 24 | 166 << 16 | 0xffff) >>> 0];

describe('LiveSandboxes', () => {
  it('finds a sandbox by name, by address and by id, and forgets all three on delete', () => {
    const live = new LiveSandboxes(SUBNET);
    live.set('a', spec(2));
    assert.equal(live.get('a')?.ip, '10.166.0.2');
    assert.equal(live.at('10.166.0.2')?.name, 'a');
    assert.equal(live.byId(2)?.name, 'a');
    live.delete('a');
    assert.equal(live.get('a'), undefined);
    assert.equal(live.at('10.166.0.2'), undefined);
    assert.equal(live.byId(2), undefined);
    assert.deepEqual(live.names(), []);
  });

  it('tells every change of an address\'s spec, with the spec it replaces', () => {
    const live = new LiveSandboxes(SUBNET);
    const told: [string, number | undefined, number | undefined, boolean | undefined][] = [];
    live.onChange = (ip, s, before) => told.push([ip, s?.id, before?.id, s?.policy.verifyNames]);
    live.set('a', spec(2));
    live.set('a', spec(2, { egress: { verifyNames: true } })); // a policy change
    live.set('b', spec(7, {}, 2)); // the address reused
    live.set('b', spec(8, {}, 3)); // moved to another address: the old one is free
    live.delete('b');
    assert.deepEqual(told, [
      ['10.166.0.2', 2, undefined, undefined],
      ['10.166.0.2', 2, 2, true],
      ['10.166.0.2', 7, 2, undefined],
      ['10.166.0.2', undefined, 7, undefined],
      ['10.166.0.3', 8, undefined, undefined],
      ['10.166.0.3', undefined, 8, undefined],
    ]);
  });

  it('a new spec for a name replaces the old one, address included', () => {
    const live = new LiveSandboxes(SUBNET);
    live.set('a', spec(2));
    live.set('a', spec(3));
    assert.equal(live.at('10.166.0.2'), undefined, 'the old address no longer names it');
    assert.equal(live.at('10.166.0.3')?.name, 'a');
  });

  it('deleting a name leaves another sandbox that now has its address alone', () => {
    const live = new LiveSandboxes(SUBNET);
    live.set('a', spec(2));
    live.set('b', spec(7, {}, 2)); // the address went to b (a is on its way out)
    live.delete('a');
    assert.equal(live.at('10.166.0.2')?.name, 'b');
    assert.equal(live.byId(7)?.name, 'b');
  });

  it('an id finds only its own sandbox: not a later one with the same name or address', () => {
    const live = new LiveSandboxes(SUBNET);
    live.set('a', spec(2));
    live.delete('a');
    live.set('a', spec(9, {}, 2)); // name and address reused by a new sandbox
    assert.equal(live.byId(2), undefined, 'the removed sandbox stays gone');
    assert.equal(live.byId(9)?.spec.ip, '10.166.0.2');
    assert.equal(live.at('10.166.0.2')?.spec.id, 9);
  });

  it('peers are the other members of the group; a sandbox without a group scans nobody', () => {
    const live = new LiveSandboxes(SUBNET);
    const [a, b, c] = [spec(2, { group: 'g' }), spec(3, { group: 'g' }), spec(4)];
    live.set('a', a);
    live.set('b', b);
    live.set('c', c);
    assert.deepEqual(live.peersOf('a', a).map((s) => s.ip), ['10.166.0.3']);
    assert.deepEqual(live.peersOf('c', c), []);
    assert.deepEqual(live.elementsOf('a', a).map(key), sandboxElements(a, [b], SUBNET).map(key));
  });

  it('all elements hold each sandbox\'s own once and each group pair once', () => {
    const live = new LiveSandboxes(SUBNET);
    const specs = [spec(2, { group: 'g' }), spec(3, { group: 'g' }), spec(4, { group: 'g' }), spec(5)];
    specs.forEach((s, i) => live.set(`s${i}`, s));
    const all = live.elements().map(key);
    assert.equal(new Set(all).size, all.length, 'no element twice');
    const expected = new Set(specs.flatMap((s) => sandboxElements(s, groupPeers(s, specs), SUBNET)).map(key));
    assert.deepEqual(new Set(all), expected);
  });

  it('objects are every live sandbox\'s named objects', () => {
    const live = new LiveSandboxes(SUBNET);
    live.set('a', spec(2, { limits: { packetsPerSecond: 100 } }));
    live.set('b', spec(3));
    assert.ok(live.objects().length > 0);
    live.delete('a');
    assert.deepEqual(live.objects(), []);
  });
});
