import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ToastnetError } from '../../src/errors.js';
import {
  autoSandboxName, instanceNames, linkPrefix, netnsName, sandboxIdFromLink, sandboxLinkName, sandboxMac, validateSandboxName,
} from '../../src/core/names.js';

const IFNAMSIZ_MAX = 15;

describe('linkPrefix / instanceNames', () => {
  it('is "tn" + 4 hex digits, stable across calls', () => {
    assert.equal(linkPrefix('toastnet'), 'tn727b'); // sha256("toastnet") starts with 727b
    assert.equal(linkPrefix('other'), 'tnd929');
    for (const i of ['toastnet', 'a', 'ci_42', 'x'.repeat(24)]) {
      assert.match(linkPrefix(i), /^tn[0-9a-f]{4}$/);
      assert.equal(linkPrefix(i), linkPrefix(i));
    }
    assert.notEqual(linkPrefix('toastnet'), linkPrefix('toastnet2'));
  });

  it('derives every name from the instance', () => {
    assert.deepEqual(instanceNames('toastnet'), {
      table: 'toastnet',
      linkPrefix: 'tn727b',
      gatewayLink: 'tn727bg',
      macvlanParent: 'tn727bm',
      sandboxLinkPrefix: 'tn727bs',
      shaperLink: 'tn727bq',
      netnsPrefix: 'toastnet-',
    });
    assert.equal(netnsName(instanceNames('toastnet'), 'web-1'), 'toastnet-web-1');
    assert.equal(autoSandboxName(7), 'sbx-7');
  });
});

describe('sandbox link names', () => {
  const n = instanceNames('toastnet');

  it('never exceed 15 characters, up to id 36**8-1', () => {
    const maxId = 36 ** 8 - 1;
    assert.equal(sandboxLinkName(n, maxId), 'tn727bszzzzzzzz');
    for (const id of [0, 1, 35, 36, 1295, 46655, 2 ** 31, maxId]) {
      const name = sandboxLinkName(n, id);
      assert.ok(name.length <= IFNAMSIZ_MAX, `${name} is ${name.length} chars`);
    }
    for (const l of [n.gatewayLink, n.macvlanParent]) assert.ok(l.length <= IFNAMSIZ_MAX);
  });

  it('sandboxIdFromLink inverts sandboxLinkName', () => {
    for (const id of [0, 1, 9, 10, 35, 36, 12345, 2 ** 31 - 1, 36 ** 8 - 1]) {
      assert.equal(sandboxIdFromLink(n, sandboxLinkName(n, id)), id);
    }
  });

  it('sandboxIdFromLink rejects links that are not this instance\'s sandbox links', () => {
    const other = instanceNames('other');
    assert.notEqual(other.linkPrefix, n.linkPrefix);
    const rejects = [
      n.gatewayLink,
      n.macvlanParent,
      n.sandboxLinkPrefix, // no id at all
      sandboxLinkName(other, 5),
      other.gatewayLink,
      'eth0',
      'lo',
      'veth1234',
      `${n.sandboxLinkPrefix}A`,
      `${n.sandboxLinkPrefix}1-2`,
      `${n.sandboxLinkPrefix}1@if3`,
      `x${sandboxLinkName(n, 5)}`,
      `${n.sandboxLinkPrefix}01`, // a spelling sandboxLinkName never makes
    ];
    for (const l of rejects) assert.equal(sandboxIdFromLink(n, l), undefined, l);
    // ...and accepts another instance's links only with that instance's names.
    assert.equal(sandboxIdFromLink(other, sandboxLinkName(other, 5)), 5);
  });
});

describe('validateSandboxName', () => {
  it('accepts 1-63 of [A-Za-z0-9_.-] starting with a letter or digit', () => {
    for (const s of ['a', 'Z', '0', 'web-1', 'job_42.retry', 'A'.repeat(63), '9-.-_']) {
      assert.doesNotThrow(() => validateSandboxName(s), s);
    }
  });

  it('rejects everything else', () => {
    for (const s of ['', '-a', '.hidden', '_x', '..', 'a/b', 'a b', 'a'.repeat(64), 'ünï', 'a\n', 'a;rm', 'x:y']) {
      assert.throws(() => validateSandboxName(s), (e: unknown) => {
        assert.ok(e instanceof ToastnetError);
        assert.equal(e.code, 'invalid_argument');
        assert.match(e.message, /1-63/);
        return true;
      }, JSON.stringify(s));
    }
    assert.throws(() => validateSandboxName(undefined as unknown as string), ToastnetError);
  });
});

describe('sandboxMac', () => {
  it('is a locally administered unicast MAC, the same for the same key and id', () => {
    for (let id = 1; id < 200; id++) {
      const mac = sandboxMac('k1', id);
      assert.match(mac, /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/);
      const first = parseInt(mac.slice(0, 2), 16);
      assert.equal(first & 0x02, 0x02, 'locally administered bit');
      assert.equal(first & 0x01, 0, 'unicast');
      assert.equal(sandboxMac('k1', id), mac);
    }
  });

  it('cannot be computed from the address or id alone: another key gives another MAC, ids do not collide', () => {
    const macs = new Set<string>();
    for (let id = 1; id <= 5000; id++) {
      assert.notEqual(sandboxMac('k1', id), sandboxMac('k2', id));
      macs.add(sandboxMac('k1', id));
    }
    assert.equal(macs.size, 5000);
    // Neither the old address-derived prefix nor a counter: consecutive ids share no structure.
    assert.ok([...macs].filter((m) => m.startsWith('02:74:')).length < 10);
  });
});
