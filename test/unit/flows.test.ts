// Unit tests for the flow log: the conntrack event codec (kernel/conntrack-events.ts) on
// messages of the kernel's shape, and FlowLog (service/flows.ts) on an in-memory database:
// open and closed records paired by conntrack id, attribution at the open even when the
// address changes hands before the close, names from the resolver and from name checks,
// the retention bound, per-sandbox filtering and long polling.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import Database from 'better-sqlite3';
import { CtEvent, encodeCtEvent, origSourceOf, parseCtDatagram, parseCtEvent } from '../../src/kernel/conntrack-events.js';
import { frame, parseMessages } from '../../src/kernel/rtnetlink-codec.js';
import { FlowLog, FlowOwner, FlowSources } from '../../src/service/flows.js';

const base: CtEvent = { kind: 'new', id: 0xdeadbeef, proto: 6, src: '10.166.0.2', dst: '203.0.113.10', sport: 40312, dport: 80, mark: 0 };

/** Through the wire: framed as a netlink message and parsed back, as the worker reads it. */
const wire = (e: CtEvent) => parseMessages(frame({ type: encodeCtEvent(e).type, flags: 0, body: encodeCtEvent(e).body }, 0))[0];

/**
 * Captured from Linux 6.18 (a throwaway namespace pair, nf_conntrack_acct and _timestamp on):
 * the new and destroy events of a UDP flow 10.9.0.2:37838 -> 10.9.0.1:9999 that sent two
 * 39-byte datagrams and got no reply, destroyed by a ctnetlink delete.
 */
const CAPTURED_NEW = 'a0000000000100060000000000000000020000003400018014000180080001000a090002080002000a0900011c00028005000100110000000600020093ce000006000300270f00003400028014000180080001000a090001080002000a0900021c000280050001001100000006000200270f00000600030093ce000008000c00b24ac20c0800030000000008080007000000001e0c001b0018eefa2bb7f05c65';
const CAPTURED_DESTROY = 'f4000000020100000000000095509adf020000003400018014000180080001000a090002080002000a0900011c00028005000100110000000600020093ce000006000300270f00003400028014000180080001000a090001080002000a0900021c000280050001001100000006000200270f00000600030093ce000008000c00b24ac20c0800030000000208080007000000001d1c0009800c00010000000000000000020c000200000000000000004e1c000a800c00010000000000000000000c00020000000000000000001c0014800c00010018eefa2bb7f05b2e0c00020018eefa2bc4f929300c001b0018eefa2bc4f92a52';

describe('conntrack events codec', () => {
  it('parses the kernel\'s own messages: a new event without counters, a destroy with counters and times', () => {
    const tuple = { id: 0xb24ac20c, proto: 17, src: '10.9.0.2', dst: '10.9.0.1', sport: 37838, dport: 9999, mark: 0 };
    const [n] = parseMessages(Buffer.from(CAPTURED_NEW, 'hex'));
    assert.deepEqual(parseCtEvent(n), { kind: 'new', ...tuple });
    const [d] = parseMessages(Buffer.from(CAPTURED_DESTROY, 'hex'));
    const ms = (hex: string) => Number(BigInt(`0x${hex}`) / 1_000_000n);
    const destroy: CtEvent = { kind: 'destroy', ...tuple, origPackets: 2, origBytes: 78, replyPackets: 0, replyBytes: 0, start: ms('18eefa2bb7f05b2e'), stop: ms('18eefa2bc4f92930') };
    assert.deepEqual(parseCtEvent(d), destroy);
    const viaWorker: CtEvent[] = [];
    parseCtDatagram(Buffer.from(CAPTURED_NEW + CAPTURED_DESTROY, 'hex'), () => true, viaWorker);
    assert.deepEqual(viaWorker, [{ kind: 'new', ...tuple }, destroy]);
    // The inverse writes what the kernel writes, as far as the parse can tell.
    assert.deepEqual(parseCtEvent(encodeCtEvent(destroy)), destroy);
  });

  it('a new event: tuple, id, mark; no counters without accounting', () => {
    const e = parseCtEvent(wire({ ...base, mark: 0x40 }))!;
    assert.deepEqual(e, { ...base, mark: 0x40 });
  });

  it('a destroy event: counters each way and the kernel timestamps in ms', () => {
    const d: CtEvent = { ...base, kind: 'destroy', origPackets: 6, origBytes: 412, replyPackets: 5, replyBytes: 9_876_543_210, start: 1_765_000_000_123, stop: 1_765_000_001_456 };
    assert.deepEqual(parseCtEvent(wire(d)), d);
  });

  it('the source address for the worker\'s filter, without a full decode', () => {
    assert.equal(origSourceOf(wire(base)), (10 << 24 | 166 << 16 | 2) >>> 0);
  });

  it('refuses what is not an IPv4 new/destroy event', () => {
    const m = wire(base);
    assert.equal(parseCtEvent({ ...m, type: (1 << 8) | 1 }), undefined);
    const v6 = Buffer.from(m.body);
    v6[0] = 10;
    assert.equal(parseCtEvent({ ...m, body: v6 }), undefined);
    assert.equal(origSourceOf({ ...m, body: v6 }), -1);
  });

  it('reads several events from one datagram', () => {
    const a = encodeCtEvent(base);
    const b = encodeCtEvent({ ...base, kind: 'destroy', id: 2 });
    const buf = Buffer.concat([frame({ type: a.type, flags: 0, body: a.body }, 1), frame({ type: b.type, flags: 0, body: b.body }, 2)]);
    assert.deepEqual(parseMessages(buf).map((m) => parseCtEvent(m)?.id), [0xdeadbeef, 2]);
  });
});

