import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import {
  AF_INET, IFA_ADDRESS, IFA_LOCAL, IFLA_IFNAME, IFLA_INFO_DATA, IFLA_INFO_KIND, IFLA_LINKINFO, IFLA_NET_NS_FD, IFLA_NUM_RX_QUEUES, IFLA_NUM_TX_QUEUES,
  NLMSGERR_ATTR_MSG, NLMSG_ERROR, NLM_F_ACK, NLM_F_ACK_TLVS, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST,
  RTA_DST, RTA_GATEWAY, RTA_OIF, RTM_DELLINK, RTM_NEWADDR, RTM_NEWLINK, RTM_NEWROUTE, RTNH_F_ONLINK, RT_SCOPE_LINK,
  RT_SCOPE_UNIVERSE, VETH_INFO_PEER, encodeAttrs, frame, ifinfomsg, parseAddr, parseAttrs, parseError, parseLink,
  parseMessages, parseRoute, request, str, u32, type Message,
} from '../../src/kernel/rtnetlink-codec.js';
import { addAddr, addRoute, delLink, newVeth, setUp } from '../../src/kernel/rtnl-requests.js';

const NLA_F_NESTED = 0x8000;

/** Raw attribute walk (type with flags, payload), for checking the exact encoding. */
function rawAttrs(buf: Buffer): { len: number; type: number; data: Buffer; padded: number }[] {
  const out: { len: number; type: number; data: Buffer; padded: number }[] = [];
  let off = 0;
  while (off + 4 <= buf.length) {
    const len = buf.readUInt16LE(off);
    const padded = (len + 3) & ~3;
    out.push({ len, type: buf.readUInt16LE(off + 2), data: buf.subarray(off + 4, off + len), padded });
    off += padded;
  }
  assert.equal(off, buf.length, 'attributes must exactly fill the buffer');
  return out;
}

describe('pure modules', () => {
  it('load no FFI', () => {
    const require = createRequire(import.meta.url);
    assert.deepEqual(Object.keys(require.cache).filter((k) => /koffi/.test(k)), []);
    // And statically: neither compiled module imports libc.js, rtnetlink.js or koffi.
    for (const f of ['rtnetlink-codec.js', 'rtnl-requests.js']) {
      const text = fs.readFileSync(new URL(`../../src/kernel/${f}`, import.meta.url), 'utf8');
      const imports = [...text.matchAll(/^\s*(?:import|export)\b[^;]*?from\s+['"]([^'"]+)['"]/gm)].map((m) => m[1]);
      for (const i of imports) assert.ok(i === './rtnetlink-codec.js', `${f} imports ${i}`);
      assert.doesNotMatch(text, /\bimport\s*\(/, `${f} has a dynamic import`);
    }
  });
});

describe('frame', () => {
  it('writes the 16-byte nlmsghdr: length, type, flags with NLM_F_REQUEST, seq, pid 0', () => {
    const req = delLink('tn727bs1');
    assert.equal(req.flags & NLM_F_REQUEST, NLM_F_REQUEST);
    const buf = frame({ ...req, flags: req.flags | NLM_F_ACK }, 0x89abcdef);
    assert.equal(buf.readUInt32LE(0), 16 + req.body.length);
    assert.equal(buf.length, 16 + req.body.length);
    assert.equal(buf.readUInt16LE(4), RTM_DELLINK);
    assert.equal(buf.readUInt16LE(6), NLM_F_REQUEST | NLM_F_ACK);
    assert.equal(buf.readUInt32LE(8), 0x89abcdef);
    assert.equal(buf.readUInt32LE(12), 0);
    assert.deepEqual(buf.subarray(16), req.body);
  });

  it('request() always sets NLM_F_REQUEST and keeps the other flags', () => {
    const r = request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, ifinfomsg());
    assert.equal(r.flags, NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL);
    assert.equal(r.type, RTM_NEWLINK);
    assert.equal(r.body.length, 16);
  });

  it('pads the frame to 4 bytes but reports the unpadded length', () => {
    const buf = frame({ type: 99, flags: NLM_F_REQUEST, body: Buffer.from([1, 2, 3, 4, 5]) }, 1);
    assert.equal(buf.readUInt32LE(0), 21);
    assert.equal(buf.length, 24);
    assert.deepEqual([...buf.subarray(21)], [0, 0, 0]);
  });
});

