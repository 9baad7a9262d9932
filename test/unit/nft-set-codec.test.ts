// Unit tests for src/kernel/nft-set-codec.ts: the libnftables-JSON element commands encoded
// as an nfnetlink batch, decoded here attribute by attribute. Expected key bytes are what
// `nft --debug=netlink` prints for the same elements (the kernel's own tool): concatenated
// fields padded to 4 bytes, ifname to 16, a lone ipv4_addr unpadded. Attribute and message
// numbers: include/uapi/linux/netfilter/nf_tables.h and nfnetlink.h.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { encodeElementBatch, schemaKey, type SetSchema } from '../../src/kernel/nft-set-codec.js';
import type { Request } from '../../src/kernel/rtnetlink-codec.js';

const NLA_F_NESTED = 0x8000;
const [LIST_TABLE, LIST_SET, LIST_ELEMENTS, LIST_ELEM] = [1, 2, 3, 1];
const [ELEM_KEY, ELEM_DATA, ELEM_TIMEOUT, ELEM_OBJREF, ELEM_KEY_END] = [1, 2, 4, 9, 10];
const [DATA_VALUE, DATA_VERDICT, VERDICT_CODE, VERDICT_CHAIN] = [1, 2, 1, 2];
const [NLM_F_REQUEST, NLM_F_EXCL, NLM_F_CREATE] = [0x1, 0x200, 0x400];
const NEWSETELEM = (10 << 8) | 12;
const DELSETELEM = (10 << 8) | 14;

const T = 'toastnet';
const schemas = new Map<string, SetSchema>([
  [schemaKey('inet', T, 'macs'), { key: ['ifname', 'ether_addr', 'ipv4_addr'] }],
  [schemaKey('inet', T, 'ips'), { key: ['ipv4_addr'] }],
  [schemaKey('arp', T, 'arp_ips'), { key: ['ipv4_addr'] }],
  [schemaKey('inet', T, 'policy'), { key: ['ipv4_addr', 'ipv4_addr', 'inet_proto', 'inet_service'], data: 'verdict', interval: true }],
  [schemaKey('inet', T, 'quotas'), { key: ['ipv4_addr'], data: 'objref' }],
  [schemaKey('inet', T, 'nets'), { key: ['ipv4_addr'], interval: true }],
  [schemaKey('inet', T, 'to_addr'), { key: ['ipv4_addr', 'inet_proto', 'inet_service'], data: { value: 'ipv4_addr' }, interval: true }],
  [schemaKey('inet', T, 'to_port'), { key: ['ipv4_addr', 'inet_proto', 'inet_service'], data: { value: 'inet_service' }, interval: true }],
  // A schema under a family name nft does not have (and one inherited by every object):
  // the family check, not the set lookup, must refuse these.
  [schemaKey('toString', T, 'ips'), { key: ['ipv4_addr'] }],
  [schemaKey('ipx', T, 'ips'), { key: ['ipv4_addr'] }],
]);

type Cmd = Record<string, unknown>;
const el = (op: 'add' | 'delete', name: string, elem: unknown[], family = 'inet'): Cmd => ({ [op]: { element: { family, table: T, name, elem } } });
const enc = (...cmds: Cmd[]) => encodeElementBatch(cmds, schemas);
const hex = (b: Buffer | undefined): string | undefined => b?.toString('hex');
const words = (s: string): string => s.replace(/\s+/g, '');

interface Attr { type: number; nested: boolean; data: Buffer }

/** Walks attributes (lists repeat a type, so no Map); the nested flag is split off the type. */
function attrs(buf: Buffer): Attr[] {
  const out: Attr[] = [];
  let off = 0;
  while (off < buf.length) {
    const len = buf.readUInt16LE(off);
    const type = buf.readUInt16LE(off + 2);
    assert.ok(len >= 4 && off + len <= buf.length, `attribute at ${off} overruns`);
    out.push({ type: type & ~NLA_F_NESTED, nested: (type & NLA_F_NESTED) !== 0, data: buf.subarray(off + 4, off + len) });
    off += (len + 3) & ~3;
  }
  assert.equal(off, buf.length, 'attributes must exactly fill the buffer');
  return out;
}

