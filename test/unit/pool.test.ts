// The warm pool's bookkeeping, with a stub engine and builder (no kernel): refills up to
// the size with a few members queued on the builder at once, gives a refused member back, replaces a builder whose
// thread died, trims what is beyond the size, and stop waits for the builds queued.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { setImmediate as turn } from 'node:timers/promises';
import { MemberBuilder, PoolEngine, WarmPool } from '../../src/service/pool.js';
import type { PoolReservation, SandboxInfo } from '../../src/service/engine.js';

class StubEngine {
  idle = 0;
  building = 0;
  nextId = 1;
  /** Reservations left before the addresses run out. */
  addresses = Infinity;
  /** Ids whose finish throws (after its bookkeeping), as a failing SQLite write would. */
  finishThrows = new Set<number>();
  finished: { id: number; failed: boolean }[] = [];
  acquire(): SandboxInfo | undefined {
    if (this.idle === 0) return undefined;
    this.idle--;
    return { name: 'acquired' } as SandboxInfo;
  }
  create(): SandboxInfo {
    return { name: 'made' } as SandboxInfo;
  }
  poolIdle(): number {
    return this.idle + this.building;
  }
  reservePoolMember(): PoolReservation {
    if (this.addresses-- <= 0) throw new Error('no free address in 10.166.0.0/16');
    this.building++;
    return { lease: { row: { id: this.nextId++ } }, net: { netns: 'ns' } } as unknown as PoolReservation;
  }
  finishPoolMember(r: PoolReservation, failed?: unknown): void {
    this.building--;
    if (failed === undefined) this.idle++;
    this.finished.push({ id: r.lease.row.id, failed: failed !== undefined });
    if (this.finishThrows.has(r.lease.row.id)) throw new Error('database is locked');
  }
  dropPoolMember(): boolean {
    if (this.idle === 0) return false;
    this.idle--;
    return true;
  }
}

class StubBuilder implements MemberBuilder {
  dead = false;
  closed = false;
  built = 0;
  inFlight = 0;
  maxInFlight = 0;
  constructor(private readonly fail?: 'refuse' | 'die') {}
  async build(): Promise<void> {
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    await turn();
    this.inFlight--;
    if (this.fail === 'die') {
      this.dead = true;
      throw new Error('builder thread: exited (1)');
    }
    if (this.fail === 'refuse') throw new Error('create veth: File exists (EEXIST)');
    this.built++;
  }
  async close(): Promise<void> {
    this.closed = true;
  }
}

/** A pool over `e` whose builders (one per thread the pool starts) are kept for inspection; `fail(n)`: how the n-th one fails. */
function poolWith(e: StubEngine, size: number, o: { log?: (m: string) => void; fail?: (n: number) => 'refuse' | 'die' | undefined } = {}): { pool: WarmPool; builders: StubBuilder[] } {
  const builders: StubBuilder[] = [];
  const pool = new WarmPool(e as unknown as PoolEngine, { size, refillBelow: size }, o.log ?? (() => {}), () => {
    const b = new StubBuilder(o.fail?.(builders.length));
    builders.push(b);
    return b;
  });
  return { pool, builders };
}

/** A log line with how many members were finished when it was written. */
const progressLog = (e: StubEngine, logs: string[]) => (m: string) => logs.push(`${m} (after ${e.finished.length} finished)`);

async function settle(): Promise<void> {
  for (let i = 0; i < 50; i++) await turn();
}

describe('warm pool bookkeeping', () => {
  it('fills up to its size with four members queued on the builder at most; stop waits and ends the builder', async () => {
    const e = new StubEngine();
    const { pool, builders } = poolWith(e, 6);
    pool.refill();
    pool.refill(); // a second call while filling starts nothing more
    await settle();
    assert.equal(e.idle, 6);
    assert.equal(builders.length, 1);
    assert.equal(builders[0].maxInFlight, 4);
    const got = pool.create({});
    assert.equal(got.name, 'acquired');
    await pool.stop();
    assert.equal(e.building, 0, 'the members under way were finished before stop returned');
    assert.equal(builders[0].closed, true);
  });

  it('a refused member is given back and the refill stops until the next create', async () => {
    const e = new StubEngine();
    const logs: string[] = [];
    let fail: 'refuse' | undefined = 'refuse';
    const { pool } = poolWith(e, 2, { log: (m) => logs.push(m), fail: () => fail });
    pool.refill();
    await settle();
    assert.deepEqual(e.finished, [{ id: 1, failed: true }, { id: 2, failed: true }], 'both queued members given back');
    assert.equal(e.poolIdle(), 0);
    assert.equal(e.nextId, 3, 'nothing reserved after the failure');
    assert.match(logs.join('\n'), /refill stopped: create veth/);
    fail = undefined; // a new builder would not fail, but this one is kept: it did not die
    pool.create({});
    await settle();
    assert.equal(e.idle, 0, 'the same builder refuses again');
    await pool.stop();
  });

  it('a builder whose thread died is closed and replaced at the next refill', async () => {
    const e = new StubEngine();
    const { pool, builders } = poolWith(e, 2, { fail: (n) => (n === 0 ? 'die' : undefined) });
    pool.refill();
    await settle();
    assert.equal(builders.length, 1);
    assert.equal(builders[0].closed, true);
    assert.equal(e.finished[0].failed, true);
    pool.create({}); // a create made on the spot, then a refill with a new builder
    await settle();
    assert.equal(builders.length, 2);
    assert.equal(e.idle, 2);
    await pool.stop();
  });

  it('running out of addresses stops the refill once the queued members are finished', async () => {
    const e = new StubEngine();
    e.addresses = 3;
    const logs: string[] = [];
    const { pool } = poolWith(e, 6, { log: progressLog(e, logs) });
    pool.refill();
    await settle();
    assert.equal(e.idle, 3);
    assert.equal(e.building, 0);
    assert.deepEqual(logs, ['pool: refill stopped: no free address in 10.166.0.0/16 (after 3 finished)'], 'the refill ends only after the queued members');
    await pool.stop();
  });

  it('a finish that throws still lets every queued member finish, and the next refill runs', async () => {
    const e = new StubEngine();
    e.finishThrows.add(1);
    const logs: string[] = [];
    const { pool } = poolWith(e, 3, { log: progressLog(e, logs) });
    pool.refill();
    await settle();
    assert.deepEqual(logs, ['pool: refill stopped: database is locked (after 3 finished)']);
    assert.equal(e.building, 0);
    e.idle = 0;
    pool.refill(); // not stuck in "filling"
    await settle();
    assert.equal(e.idle, 3);
    await pool.stop();
  });

  it('stop waits for every member queued on the builder', async () => {
    const e = new StubEngine();
    const { pool, builders } = poolWith(e, 6);
    pool.refill();
    await turn(); // four queued, none finished
    assert.equal(builders[0].inFlight, 4);
    await pool.stop();
    assert.equal(e.building, 0);
    assert.equal(e.finished.length, 4, 'no member reserved after stop');
    assert.equal(builders[0].closed, true);
  });

  it('trim removes idle members beyond the size; a pool of size 0 starts no builder', async () => {
    const e = new StubEngine();
    e.idle = 5;
    const { pool, builders } = poolWith(e, 0);
    assert.equal(pool.trim(), 5);
    assert.equal(e.idle, 0);
    assert.equal(pool.create({}).name, 'made');
    await settle();
    assert.equal(builders.length, 0);
    assert.deepEqual(pool.counts, { acquired: 0, missed: 0 });
    await pool.stop();
  });
});