describe('attributes', () => {
  it('align every attribute to 4 bytes with zero padding', () => {
    const buf = encodeAttrs([
      { type: 3, data: str('ab') }, // 3 bytes of payload -> 7 -> 8
      { type: 4, data: u32(1500) }, // exactly 8
      { type: 5, data: Buffer.from([0xaa]) }, // 5 -> 8
      { type: 6, data: Buffer.alloc(0) }, // 4
    ]);
    assert.equal(buf.length, 8 + 8 + 8 + 4);
    const a = rawAttrs(buf);
    assert.deepEqual(a.map((x) => [x.type, x.len]), [[3, 7], [4, 8], [5, 5], [6, 4]]);
    assert.equal(buf[7], 0);
    assert.deepEqual([...buf.subarray(21, 24)], [0, 0, 0]);
  });

  it('flag nested attributes with NLA_F_NESTED and size them by their content', () => {
    const buf = encodeAttrs([{ type: 18, nested: [{ type: 1, data: str('veth') }, { type: 2, nested: [] }] }]);
    const [outer] = rawAttrs(buf);
    assert.equal(outer.type, 18 | NLA_F_NESTED);
    assert.equal(outer.len, 4 + 12 + 4);
    const inner = rawAttrs(outer.data);
    assert.deepEqual(inner.map((x) => x.type), [1, 2 | NLA_F_NESTED]);
  });

  it('parseAttrs inverts encodeAttrs (nested flag stripped)', () => {
    const buf = encodeAttrs([
      { type: 3, data: str('eth0') },
      { type: 4, data: u32(9000) },
      { type: 18, nested: [{ type: 1, data: str('macvlan') }] },
      { type: 7, data: Buffer.from([1, 2, 3]) },
    ]);
    const m = parseAttrs(buf);
    assert.deepEqual([...m.keys()], [3, 4, 18, 7]);
    assert.equal(m.get(3)!.toString(), 'eth0\0');
    assert.equal(m.get(4)!.readUInt32LE(0), 9000);
    assert.deepEqual(m.get(7), Buffer.from([1, 2, 3]));
    assert.equal(parseAttrs(m.get(18)!).get(1)!.toString(), 'macvlan\0');
  });

  it('parseAttrs stops at a truncated attribute instead of reading past the buffer', () => {
    const buf = encodeAttrs([{ type: 3, data: str('eth0') }, { type: 4, data: u32(1) }]);
    const m = parseAttrs(buf.subarray(0, buf.length - 2));
    assert.deepEqual([...m.keys()], [3]);
  });
});

describe('parseMessages', () => {
  it('splits a batch of frames back into messages', () => {
    const a = addAddr(7, '10.166.0.2', 16);
    const b = { type: 77, flags: NLM_F_REQUEST, body: Buffer.from([9, 8, 7]) }; // odd length: padded
    const c = setUp(7, { noIpv6: true });
    const msgs = parseMessages(Buffer.concat([frame(a, 10), frame(b, 11), frame(c, 12)]));
    assert.equal(msgs.length, 3);
    assert.deepEqual(msgs.map((m) => [m.type, m.flags, m.seq]), [[a.type, a.flags, 10], [77, NLM_F_REQUEST, 11], [c.type, c.flags, 12]]);
    assert.deepEqual(msgs[0].body, a.body);
    assert.deepEqual(msgs[1].body, b.body);
    assert.deepEqual(msgs[2].body, c.body);
  });

  it('ignores a truncated trailing message', () => {
    const f = frame(addAddr(7, '10.166.0.2', 16), 1);
    assert.equal(parseMessages(Buffer.concat([f, f.subarray(0, 20)])).length, 1);
  });
});

