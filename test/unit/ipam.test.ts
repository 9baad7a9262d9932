import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ToastnetError } from '../../src/errors.js';
import { Ipam } from '../../src/core/ipam.js';
import { formatIPv4, parseCidr, parseIPv4 } from '../../src/core/ipv4.js';

const ip = (s: string) => parseIPv4(s);
const fmt = (ns: number[]) => ns.map(formatIPv4);

/** 192.168.7.0/29 with the gateway .1 reserved: usable .2-.6 (capacity 5). */
function small(state?: ConstructorParameters<typeof Ipam>[2]): Ipam {
  return new Ipam(parseCidr('192.168.7.0/29'), new Set([ip('192.168.7.1')]), state);
}

/** What a create does: peek, remember freshness, take. */
function begin(p: Ipam): { ip: number; wasFresh: boolean } {
  const a = p.peek();
  const wasFresh = p.isFresh(a);
  p.take(a);
  return { ip: a, wasFresh };
}

/** Allocates until exhaustion (mutating p) and returns the addresses in the order handed out. */
function drain(p: Ipam): string[] {
  const out: number[] = [];
  for (;;) {
    try {
      out.push(p.allocate());
    } catch (err) {
      assert.ok(err instanceof ToastnetError && err.code === 'exhausted', String(err));
      return fmt(out);
    }
  }
}

