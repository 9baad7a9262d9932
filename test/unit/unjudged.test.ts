// The report of what the name gate dropped with no verdict (service/unjudged.ts): every
// packet the kernel counted is reported once, across polls, expired elements and a daemon
// that dies between counting and reporting. The kernel's counters are a map here; the
// store is a real one.
import { afterEach, beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Store } from '../../src/store/store.js';
import { UnjudgedDrop, UnjudgedTally } from '../../src/service/unjudged.js';
import { verdictRequest } from '../../src/kernel/nfqueue-codec.js';

describe('UnjudgedTally', () => {
  let dir: string;
  let store: Store;
  /** The kernel's per-source counters; undefined: no gate table. */
  let kernel: Map<string, number> | undefined;
  const names: Record<string, string> = { '10.166.0.2': 'a', '10.166.0.3': 'b' };
  const tally = () => new UnjudgedTally(store, {
    bySource: () => (kernel ? new Map(kernel) : undefined),
  }, (ip) => names[ip]);
  const poll = (t: UnjudgedTally) => {
    const got: UnjudgedDrop[] = [];
    const returned = t.poll((d) => got.push(...d), 1000);
    assert.deepEqual(returned, got, 'what was recorded is what is returned');
    return got.map((d) => `${d.sandbox}:${d.packets}`).sort();
  };

  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tn-unjudged-'));
    store = new Store(path.join(dir, 'state.db'));
    kernel = new Map();
  });
  afterEach(() => {
    store.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('reports what each source gained since the last poll, and nothing when nothing changed', () => {
    const t = tally();
    assert.deepEqual(poll(t), []);
    kernel!.set('10.166.0.2', 3);
    assert.deepEqual(poll(t), ['a:3']);
    kernel!.set('10.166.0.2', 5);
    kernel!.set('10.166.0.3', 1);
    assert.deepEqual(poll(t), ['a:2', 'b:1']);
    assert.deepEqual(poll(t), []);
  });

  it('a daemon that dies between the kernel\'s count and its report reports the rest after its restart, once', () => {
    const t = tally();
    kernel!.set('10.166.0.2', 4);
    assert.deepEqual(poll(t), ['a:4']);
    kernel!.set('10.166.0.2', 10); // 6 more; then the daemon dies before its next poll
    const after = tally(); // a new process, the same store; the kernel's set kept its counts
    assert.deepEqual(poll(after), ['a:6']);
    assert.deepEqual(poll(after), []);
  });

  it('a source whose element expired is forgotten, so its next count is taken whole', () => {
    const t = tally();
    kernel!.set('10.166.0.3', 7);
    assert.deepEqual(poll(t), ['b:7']);
    kernel!.delete('10.166.0.3'); // a day without drops: the element expired
    assert.deepEqual(poll(t), []);
    kernel!.set('10.166.0.3', 9); // back, with more than before
    assert.deepEqual(poll(t), ['b:9']);
  });

  it('a source whose element expired and came back starts again from 0', () => {
    const t = tally();
    kernel!.set('10.166.0.3', 7);
    assert.deepEqual(poll(t), ['b:7']);
    kernel!.set('10.166.0.3', 2);
    assert.deepEqual(poll(t), ['b:2']);
  });

  it('writes nothing when nothing was gained', () => {
    const t = tally();
    kernel!.set('10.166.0.2', 2);
    poll(t);
    let called = 0;
    t.poll(() => called++, 1000);
    assert.equal(called, 0);
  });

  it('reports nothing, and keeps its baseline, when the report fails (the transaction rolls back)', () => {
    const t = tally();
    kernel!.set('10.166.0.2', 3);
    assert.throws(() => t.poll(() => { throw new Error('disk full'); }, 1000));
    assert.deepEqual(poll(tally()), ['a:3'], 'reported by the next poll, not lost');
  });

  it('without a gate table there is nothing to carry or report', () => {
    kernel = undefined;
    assert.deepEqual(poll(tally()), []);
  });
});

describe('verdictRequest', () => {
  it('carries the packet\'s new mark when given, and none otherwise', () => {
    const withMark = verdictRequest(7, 42, 1, 0x1234);
    const without = verdictRequest(7, 42, 1);
    assert.equal(withMark.body.length, without.body.length + 8, 'one more attribute: NFQA_MARK, 4 bytes of header and 4 of value');
    assert.equal(withMark.body.readUInt32BE(withMark.body.length - 4), 0x1234);
  });
});