describe('request builders', () => {
  it('newVeth: names, kind "veth", and a peer with its ifindex, name and namespace fd', () => {
    const req = newVeth({ name: 'tn727bs1', index: 0 }, { name: 'eth0', index: 2, nsFd: 42, mac: '02:74:0a:a6:00:02', mtu: 1500 });
    assert.equal(req.type, RTM_NEWLINK);
    assert.equal(req.flags, NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL);
    assert.equal(req.body.readInt32LE(4), 0, 'host end: kernel picks the ifindex');
    const top = rawAttrs(req.body.subarray(16));
    assert.deepEqual(top.map((a) => a.type), [IFLA_IFNAME, IFLA_NUM_TX_QUEUES, IFLA_NUM_RX_QUEUES, IFLA_LINKINFO | NLA_F_NESTED]);
    assert.deepEqual([top[1].data.readUInt32LE(0), top[2].data.readUInt32LE(0)], [1, 1], 'one tx and one rx queue, so the kernel need not shrink them');
    assert.equal(top[0].data.toString(), 'tn727bs1\0');
    assert.ok(!top.some((a) => (a.type & ~NLA_F_NESTED) === IFLA_NET_NS_FD), 'the host end stays in the socket\'s namespace');

    const info = parseAttrs(top[3].data);
    assert.equal(info.get(IFLA_INFO_KIND)!.toString(), 'veth\0');
    const data = parseAttrs(info.get(IFLA_INFO_DATA)!);
    const peer = data.get(VETH_INFO_PEER)!;
    assert.ok(peer, 'VETH_INFO_PEER present');
    // The peer is an ifinfomsg followed by the peer's own attributes.
    assert.equal(peer.readUInt8(0), 0, 'family AF_UNSPEC');
    assert.equal(peer.readInt32LE(4), 2, 'peer ifindex');
    const pa = parseAttrs(peer.subarray(16));
    assert.equal(pa.get(IFLA_IFNAME)!.toString(), 'eth0\0');
    assert.equal(pa.get(IFLA_NET_NS_FD)!.readUInt32LE(0), 42);
    assert.deepEqual([...pa.get(1)!], [0x02, 0x74, 0x0a, 0xa6, 0x00, 0x02], 'IFLA_ADDRESS');
    assert.equal(pa.get(4)!.readUInt32LE(0), 1500, 'IFLA_MTU');
    assert.deepEqual([pa.get(IFLA_NUM_TX_QUEUES)!.readUInt32LE(0), pa.get(IFLA_NUM_RX_QUEUES)!.readUInt32LE(0)], [1, 1], 'the peer too');

    const link = parseLink({ type: req.type, flags: req.flags, seq: 0, body: req.body });
    assert.equal(link.name, 'tn727bs1');
    assert.equal(link.kind, 'veth');
  });

  it('addRoute: a default route via an on-link gateway', () => {
    const req = addRoute({ dst: '0.0.0.0', dstLen: 0, oif: 5, gateway: '10.166.0.1', onlink: true });
    assert.equal(req.type, RTM_NEWROUTE);
    assert.equal(req.flags, NLM_F_REQUEST | NLM_F_CREATE | NLM_F_REPLACE);
    assert.equal(req.body.readUInt8(0), AF_INET);
    assert.equal(req.body.readUInt8(1), 0, 'dst_len');
    assert.equal(req.body.readUInt8(6), RT_SCOPE_UNIVERSE);
    assert.equal(req.body.readUInt32LE(8) & RTNH_F_ONLINK, RTNH_F_ONLINK);
    const a = parseAttrs(req.body.subarray(12));
    assert.equal(a.has(RTA_DST), false, 'no RTA_DST for a default route');
    assert.equal(a.get(RTA_OIF)!.readUInt32LE(0), 5);
    assert.deepEqual([...a.get(RTA_GATEWAY)!], [10, 166, 0, 1]);
    const r = parseRoute({ type: req.type, flags: req.flags, seq: 0, body: req.body });
    assert.deepEqual({ dst: r.dst, dstLen: r.dstLen, gateway: r.gateway, oif: r.oif, table: r.table }, { dst: '0.0.0.0', dstLen: 0, gateway: '10.166.0.1', oif: 5, table: 254 });
  });

  it('addRoute: a /32 link route without a gateway is not onlink and carries RTA_DST', () => {
    const req = addRoute({ dst: '10.166.0.2', dstLen: 32, oif: 9, prefsrc: '10.166.0.1' });
    assert.equal(req.body.readUInt8(1), 32);
    assert.equal(req.body.readUInt8(6), RT_SCOPE_LINK);
    assert.equal(req.body.readUInt32LE(8) & RTNH_F_ONLINK, 0);
    const a = parseAttrs(req.body.subarray(12));
    assert.deepEqual([...a.get(RTA_DST)!], [10, 166, 0, 2]);
    assert.equal(a.has(RTA_GATEWAY), false);
    const r = parseRoute({ type: req.type, flags: req.flags, seq: 0, body: req.body });
    assert.deepEqual({ dst: r.dst, oif: r.oif, prefsrc: r.prefsrc, gateway: r.gateway }, { dst: '10.166.0.2', oif: 9, prefsrc: '10.166.0.1', gateway: undefined });
  });

  it('addAddr: local and address attributes, exclusive unless replacing', () => {
    const req = addAddr(3, '10.166.0.2', 16);
    assert.equal(req.type, RTM_NEWADDR);
    assert.equal(req.flags, NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL);
    assert.equal(addAddr(3, '10.166.0.2', 16, true).flags, NLM_F_REQUEST | NLM_F_CREATE | NLM_F_REPLACE);
    const a = parseAttrs(req.body.subarray(8));
    assert.deepEqual([...a.get(IFA_LOCAL)!], [10, 166, 0, 2]);
    assert.deepEqual([...a.get(IFA_ADDRESS)!], [10, 166, 0, 2]);
    assert.deepEqual(parseAddr({ type: req.type, flags: req.flags, seq: 0, body: req.body }), { family: AF_INET, prefixLength: 16, index: 3, address: '10.166.0.2' });
  });

  it('setUp: IFF_UP in flags and change mask', () => {
    const req = setUp(4);
    assert.equal(req.body.readInt32LE(4), 4);
    assert.equal(req.body.readUInt32LE(8), 1);
    assert.equal(req.body.readUInt32LE(12), 1);
    assert.equal(req.body.length, 16, 'no attributes');
  });
});