/** The payload of the only attribute of `type` (asserting nesting), or undefined if absent. */
function get(list: Attr[], type: number, nested?: boolean): Buffer | undefined {
  const found = list.filter((a) => a.type === type);
  assert.ok(found.length <= 1, `attribute ${type} repeated`);
  if (found[0] && nested !== undefined) assert.equal(found[0].nested, nested, `nested flag of attribute ${type}`);
  return found[0]?.data;
}

/** A NEWSETELEM/DELSETELEM message: its nfgenmsg, list attributes and each element's attributes. */
function decode(m: Request) {
  const top = attrs(m.body.subarray(4));
  assert.deepEqual(top.map((a) => a.type), [LIST_TABLE, LIST_SET, LIST_ELEMENTS]);
  const elems = attrs(get(top, LIST_ELEMENTS, true)!);
  for (const e of elems) assert.deepEqual([e.type, e.nested], [LIST_ELEM, true]);
  return { nfgen: hex(m.body.subarray(0, 4)), table: get(top, LIST_TABLE, false)!, set: get(top, LIST_SET, false)!, elems: elems.map((e) => attrs(e.data)) };
}

/** The element attributes of a one-command, one-element batch. */
function single(cmd: Cmd): Attr[] {
  const b = enc(cmd);
  assert.ok(b, 'encodable');
  assert.equal(b.messages.length, 1);
  const { elems } = decode(b.messages[0]);
  assert.equal(elems.length, 1);
  return elems[0];
}

const value = (e: Attr[], type: number): string | undefined => {
  const outer = get(e, type, true);
  return outer && hex(get(attrs(outer), DATA_VALUE, false));
};
const verdict = (e: Attr[]): { code: number; chain?: string } => {
  const v = attrs(get(attrs(get(e, ELEM_DATA, true)!), DATA_VERDICT, true)!);
  const code = get(v, VERDICT_CODE)!;
  assert.equal(code.length, 4);
  return { code: code.readInt32BE(0), chain: get(v, VERDICT_CHAIN)?.toString('latin1') };
};

const policyElem = (data: unknown) => [{ concat: ['10.0.0.5', { range: ['10.0.0.0', '10.255.255.255'] }, 6, { range: [80, 90] }] }, data];

describe('nft-set-codec: key layouts (as nft --debug=netlink)', () => {
  it('ifname . ether_addr . ipv4_addr: ifname to 16 bytes, MAC to 8, 28 bytes in all', () => {
    const e = single(el('add', 'macs', [{ concat: ['tn0001s', '02:00:0a:00:00:05', '10.0.0.5'] }]));
    assert.equal(value(e, ELEM_KEY), words(`746e3030303173${'00'.repeat(9)}  02000a0000050000  0a000005`));
  });

  it('a 15-byte ifname fills the field with its NUL last', () => {
    const e = single(el('add', 'macs', [{ concat: ['abcdefghijklmno', '02:00:0a:00:00:05', '10.0.0.5'] }]));
    assert.equal(value(e, ELEM_KEY)!.slice(0, 32), `${Buffer.from('abcdefghijklmno').toString('hex')}00`);
  });

  it('a lone ipv4_addr is 4 bytes, unpadded', () => {
    assert.equal(value(single(el('add', 'ips', ['10.0.0.5'])), ELEM_KEY), '0a000005');
  });

  it('interval concatenation: each field padded to 4 bytes, ranges split into key and key_end', () => {
    const e = single(el('add', 'policy', [policyElem({ jump: { target: 'deny_policy' } })]));
    assert.equal(value(e, ELEM_KEY), words('0a000005 0a000000 06000000 00500000'));
    assert.equal(value(e, ELEM_KEY_END), words('0a000005 0affffff 06000000 005a0000'));
  });

  it('full ranges of proto and port', () => {
    const e = single(el('add', 'policy', [[{ concat: ['10.0.0.5', '1.1.1.1', { range: [0, 255] }, { range: [0, 65535] }] }, { accept: null }]]));
    assert.equal(value(e, ELEM_KEY), words('0a000005 01010101 00000000 00000000'));
    assert.equal(value(e, ELEM_KEY_END), words('0a000005 01010101 ff000000 ffff0000'));
  });

  it('single values in an interval set have key_end equal to key', () => {
    const e = single(el('add', 'policy', [[{ concat: ['10.0.0.5', '10.0.0.7', 17, 53] }, { accept: null }]]));
    assert.equal(value(e, ELEM_KEY), words('0a000005 0a000007 11000000 00350000'));
    assert.equal(value(e, ELEM_KEY_END), value(e, ELEM_KEY));
  });

  it('non-interval sets carry no key_end', () => {
    assert.equal(get(single(el('add', 'ips', ['10.0.0.5'])), ELEM_KEY_END), undefined);
    assert.equal(get(single(el('add', 'macs', [{ concat: ['tn0', '02:00:0a:00:00:05', '10.0.0.5'] }])), ELEM_KEY_END), undefined);
  });
});

