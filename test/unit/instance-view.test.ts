import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { formatSandboxes, labelText } from '../../src/cli/instance-view.js';
import type { SandboxInfo } from '../../src/api/types.js';

const sbx = (name: string, labels: Record<string, string> = {}): SandboxInfo => ({
  name, labels, mode: 'veth', id: 1, ip: '10.166.0.2', gateway: '10.166.0.1', prefixLength: 16, netns: `/run/netns/t-${name}`, mac: '02:00:00:00:00:01',
  resolvConf: '/etc/netns/x/resolv.conf', createdAt: '2024-01-01T00:00:00.000Z', state: 'ready',
});

describe('ls table', () => {
  it('no LABELS column when no sandbox has labels', () => {
    assert.match(formatSandboxes([sbx('a')]).split('\n')[0], /^NAME +IP +MODE +NETNS +CREATED +PUBLISH$/);
  });

  it('a LABELS column, k=v sorted by key, when one has labels; empty for the others', () => {
    const lines = formatSandboxes([sbx('a', { z: '1', team: 'ml', tier: '' }), sbx('b')]).split('\n');
    assert.match(lines[0], /CREATED +PUBLISH +LABELS$/);
    assert.match(lines[1], /  team=ml,tier=,z=1$/);
    assert.match(lines[2], /Z$/, 'nothing after the time');
    assert.equal(labelText({ labels: {} }), '');
  });
});
