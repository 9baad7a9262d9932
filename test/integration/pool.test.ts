// The warm pool: the daemon keeps sandbox networks ready; members carry no policy and
// cannot send; a create acquires one (renamed, its policy applied), the pool refills with
// new networks, and down removes everything.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import type { ChildProcess } from 'node:child_process';
import path from 'node:path';
import { ToastnetClient } from '../../src/api/client.js';
import { ToastnetError } from '../../src/errors.js';
import { Testbed, WAN } from '../testbed/testbed.js';
import { waitFor } from '../helpers/wait.js';

describe('warm pool', () => {
  let tb: Testbed;
  const I = `p${Date.now().toString(36)}`;
  let cl: ToastnetClient;
  let cfg: string;
  let daemon: ChildProcess;
  const members = () => fs.readdirSync('/run/netns').filter((n) => n.startsWith(`${I}-.pool-`)).sort();
  /** Idle members' ids, oldest (the next one acquired) first. */
  const memberIds = () => members().map((n) => Number(n.split('-').pop())).sort((a, b) => a - b);
  const idle = async () => (await cl.status()).pool.idle;
  const until = (what: string, ok: () => Promise<boolean>) => waitFor(ok, what, 5000, 20);

  before(async () => {
    tb = await Testbed.create({ hostService: false });
    cfg = path.join(tb.dir, 'pool.json');
    fs.writeFileSync(cfg, JSON.stringify({ poolSize: 3 }));
    cl = new ToastnetClient(tb.socketPath(I));
    daemon = tb.startDaemon(I, ['--config', cfg]);
    await until('the daemon', () => cl.ping());
  });
  after(async () => {
    await tb?.destroy();
  });

  it('fills to its size; members are hidden, unnamed and cannot send', async () => {
    await until('3 idle members', async () => (await idle()) === 3);
    assert.equal(members().length, 3);
    const st = await cl.status();
    assert.equal(st.sandboxes, 0, 'members are no sandboxes');
    assert.equal(st.addresses.used, 3, 'but they hold addresses');
    assert.deepEqual(await cl.list(), []);
    const e = await cl.request('GET', `/v1/sandboxes/${encodeURIComponent(members()[0].slice(I.length + 1))}`).catch((x: ToastnetError) => x) as ToastnetError;
    assert.equal(e.code, 'not_found');
    // No element admits them: the source check drops what they send.
    const r = tb.try(tb.hostNs, ['nsenter', `--net=/run/netns/${members()[0]}`, 'curl', '-sS', '--max-time', '2', `http://${WAN.internet}/`]);
    assert.notEqual(r.code, 0, 'an idle member reached the internet');
  });

  it('a create acquires a member: same network renamed, policy applied, then the pool refills with a new one', async () => {
    const before = members();
    const firstId = Math.min(...before.map((n) => Number(n.split('-').pop())));
    const s = await cl.create({ name: 'job', policy: { egress: { deny: [`${WAN.internet2}/32`] } }, labels: { team: 'ml' } });
    assert.equal(s.id, firstId, 'the oldest member was taken');
    assert.deepEqual([s.labels, (await cl.get('job')).labels], [{ team: 'ml' }, { team: 'ml' }], 'labels kept with the acquired member');
    assert.equal(s.netns, `/run/netns/${I}-job`);
    // The member's old name is unmounted shortly after, off the create's time.
    await until('the old name to go', async () => !members().includes(`${I}-.pool-${firstId}`));
    assert.equal(tb.curl(I, 'job', 'http://example.test/').stdout, 'internet', 'internet and DNS through the acquired network');
    assert.notEqual(tb.curl(I, 'job', `http://${WAN.internet2}/`).code, 0, 'its policy is enforced');
    await until('the refill', async () => (await idle()) === 3);
    const ids = members().map((n) => Number(n.split('-').pop()));
    assert.ok(ids.every((id) => id !== firstId) && Math.max(...ids) > Math.max(...before.map((n) => Number(n.split('-').pop()))), 'new networks, never the used one');
    const stats = await cl.stats('job');
    assert.ok(stats.sent.packets > 0, 'accounting starts at acquisition');
    assert.equal((await cl.status()).pool.acquired, 1, 'status counts what the pool served');
  });

  it('macvlan sandboxes and creates beyond the pool are made on the spot', async () => {
    const p0 = (await cl.status()).pool;
    const m = await cl.create({ name: 'mv', mode: 'macvlan' });
    assert.equal(m.mode, 'macvlan');
    const p1 = (await cl.status()).pool;
    assert.deepEqual([p1.acquired, p1.missed], [p0.acquired, p0.missed], 'the pool was not touched');
    const made = await Promise.all(['b1', 'b2', 'b3', 'b4', 'b5'].map((name) => cl.create({ name })));
    assert.deepEqual(made.map((x) => x.name), ['b1', 'b2', 'b3', 'b4', 'b5']);
    const p2 = (await cl.status()).pool;
    assert.ok(p2.acquired! - p1.acquired! >= 3, 'the three idle members were used');
    assert.equal(p2.acquired! - p1.acquired! + p2.missed! - p1.missed!, 5, 'the rest were made on the spot');
    for (const name of ['b1', 'b5']) assert.equal(tb.curl(I, name, 'http://example.test/').stdout, 'internet');
    await until('the refill', async () => (await idle()) === 3);
  });

  it('a name already taken is refused and the member stays in the pool', async () => {
    await cl.create({ name: 'taken' });
    // The refill, and the acquired member's old name gone (unmounted off the create's time:
    // counted before it goes, it made the member count one more than the idle count).
    await until('the refill', async () => (await idle()) === 3 && members().length === 3);
    const n = members().length;
    const e = await cl.create({ name: 'taken' }).catch((x: ToastnetError) => x) as ToastnetError;
    assert.equal(e.code, 'conflict');
    const bad = await cl.create({ name: 'labelled', labels: { 'bad key': 'x' } }).catch((x: ToastnetError) => x) as ToastnetError;
    assert.equal(bad.code, 'invalid_argument', 'a bad label is refused before a member is taken');
    assert.equal(members().length, n);
    assert.equal(await idle(), n);
  });

  it('a member broken from outside (its namespace gone) does not block creates: it is dropped', async () => {
    await until('a full pool', async () => (await idle()) === 3);
    const brokenId = memberIds()[0]; // the one the next create takes
    const broken = `${I}-.pool-${brokenId}`;
    tb.sh(tb.hostNs, ['ip', 'netns', 'del', broken]);
    const missed = (await cl.status()).pool.missed!;
    const s = await cl.create({ name: 'after' });
    assert.equal(s.name, 'after');
    assert.notEqual(s.id, brokenId);
    assert.equal((await cl.status()).pool.missed, missed + 1, 'the broken member was tried, and the create made on the spot');
    assert.equal(tb.curl(I, 'after', 'http://example.test/').stdout, 'internet');
    await until('the broken member to go and the pool to refill', async () => (await idle()) === 3 && !members().includes(broken));
  });

  it('an automatic name someone took by hand does not block creates', async () => {
    await until('a full pool', async () => (await idle()) === 3);
    // This create takes the oldest member; the next automatic create would be named after
    // the second oldest, whose name it takes by hand.
    const secondId = memberIds()[1];
    await cl.create({ name: `sbx-${secondId}` });
    const missed = (await cl.status()).pool.missed!;
    const s = await cl.create({});
    assert.notEqual(s.name, `sbx-${secondId}`);
    assert.equal((await cl.status()).pool.missed, missed + 1, 'the member was passed over, the create made on the spot');
    assert.equal(tb.curl(I, s.name, 'http://example.test/').stdout, 'internet');
  });

  it('a member the kernel refuses is given back (no row, address or namespace left), and the pool refills once it can', async () => {
    const s = await cl.create({ name: 'linkprobe' });
    await until('the refill', async () => (await idle()) === 3);
    const prefix = s.hostLink!.slice(0, -s.id.toString(36).length);
    const next = Math.max(...memberIds(), s.id) + 1;
    // The next members' host link names, taken by someone else.
    const blockers = [0, 1, 2, 3].map((k) => `${prefix}${(next + k).toString(36)}`);
    for (const b of blockers) tb.sh(tb.hostNs, ['ip', 'link', 'add', b, 'type', 'bridge']);
    try {
      const used = (await cl.status()).addresses.used;
      await cl.create({ name: 'blocked' }); // takes a member; the refill's builds fail
      // Until then the refill's reservations hold addresses.
      await until('the refused members given back', async () => (await cl.status()).addresses.used === used);
      const st = await cl.status();
      assert.equal(st.pool.idle, 2, 'the refused member is not in the pool');
      assert.equal(st.addresses.used, used, 'its address was given back');
      assert.ok(!fs.readdirSync('/run/netns').some((n) => n === `${I}-.pool-${next}`), 'its namespace was removed');
      assert.ok(!fs.readdirSync('/etc/netns').some((n) => n === `${I}-.pool-${next}`), 'its /etc/netns entry was removed');
    } finally {
      for (const b of blockers) tb.try(tb.hostNs, ['ip', 'link', 'del', b]);
    }
    await cl.create({ name: 'unblocked' });
    await until('the refill', async () => (await idle()) === 3);
  });

  it('a daemon restarted with a smaller pool removes the idle members beyond it and frees their addresses', async () => {
    await until('3 idle members', async () => (await idle()) === 3);
    const used = (await cl.status()).addresses.used;
    const sandboxes = (await cl.list()).length;
    const exited = new Promise((r) => daemon.once('exit', r));
    daemon.kill('SIGTERM');
    await exited;
    fs.writeFileSync(cfg, JSON.stringify({ poolSize: 1 }));
    daemon = tb.startDaemon(I, ['--config', cfg]);
    await until('the daemon', () => cl.ping());
    assert.equal(await idle(), 1);
    assert.equal(members().length, 1);
    assert.equal((await cl.list()).length, sandboxes, 'sandboxes are left alone');
    await until('the addresses back', async () => {
      const a = (await cl.status()).addresses;
      return a.releasing === 0 && a.used === used - 2;
    });
  });

  it('down removes the pool with everything else', async () => {
    await cl.down();
    const left = () => fs.readdirSync('/run/netns').filter((x) => x.startsWith(`${I}-`));
    await waitFor(() => left().length === 0, () => `the namespaces to go: ${left().join(' ')}`, 2000, 20);
  });
});
