// releaseNetns: a removed sandbox's name is unmounted on a libuv thread, through an fd of
// its own mount. The name is free at once, and a namespace mounted under it meanwhile
// survives the old release.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import { promisify } from 'node:util';
import { waitFor } from '../helpers/wait.js';
import { createNetns, deleteNetns, finishReleases, netnsPath, releaseNetns, releasesSettled } from '../../src/kernel/netns.js';

/** This process's fds on the namespace that `ns` (a stat of it) is. */
const fdsOn = (ns: fs.Stats) => fs.readdirSync('/proc/self/fd').filter((fd) => {
  try {
    const s = fs.statSync(`/proc/self/fd/${fd}`);
    return s.ino === ns.ino && s.dev === ns.dev;
  } catch {
    return false; // closed meanwhile
  }
});
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
    const old = fs.statSync(netnsPath(b));
    const oldIno = old.ino;
    // Keep libuv's threads (4) busy, so that the old release's unmount runs only after the
    // new namespace is mounted under the same name: the worst order.
    const busy = Array.from({ length: 4 }, () => promisify(crypto.pbkdf2)('x', 'y', 200_000, 32, 'sha256'));
    releaseNetns(b);
    await new Promise((r) => setImmediate(r)); // its unmount is handed to a (busy) libuv thread
    assert.equal(fdsOn(old).length, 1, 'the pending release holds an fd of the old namespace');
    createNetns(b, () => undefined);
    const newIno = fs.statSync(netnsPath(b)).ino;
    assert.notEqual(newIno, oldIno, 'a new namespace');
    await Promise.all(busy);
    await releasesSettled();
    // releasesSettled does not wait for it (the new create finished the old release): the
    // old release's callback has run once it closed its fd of the old namespace.
    await waitFor(() => fdsOn(old).length === 0, 'the old release\'s callback to close its fd', 5000, 5);
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
    assert.deepEqual(burst.filter((n) => fs.existsSync(netnsPath(n)) || mounted(n)), []);
  });
});