describe('nft-set-codec: map data and timeouts', () => {
  it('jump: verdict code -3 big-endian with the chain name NUL-terminated', () => {
    const e = single(el('add', 'policy', [policyElem({ jump: { target: 'deny_policy' } })]));
    assert.deepEqual(verdict(e), { code: -3, chain: 'deny_policy\0' });
    assert.equal(hex(get(attrs(get(attrs(get(e, ELEM_DATA)!), DATA_VERDICT)!), VERDICT_CODE)), 'fffffffd');
  });

  it('accept: code 1 and no chain; drop: code 0', () => {
    assert.deepEqual(verdict(single(el('add', 'policy', [policyElem({ accept: null })]))), { code: 1, chain: undefined });
    assert.deepEqual(verdict(single(el('add', 'policy', [policyElem({ drop: null })]))), { code: 0, chain: undefined });
  });

  it('objref maps: OBJREF string, no DATA', () => {
    const e = single(el('add', 'quotas', [['10.0.0.5', 'qe_0a000005']]));
    assert.equal(get(e, ELEM_OBJREF, false)?.toString('latin1'), 'qe_0a000005\0');
    assert.equal(get(e, ELEM_DATA), undefined);
    assert.equal(value(e, ELEM_KEY), '0a000005');
  });

  it('value maps (published ports): DATA holds the value unpadded, an address in 4 bytes, a port in 2 big-endian', () => {
    const key = { concat: [{ range: ['0.0.0.0', '255.255.255.255'] }, 6, 8080] };
    const a = single(el('add', 'to_addr', [[key, '10.166.0.2']]));
    assert.equal(value(a, ELEM_DATA), '0aa60002');
    assert.equal(value(a, ELEM_KEY), words('00000000 06000000 1f900000'));
    assert.equal(value(a, ELEM_KEY_END), words('ffffffff 06000000 1f900000'));
    assert.equal(value(single(el('add', 'to_port', [[key, 80]])), ELEM_DATA), '0050');
    // Delete: the key only.
    assert.equal(get(single(el('delete', 'to_port', [[key, 80]])), ELEM_DATA), undefined);
    // A value that does not fit the type: libnftables reports it.
    assert.equal(enc(el('add', 'to_port', [[key, 70000]])), undefined);
    assert.equal(enc(el('add', 'to_addr', [[key, 'not-an-address']])), undefined);
  });

    it('timeout in seconds is sent as be64 milliseconds', () => {
    const e = single(el('add', 'ips', [{ elem: { val: '10.0.0.5', timeout: 300 } }]));
    assert.equal(hex(get(e, ELEM_TIMEOUT, false)), '00000000000493e0');
    assert.equal(value(e, ELEM_KEY), '0a000005');
    const m = single(el('add', 'quotas', [[{ elem: { val: '10.0.0.6', timeout: 60 } }, 'qe_0a000006']]));
    assert.equal(get(m, ELEM_TIMEOUT)?.readBigUInt64BE(0), 60000n);
    assert.equal(get(m, ELEM_OBJREF)?.toString('latin1'), 'qe_0a000006\0');
  });

  it('delete carries only the key (and key_end): no timeout, verdict or objref', () => {
    const ips = single(el('delete', 'ips', [{ elem: { val: '10.0.0.5', timeout: 300 } }]));
    assert.deepEqual(ips.map((a) => a.type), [ELEM_KEY]);
    const policy = single(el('delete', 'policy', [policyElem({ jump: { target: 'deny_policy' } })]));
    assert.deepEqual(policy.map((a) => a.type), [ELEM_KEY, ELEM_KEY_END]);
    assert.deepEqual(single(el('delete', 'quotas', [['10.0.0.5', 'qe_0a000005']])).map((a) => a.type), [ELEM_KEY]);
  });
});