describe('Ipam', () => {
  it('hands out never-used addresses in order, skipping the gateway, network and broadcast', () => {
    const p = small();
    assert.deepEqual(drain(p), ['192.168.7.2', '192.168.7.3', '192.168.7.4', '192.168.7.5', '192.168.7.6']);
  });

  it('capacity and free', () => {
    const p = small();
    assert.equal(p.capacity, 5);
    assert.equal(p.free, 5);
    const a = p.allocate();
    p.allocate();
    assert.equal(p.free, 3);
    p.release(a);
    assert.equal(p.free, 4);
    assert.equal(p.capacity, 5);
    // A reserved address outside the usable range does not reduce capacity.
    assert.equal(new Ipam(parseCidr('192.168.7.0/29'), new Set([ip('192.168.7.0'), ip('192.168.7.7'), ip('10.0.0.1')])).capacity, 6);
    assert.equal(new Ipam(parseCidr('10.166.0.0/16'), new Set([ip('10.166.0.1')])).capacity, 65533);
  });

  it('a reserved address in the middle of the range is skipped too', () => {
    const p = new Ipam(parseCidr('192.168.7.0/29'), new Set([ip('192.168.7.1'), ip('192.168.7.4')]));
    assert.equal(p.capacity, 4);
    assert.deepEqual(drain(p), ['192.168.7.2', '192.168.7.3', '192.168.7.5', '192.168.7.6']);
  });

  it('prefers fresh addresses over released ones, then reuses least-recently-released first', () => {
    const p = small();
    const [a, b, c] = [p.allocate(), p.allocate(), p.allocate()];
    p.release(b);
    p.release(a);
    // .5 and .6 were never used: they come before b and a.
    assert.equal(formatIPv4(p.allocate()), '192.168.7.5');
    p.release(c);
    assert.equal(formatIPv4(p.allocate()), '192.168.7.6');
    assert.deepEqual(fmt(p.releasedInOrder()), ['192.168.7.3', '192.168.7.2', '192.168.7.4']);
    assert.deepEqual(drain(p), ['192.168.7.3', '192.168.7.2', '192.168.7.4']);
  });

  it('never hands out a leased address twice, and release of an unleased address is a no-op', () => {
    const p = small();
    const got = new Set<number>();
    for (let i = 0; i < 5; i++) got.add(p.allocate());
    assert.equal(got.size, 5);
    p.release(ip('192.168.7.1')); // the gateway was never leased
    p.release(ip('192.168.7.0'));
    assert.deepEqual(p.releasedInOrder(), []);
    assert.throws(() => p.allocate(), (e: unknown) => e instanceof ToastnetError && e.code === 'exhausted');
    p.release(ip('192.168.7.4'));
    p.release(ip('192.168.7.4')); // double release
    assert.deepEqual(fmt(p.releasedInOrder()), ['192.168.7.4']);
    assert.equal(formatIPv4(p.allocate()), '192.168.7.4');
    assert.throws(() => p.take(ip('192.168.7.4')), (e: unknown) => e instanceof ToastnetError && e.code === 'internal');
  });

  it('exhaustion throws "exhausted" naming the subnet and leaves the state unchanged', () => {
    const p = small();
    for (let i = 0; i < 5; i++) p.allocate();
    p.release(ip('192.168.7.3'));
    p.allocate();
    const before = { cursor: p.freshCursor, released: p.releasedInOrder(), free: p.free };
    assert.throws(() => p.allocate(), (e: unknown) => {
      assert.ok(e instanceof ToastnetError);
      assert.equal(e.code, 'exhausted');
      assert.equal(e.httpStatus, 507);
      assert.match(e.message, /192\.168\.7\.0\/29/);
      assert.match(e.message, /all 5 addresses/);
      return true;
    });
    assert.throws(() => p.peek(), (e: unknown) => e instanceof ToastnetError && e.code === 'exhausted');
    assert.deepEqual({ cursor: p.freshCursor, released: p.releasedInOrder(), free: p.free }, before);
    // Still usable once something is released.
    p.release(ip('192.168.7.5'));
    assert.equal(formatIPv4(p.allocate()), '192.168.7.5');
  });

  it('peek does not take', () => {
    const p = small();
    assert.equal(p.peek(), p.peek());
    assert.equal(p.free, 5);
    assert.equal(p.isLeased(p.peek()), false);
  });

  it('untake of a fresh address after a failed create restores the previous order', () => {
    const p = small();
    p.allocate(); // .2
    const expected = drain(small()).slice(1); // what a twin would hand out next
    const t = begin(p);
    assert.equal(formatIPv4(t.ip), '192.168.7.3');
    assert.equal(t.wasFresh, true);
    assert.equal(p.isLeased(t.ip), true);
    p.untake(t.ip, t.wasFresh);
    assert.equal(p.isLeased(t.ip), false);
    assert.equal(p.free, 4);
    assert.deepEqual(p.releasedInOrder(), [], 'a fresh address must not go to the released queue');
    assert.deepEqual(drain(p), expected);
  });

  it('untake of the very first fresh address (gateway skipped) restores the previous order', () => {
    const p = small();
    const t = begin(p);
    assert.equal(formatIPv4(t.ip), '192.168.7.2');
    p.untake(t.ip, t.wasFresh);
    assert.deepEqual(drain(p), drain(small()));
  });

  it('untake of a released address puts it back at the head of the reuse queue', () => {
    const p = small();
    for (let i = 0; i < 5; i++) p.allocate();
    p.release(ip('192.168.7.4'));
    p.release(ip('192.168.7.2'));
    p.release(ip('192.168.7.6'));
    const before = { cursor: p.freshCursor, released: fmt(p.releasedInOrder()), free: p.free };
    assert.deepEqual(before.released, ['192.168.7.4', '192.168.7.2', '192.168.7.6']);

    const t = begin(p);
    assert.equal(formatIPv4(t.ip), '192.168.7.4');
    assert.equal(t.wasFresh, false);
    assert.deepEqual(fmt(p.releasedInOrder()), ['192.168.7.2', '192.168.7.6']);
    p.untake(t.ip, t.wasFresh);
    assert.deepEqual({ cursor: p.freshCursor, released: fmt(p.releasedInOrder()), free: p.free }, before);
    assert.deepEqual(drain(p), ['192.168.7.4', '192.168.7.2', '192.168.7.6']);
  });

  it('untake of an address that is not leased changes nothing', () => {
    const p = small();
    p.allocate();
    p.release(ip('192.168.7.2'));
    p.untake(ip('192.168.7.2'), false);
    p.untake(ip('192.168.7.5'), true);
    assert.deepEqual(fmt(p.releasedInOrder()), ['192.168.7.2']);
    assert.equal(formatIPv4(p.freshCursor), '192.168.7.3');
  });

  it('is rebuilt from a persisted state: fresh cursor, released order, leases', () => {
    const p = small({
      nextFresh: ip('192.168.7.5'),
      released: [ip('192.168.7.3'), ip('192.168.7.2'), ip('192.168.7.4')],
      leased: [ip('192.168.7.4')], // released then re-leased: must not be handed out again
    });
    assert.equal(p.free, 4);
    assert.equal(p.isLeased(ip('192.168.7.4')), true);
    assert.deepEqual(fmt(p.releasedInOrder()), ['192.168.7.3', '192.168.7.2']);
    assert.deepEqual(drain(p), ['192.168.7.5', '192.168.7.6', '192.168.7.3', '192.168.7.2']);
  });

  it('a persisted lease beyond the fresh cursor is skipped', () => {
    const p = small({ nextFresh: ip('192.168.7.2'), released: [], leased: [ip('192.168.7.3')] });
    assert.deepEqual(drain(p), ['192.168.7.2', '192.168.7.4', '192.168.7.5', '192.168.7.6']);
  });

  it('state round-trips through freshCursor / releasedInOrder / leases', () => {
    const p = small();
    for (let i = 0; i < 4; i++) p.allocate();
    p.release(ip('192.168.7.3'));
    p.release(ip('192.168.7.2'));
    const leased = [2, 3, 4, 5, 6].map((o) => ip(`192.168.7.${o}`)).filter((a) => p.isLeased(a));
    const q = small({ nextFresh: p.freshCursor, released: p.releasedInOrder(), leased });
    assert.deepEqual(drain(q), drain(p));
  });

  it('contains() checks the subnet', () => {
    const p = small();
    assert.equal(p.contains('192.168.7.6'), true);
    assert.equal(p.contains('192.168.7.8'), false);
    assert.throws(() => p.contains('banana'), (e: unknown) => e instanceof ToastnetError && e.code === 'invalid_argument');
  });

  it('keeps the order across many reuse cycles (queue compaction)', () => {
    const p = new Ipam(parseCidr('10.0.0.0/22'), new Set([ip('10.0.0.1')]));
    const all: number[] = [];
    for (let i = 0; i < p.capacity; i++) all.push(p.allocate());
    // Release everything in a known order, then cycle several times through the queue.
    for (const a of all) p.release(a);
    for (let round = 0; round < 3; round++) {
      const got: number[] = [];
      for (let i = 0; i < all.length; i++) {
        const a = p.allocate();
        got.push(a);
        p.release(a);
      }
      assert.deepEqual(got, all, `round ${round}`);
    }
    assert.deepEqual(p.releasedInOrder(), all);
    // A failed create at any queue position (including the takes that compact the queue)
    // puts the address back at the head.
    for (let i = 0; i < 2500; i++) {
      const t = begin(p);
      assert.equal(t.wasFresh, false);
      p.untake(t.ip, t.wasFresh);
      assert.equal(p.peek(), t.ip, `step ${i}`);
      const a = p.allocate();
      assert.equal(a, t.ip);
      p.release(a);
    }
    assert.deepEqual(p.releasedInOrder(), [...all.slice(2500 % all.length), ...all.slice(0, 2500 % all.length)]);
  });
});
