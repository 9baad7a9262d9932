// releaseNetns: a removed sandbox's name is unmounted on a libuv thread, through an fd of
// its own mount. The name is free at once, and a namespace mounted under it meanwhile
// survives the old release.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import { promisify } from 'node:util';
import { createNetns, deleteNetns, finishReleases, netnsPath, releaseNetns, releasesSettled } from '../../src/kernel/netns.js';

const mounted = (name: string) => fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').some((l) => l.split(' ')[4] === netnsPath(name));

describe('netns release off the main thread', () => {
  const run = `zrel${process.pid.toString(36)}${Date.now().toString(36)}`;
  const names = [`${run}-a`, `${run}-b`, `${run}-c`, `${run}-d`];
  const burst = Array.from({ length: 400 }, (_, i) => `${run}-m${i}`);
  after(() => {
    finishReleases();
    for (const n of [...names, ...burst]) deleteNetns(n);
  });

  it('unmounts and removes the name', async () => {
    const [a] = names;
    createNetns(a, () => undefined);
    assert.ok(mounted(a));
    releaseNetns(a);
    await releasesSettled();
    assert.equal(mounted(a), false);
    assert.equal(fs.existsSync(netnsPath(a)), false);
  });

  it('a namespace created under the name at once survives the old release', async () => {
    const [, b] = names;
    createNetns(b, () => undefined);
    const oldIno = fs.statSync(netnsPath(b)).ino;
    // Keep libuv's threads (4) busy, so that the old release's unmount runs only after the
    // new namespace is mounted under the same name: the worst order.
    const busy = Array.from({ length: 4 }, () => promisify(crypto.pbkdf2)('x', 'y', 200_000, 32, 'sha256'));
    releaseNetns(b);
    await new Promise((r) => setImmediate(r)); // its unmount is handed to a (busy) libuv thread
    createNetns(b, () => undefined);
    const newIno = fs.statSync(netnsPath(b)).ino;
    assert.notEqual(newIno, oldIno, 'a new namespace');
    await Promise.all(busy);
    await releasesSettled();
    await new Promise((r) => setTimeout(r, 50)); // the old release's callback has run
    assert.ok(mounted(b), 'the new namespace is still mounted');
    assert.equal(fs.statSync(netnsPath(b)).ino, newIno);
  });

  it('deleteNetns and finishReleases complete a pending release on the spot, then `gone` runs', () => {
    const [, , c, d] = names;
    const gone: string[] = [];
    const onGone = (n: string) => () => {
      assert.equal(fs.existsSync(netnsPath(n)), false, 'gone runs once the name is gone');
      gone.push(n);
    };
    createNetns(c, () => undefined);
    createNetns(d, () => undefined);
    releaseNetns(c, onGone(c));
    finishReleases();
    releaseNetns(d, onGone(d));
    deleteNetns(d);
    assert.deepEqual(gone.sort(), [c, d].sort());
    for (const n of [c, d]) {
      assert.equal(mounted(n), false);
      assert.equal(fs.existsSync(netnsPath(n)), false);
    }
  });

  it('a release of a name that is not there only runs `gone`, on the next turn', async () => {
    let gone = 0;
    releaseNetns(`${run}-none`, () => gone++);
    assert.equal(gone, 0, 'nothing is done before the caller has returned');
    await releasesSettled();
    assert.equal(gone, 1);
  });

  it('a burst of releases beyond what koffi runs at once (a mass removal) waits its turn and all complete', async () => {
    for (const n of burst) createNetns(n, () => undefined);
    for (const n of burst) releaseNetns(n);
    await releasesSettled();
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(burst.filter((n) => fs.existsSync(netnsPath(n)) || mounted(n)), []);
  });
});