describe('parseError', () => {
  /** An NLMSG_ERROR message as the kernel builds it. */
  function errorMsg(errno: number, orig: Buffer, echoed: Buffer, tlvs: Buffer, flags: number): Message {
    const e = Buffer.alloc(4);
    e.writeInt32LE(-errno);
    return { type: NLMSG_ERROR, flags, seq: orig.readUInt32LE(8), body: Buffer.concat([e, echoed, tlvs]) };
  }
  const orig = frame({ ...addAddr(3, '10.166.0.2', 16), flags: NLM_F_REQUEST | NLM_F_ACK }, 4242);
  const NLM_F_CAPPED = 0x100;

  it('decodes a plain ack', () => {
    const r = parseError(errorMsg(0, orig, orig.subarray(0, 16), Buffer.alloc(0), NLM_F_CAPPED));
    assert.ok(Object.is(r.errno, 0), `errno ${r.errno}`);
    assert.equal(r.ackedSeq, 4242);
    assert.equal(r.text, undefined);
  });

  it('decodes an error with the request echoed and no extended ack', () => {
    const r = parseError(errorMsg(17, orig, orig, Buffer.alloc(0), 0));
    assert.equal(r.errno, 17);
    assert.equal(r.ackedSeq, 4242);
    assert.equal(r.text, undefined);
  });

  it('decodes the extended-ack message after an echoed request', () => {
    const tlvs = encodeAttrs([{ type: NLMSGERR_ATTR_MSG, data: str('Invalid prefix for given prefix length') }, { type: 2, data: u32(36) }]);
    const r = parseError(errorMsg(22, orig, orig, tlvs, NLM_F_ACK_TLVS));
    assert.deepEqual(r, { errno: 22, ackedSeq: 4242, text: 'Invalid prefix for given prefix length' });
  });

  it('decodes the extended-ack message of an ack (TLVs after the 16-byte header)', () => {
    const tlvs = encodeAttrs([{ type: NLMSGERR_ATTR_MSG, data: str('warning: something') }]);
    const r = parseError(errorMsg(0, orig, orig.subarray(0, 16), tlvs, NLM_F_CAPPED | NLM_F_ACK_TLVS));
    assert.ok(r.errno === 0, `errno ${r.errno}`);
    assert.equal(r.ackedSeq, 4242);
    assert.equal(r.text, 'warning: something');
  });

  it('decodes the extended-ack message of an error with only the header echoed (NETLINK_CAP_ACK)', () => {
    // The echoed header still carries the full request length: the text starts right after it.
    const tlvs = encodeAttrs([{ type: NLMSGERR_ATTR_MSG, data: str('Invalid prefix for given prefix length') }]);
    const r = parseError(errorMsg(22, orig, orig.subarray(0, 16), tlvs, NLM_F_CAPPED | NLM_F_ACK_TLVS));
    assert.deepEqual(r, { errno: 22, ackedSeq: 4242, text: 'Invalid prefix for given prefix length' });
  });

  it('ignores TLV-looking bytes when NLM_F_ACK_TLVS is not set', () => {
    const tlvs = encodeAttrs([{ type: NLMSGERR_ATTR_MSG, data: str('should not be read') }]);
    assert.equal(parseError(errorMsg(22, orig, orig, tlvs, 0)).text, undefined);
  });
});