function sources(at: Record<string, FlowOwner>, checked: Record<string, string> = {}): FlowSources {
  return {
    sandboxAt: (ip) => at[ip],
    checkedName: (src, sport, dst, dport) => checked[`${src}:${sport}>${dst}:${dport}`],
  };
}

describe('FlowLog', () => {
  it('writes an open and a closed record per flow, paired by conntrack id, with counters and times', () => {
    const log = new FlowLog(new Database(':memory:'));
    const src = sources({ '10.166.0.2': { id: 1, name: 'web' } });
    log.record([{ ...base, id: 7, start: 1_000 }], src, 1_500);
    log.record([{ ...base, id: 7, kind: 'destroy', origPackets: 6, origBytes: 400, replyPackets: 5, replyBytes: 900, start: 1_000, stop: 3_000 }], src, 3_100);
    const [open, closed] = log.list();
    assert.equal(open.state, 'open');
    assert.equal(open.end, undefined);
    assert.equal(open.sandbox, 'web');
    assert.equal(closed.state, 'closed');
    assert.equal(closed.conntrackId, 7);
    assert.equal(closed.start, new Date(1_000).toISOString());
    assert.equal(closed.end, new Date(3_000).toISOString());
    assert.deepEqual(closed.sent, { packets: 6, bytes: 400 });
    assert.deepEqual(closed.received, { packets: 5, bytes: 900 });
    assert.equal(log.counts.recorded, 2);
  });

  it('a flow belongs to whoever had the address when it opened, even if it changed hands before the close', () => {
    const log = new FlowLog(new Database(':memory:'));
    const at: Record<string, FlowOwner> = { '10.166.0.2': { id: 1, name: 'first' } };
    log.record([{ ...base, id: 9 }], sources(at));
    at['10.166.0.2'] = { id: 2, name: 'second' };
    log.record([{ ...base, id: 9, kind: 'destroy' }], sources(at));
    assert.deepEqual(log.list().map((f) => f.sandbox), ['first', 'first']);
  });

  it('a flow of no sandbox is counted, not recorded', () => {
    const log = new FlowLog(new Database(':memory:'));
    log.record([base], sources({}));
    assert.equal(log.list().length, 0);
    assert.equal(log.counts.unattributed, 1);
  });

  it('names: the name check\'s, else the resolver\'s answer for that sandbox and address', () => {
    const log = new FlowLog(new Database(':memory:'));
    log.noteAnswer(1, 'example.test', ['203.0.113.10']);
    log.noteAnswer(2, 'other.test', ['203.0.113.10']);
    const src = sources({ '10.166.0.2': { id: 1, name: 'web' } }, { '10.166.0.2:5000>203.0.113.10:443': 'cdn.test' });
    log.record([{ ...base, id: 1 }, { ...base, id: 2, sport: 5000, dport: 443 }, { ...base, id: 3, dst: '198.51.100.1' }], src);
    assert.deepEqual(log.list().map((f) => f.name), ['example.test', 'cdn.test', undefined]);
  });

  it('keeps at most `retention` records, the newest', () => {
    const log = new FlowLog(new Database(':memory:'), 5);
    const src = sources({ '10.166.0.2': { id: 1, name: 'web' } });
    for (let i = 0; i < 4; i++) log.record(Array.from({ length: 3 }, (_, j) => ({ ...base, id: i * 3 + j })), src);
    assert.equal(log.size(), 5);
    assert.deepEqual(log.list().map((f) => f.conntrackId), [7, 8, 9, 10, 11]);
  });

  it('filters by sandbox and since, and wakes a waiting reader', async () => {
    const log = new FlowLog(new Database(':memory:'));
    const src = sources({ '10.166.0.2': { id: 1, name: 'a' }, '10.166.0.3': { id: 2, name: 'b' } });
    log.record([{ ...base, id: 1 }, { ...base, id: 2, src: '10.166.0.3' }], src);
    assert.deepEqual(log.list({ sandbox: 'b' }).map((f) => f.src), ['10.166.0.3']);
    const since = log.list().at(-1)!.id;
    const waited = log.wait(5_000);
    setTimeout(() => log.record([{ ...base, id: 3 }], src), 10);
    const t0 = Date.now();
    await waited;
    assert.ok(Date.now() - t0 < 2_000);
    assert.deepEqual(log.list({ since }).map((f) => f.conntrackId), [3]);
  });
});

describe('parseCtDatagram (the worker\'s allocation-free parse)', () => {
  it('gives what parseMessages + parseCtEvent give, for the sources it keeps', () => {
    const evs: CtEvent[] = [
      base,
      { ...base, kind: 'destroy', id: 2, proto: 17, src: '10.166.3.4', sport: 1, dport: 65535, origPackets: 1, origBytes: 32, replyPackets: 0, replyBytes: 0, start: 1_765_000_000_000, stop: 1_765_000_000_500, mark: 7 },
      { ...base, id: 3, src: '192.0.2.2' },
    ];
    const buf = Buffer.concat(evs.map((e, i) => frame({ type: encodeCtEvent(e).type, flags: 0, body: encodeCtEvent(e).body }, i)));
    const out: CtEvent[] = [];
    parseCtDatagram(buf, (src) => src >>> 16 === ((10 << 8) | 166), out);
    assert.deepEqual(out, evs.slice(0, 2));
    assert.deepEqual(out, parseMessages(buf).map((m) => parseCtEvent(m)).slice(0, 2));
  });
});
