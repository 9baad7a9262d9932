// What `up` asks the kernel before it makes anything (service/host-network.ts): whether
// nft_compat has the xtables NFQUEUE target the name gate's queue rule needs. Asked in a
// throwaway namespace: a target the kernel has, one it has not, a revision it has not, and
// the asking leaves no table behind.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { Nft } from '../../src/kernel/nft.js';
import { withNetns } from '../../src/kernel/netns.js';
import { QUEUE_TARGET } from '../../src/kernel/nfqueue-codec.js';

describe('kernel probes: the xtables target of the name gate', () => {
  const ns = `probe-${randomBytes(3).toString('hex')}`;
  let nft: Nft;
  const inNs = <T>(f: () => T): T => withNetns(`/run/netns/${ns}`, f);

  before(() => {
    execFileSync('ip', ['netns', 'add', ns]);
    nft = inNs(() => new Nft());
  });
  after(() => {
    execFileSync('ip', ['netns', 'del', ns]);
  });

  it('finds the queue rule\'s target and revision on this kernel', () => {
    assert.equal(inNs(() => nft.hasXtTarget(QUEUE_TARGET.name, QUEUE_TARGET.rev)), true);
  });

  it('says no for a target or revision the kernel has not, without an error', () => {
    assert.equal(inNs(() => nft.hasXtTarget('TNNOSUCH', 0)), false);
    assert.equal(inNs(() => nft.hasXtTarget(QUEUE_TARGET.name, 99)), false);
  });

  it('makes nothing', () => {
    const ruleset = execFileSync('nsenter', [`--net=/run/netns/${ns}`, 'nft', 'list', 'ruleset'], { encoding: 'utf8' });
    assert.equal(ruleset.trim(), '');
  });
});
