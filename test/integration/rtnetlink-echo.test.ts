// NLM_F_ECHO on link creation: the kernel hands back the new link's message, so a sandbox's
// create learns the host end's ifindex without a lookup (sandbox-net.ts).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createNetns, deleteNetns } from '../../src/kernel/netns.js';
import { RtnetlinkSocket } from '../../src/kernel/rtnetlink.js';
import { parseLink } from '../../src/kernel/rtnetlink-codec.js';
import { getLink, newVeth } from '../../src/kernel/rtnl-requests.js';

describe('rtnetlink echo', () => {
  const ns = `zecho${process.pid.toString(36)}${Date.now().toString(36)}`;
  let sock: RtnetlinkSocket | undefined;
  before(() => {
    // A socket opened in a namespace of its own stays bound to it.
    createNetns(ns, () => {
      sock = new RtnetlinkSocket();
    });
  });
  after(() => {
    sock?.close();
    deleteNetns(ns);
  });

  it('a veth created with NLM_F_ECHO comes back with its name and ifindex', () => {
    const echoed = sock!.execEcho(newVeth({ name: 'a0' }, { name: 'b0' }), 'create veth').map(parseLink);
    const a0 = echoed.find((l) => l.name === 'a0');
    assert.ok(a0, `echoed: ${JSON.stringify(echoed.map((l) => l.name))}`);
    assert.equal(a0.index, parseLink(sock!.get(getLink('a0'), 'get a0')).index);
  });

  it('a refused request throws its error and leaves the socket usable', () => {
    sock!.execEcho(newVeth({ name: 'c0' }, { name: 'd0' }), 'create veth');
    assert.throws(() => sock!.execEcho(newVeth({ name: 'c0' }, { name: 'd1' }), 'create veth again'), /create veth again: .*EEXIST/);
    assert.equal(parseLink(sock!.get(getLink('d0'), 'get d0')).name, 'd0');
  });
});