describe('nft-set-codec: messages and batch', () => {
  it('add: NEWSETELEM with REQUEST|CREATE, no EXCL; inet family; table and set names NUL-terminated', () => {
    const m = enc(el('add', 'ips', ['10.0.0.5']))!.messages[0];
    assert.equal(m.type, NEWSETELEM);
    assert.equal(m.flags, NLM_F_REQUEST | NLM_F_CREATE);
    assert.equal(m.flags & NLM_F_EXCL, 0);
    const d = decode(m);
    assert.equal(d.nfgen, '01000000');
    assert.equal(d.table.toString('latin1'), 'toastnet\0');
    assert.equal(d.set.toString('latin1'), 'ips\0');
  });

  it('delete: DELSETELEM with REQUEST only; arp family is 3', () => {
    const m = enc(el('delete', 'arp_ips', ['10.0.0.5'], 'arp'))!.messages[0];
    assert.equal(m.type, DELSETELEM);
    assert.equal(m.flags, NLM_F_REQUEST);
    const d = decode(m);
    assert.equal(d.nfgen, '03000000');
    assert.equal(d.set.toString('latin1'), 'arp_ips\0');
  });

  it('batch begin and end markers: types 0x10/0x11, family 0, res_id 10 big-endian', () => {
    const b = enc(el('add', 'ips', ['10.0.0.5']))!;
    assert.deepEqual([b.begin.type, b.end.type], [0x10, 0x11]);
    for (const x of [b.begin, b.end]) {
      assert.equal(x.flags, NLM_F_REQUEST);
      assert.equal(hex(x.body), '0000000a');
    }
  });

  it('one message per command, in order, holding all its elements', () => {
    const b = enc(el('add', 'ips', ['10.0.0.5', '10.0.0.6', '10.0.0.7']), el('delete', 'quotas', [['10.0.0.9', 'qe_0a000009']]))!;
    assert.deepEqual(b.messages.map((m) => m.type), [NEWSETELEM, DELSETELEM]);
    assert.deepEqual(decode(b.messages[0]).elems.map((e) => value(e, ELEM_KEY)), ['0a000005', '0a000006', '0a000007']);
    assert.deepEqual(decode(b.messages[1]).elems.map((e) => value(e, ELEM_KEY)), ['0a000009']);
  });

  it('empty elem lists produce no message', () => {
    assert.deepEqual(enc(el('add', 'ips', []), el('delete', 'policy', []))?.messages, []);
    assert.equal(enc(el('add', 'ips', []), el('add', 'macs', [{ concat: ['tn0', '02:00:0a:00:00:05', '10.0.0.5'] }]))?.messages.length, 1);
  });
});

