// The CLI's policy flags: what document each set of flags makes, read by commander as the CLI
// reads them.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Command } from 'commander';
import { addPolicyOptions, policyFromFlags, type PolicyFlags } from '../../src/cli/policy-flags.js';

const flags = (...argv: string[]): PolicyFlags => addPolicyOptions(new Command().exitOverride()).parse(argv, { from: 'user' }).opts<PolicyFlags>();

describe('policyFromFlags', () => {
  it('no flags: no policy (the config\'s default applies)', () => {
    assert.equal(policyFromFlags(flags()), undefined);
  });

  it('--verify-names asks for name checks without an allow-list; --no-verify-names turns them off under one', () => {
    assert.deepEqual(policyFromFlags(flags('--verify-names', '--unnamed-port', '22')), { egress: { verifyNames: true, unnamedPorts: ['22'] } });
    assert.deepEqual(policyFromFlags(flags('--domain', 'a.test', '--no-verify-names')), { egress: { domains: ['a.test'], verifyNames: false } });
    assert.deepEqual(policyFromFlags(flags('--domain', 'a.test')), { egress: { domains: ['a.test'] } });
  });
});
