// The reaper's bookkeeping, without root: removals whose "namespace" fd is a plain file
// (no process has it as its network namespace) are released at the next batch, the fd is
// closed, and a mass removal is read in bounded batches. Processes
// actually held in a namespace (ended, then released) are covered by the daemon
// integration test.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Reaper } from '../../src/service/reaper.js';
import { waitFor } from '../helpers/wait.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'reaper-test-'));
const file = path.join(dir, 'not-a-netns');
fs.writeFileSync(file, '');
after(() => fs.rmSync(dir, { recursive: true, force: true }));
const openFd = () => fs.openSync(file, 'r');
const isOpen = (fd: number) => {
  try {
    fs.fstatSync(fd);
    return true;
  } catch {
    return false;
  }
};

describe('Reaper', () => {
  it('releases at the next batch, not before, and closes the fd it was given', async () => {
    const r = new Reaper({ delayMs: 20, graceMs: 0 });
    const released: string[] = [];
    const fd = openFd();
    r.add({ fd, held: () => released.push('held'), release: () => released.push('a') });
    r.add({ fd: undefined, held: () => released.push('held'), release: () => released.push('b') });
    assert.deepEqual(released, [], 'nothing before the batch');
    assert.equal(r.size, 2);
    await waitFor(() => released.length > 0, 'the batch', 2000, 5);
    assert.deepEqual(released, ['a', 'b'], 'both in one batch');
    assert.equal(isOpen(fd), false, 'the namespace fd is closed after the batch');
    assert.equal(r.size, 0);
  });

  it('a mass removal is read in batches of at most 256 (each holds an fd until read)', () => {
    const r = new Reaper({ delayMs: 10_000, graceMs: 0 });
    let released = 0;
    for (let i = 0; i < 300; i++) r.add({ fd: openFd(), held: () => {}, release: () => released++ });
    assert.equal(released, 256, 'the first 256 were read synchronously');
    assert.equal(r.size, 44);
    r.stop();
    assert.equal(released, 300, 'stop() reads what is pending');
    assert.equal(r.size, 0);
  });
});