describe('nft-set-codec: returns undefined for what it does not encode', () => {
  const jump = { jump: { target: 'deny_policy' } };
  const cases: [string, Cmd][] = [
    ['an unknown set', el('add', 'nosuch', ['10.0.0.5'])],
    ['a known set name in another family', el('add', 'ips', ['10.0.0.5'], 'arp')],
    ['flush set', { flush: { set: { family: 'inet', table: T, name: 'ips' } } }],
    ['add table', { add: { table: { family: 'inet', name: T } } }],
    ['a prefix value', el('add', 'ips', [{ prefix: { addr: '10.0.0.0', len: 8 } }])],
    ['a range in a non-interval set', el('add', 'ips', [{ range: ['10.0.0.1', '10.0.0.9'] }])],
    ['a non-concatenated interval set', el('add', 'nets', ['10.0.0.5'])],
    ['IPv4 10.0.0.256', el('add', 'ips', ['10.0.0.256'])],
    ['IPv4 1.2.3', el('add', 'ips', ['1.2.3'])],
    ['IPv4 1.2.3.4.5', el('add', 'ips', ['1.2.3.4.5'])],
    ['an IPv4 address as a number', el('add', 'ips', [167772165])],
    ['a fractional timeout', el('add', 'ips', [{ elem: { val: '10.0.0.5', timeout: 1.5 } }])],
    ['a zero timeout', el('add', 'ips', [{ elem: { val: '10.0.0.5', timeout: 0 } }])],
    ['a timeout as a string', el('add', 'ips', [{ elem: { val: '10.0.0.5', timeout: '300' } }])],
    ['an elem with other fields (counter)', el('add', 'ips', [{ elem: { val: '10.0.0.5', counter: null } }])],
    ['a 16-byte ifname', el('add', 'macs', [{ concat: ['abcdefghijklmnop', '02:00:0a:00:00:05', '10.0.0.5'] }])],
    ['an ifname wildcard', el('add', 'macs', [{ concat: ['tn*', '02:00:0a:00:00:05', '10.0.0.5'] }])],
    ['a short MAC', el('add', 'macs', [{ concat: ['tn0', '02:00:0a:00:05', '10.0.0.5'] }])],
    ['too few concatenated fields', el('add', 'macs', [{ concat: ['tn0', '02:00:0a:00:00:05'] }])],
    ['a plain value for a concatenated set', el('add', 'macs', ['10.0.0.5'])],
    ['a port out of range', el('add', 'policy', [[{ concat: ['10.0.0.5', '10.0.0.6', 6, 65536] }, { accept: null }]])],
    ['a map element that is not a pair', el('add', 'quotas', ['10.0.0.5'])],
    ['a map element with three items', el('add', 'policy', [[...policyElem(jump), 'x']])],
    ['an objref that is not a string', el('add', 'quotas', [['10.0.0.5', 42]])],
    ['an unknown verdict', el('add', 'policy', [policyElem({ queue: null })])],
    ['jump without a target', el('add', 'policy', [policyElem({ jump: {} })])],
    ['a verdict as a bare string', el('add', 'policy', [policyElem('accept')])],
    ['verdict data missing', el('add', 'policy', [policyElem(undefined)])],
    ['verdict data null', el('add', 'policy', [policyElem(null)])],
    ['verdict data empty', el('add', 'policy', [policyElem({})])],
    ['a verdict named like an Object method', el('add', 'policy', [policyElem({ toString: null })])],
    ['a command whose body is null', { add: null } as unknown as Cmd],
    ['a timeout too large for the kernel', el('add', 'ips', [{ elem: { val: '10.0.0.5', timeout: 1e20 } }])],
    ['IPv4 with a leading zero', el('add', 'ips', ['010.0.0.1'])],
    ['IPv4 in exponent notation', el('add', 'ips', ['1e2.0.0.1'])],
    ['IPv4 in hex', el('add', 'ips', ['0x1.0.0.1'])],
    ['IPv4 with a space', el('add', 'ips', ['1 .2.3.4'])],
    ['an inverted port range', el('add', 'policy', [[{ concat: ['10.0.0.5', '10.0.0.6', 6, { range: [90, 80] }] }, { accept: null }]])],
    ['an inverted address range', el('add', 'policy', [[{ concat: ['10.0.0.5', { range: ['10.0.0.9', '10.0.0.1'] }, 6, 80] }, { accept: null }]])],
    ['a family nft does not know', el('add', 'ips', ['10.0.0.5'], 'ipx')],
    ['a family named like an Object method', el('add', 'ips', ['10.0.0.5'], 'toString')],
    // More than a netlink attribute's 16-bit length holds: libnftables splits it.
    ['a command too large for one netlink attribute', el('add', 'ips', Array.from({ length: 5000 }, (_, i) => `10.${i >> 16 & 255}.${i >> 8 & 255}.${i & 255}`))],
  ];
  for (const [what, bad] of cases) {
    it(what, () => {
      const good = el('add', 'ips', ['10.0.0.1']);
      assert.ok(enc(good), 'control encodes');
      assert.equal(enc(good, bad), undefined);
    });
  }
});
