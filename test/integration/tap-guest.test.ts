// A real microVM on a TAP sandbox: Debian's QEMU (-M microvm, TCG) boots Debian's cloud
// kernel with a busybox initramfs (test/helpers/microvm.ts) on the TAP that create --mode tap
// made, configured from the `ip=` argument create --json gave. The guest's /init runs every
// probe in one boot (a boot costs 5-7 s under TCG) and prints what it got; the test checks
// the host side agrees (events, stats, the sink's byte count), then removes the sandbox
// while the guest still sends, and checks the network is gone at once and QEMU is ended.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ToastnetClient } from '../../src/api/client.js';
import type { SandboxInfo, SandboxStats } from '../../src/api/types.js';
import { Testbed, WAN } from '../testbed/testbed.js';
import { waitFor } from '../helpers/wait.js';
import { waitForEvents } from '../helpers/events.js';
import { Guest, GuestImage, Mark, bootGuest, microvmUnavailable, prepareGuest } from '../helpers/microvm.js';

const unavailable = microvmUnavailable();
// Unlimited, the TCG guest uploads at ~13-21 Mbit/s here: a 4 Mbit/s limit is well below it.
const UPLOAD_KB = 2048;
const LIMIT_BITS = 4e6;

describe('a microVM guest on a tap sandbox', { skip: unavailable && `no microVM here: ${unavailable}` }, () => {
  let tb: Testbed;
  let cl: ToastnetClient;
  let img: GuestImage;
  let vm: SandboxInfo;
  let otherTap: SandboxInfo;
  let peer: SandboxInfo;
  let guest: Guest;
  const I = `tg${Date.now().toString(36)}`;
  const sunk = () => Number(tb.sh(tb.wanNs, ['curl', '-sS', `http://${WAN.internet}:9101/`]));
  let sunkBefore = 0;
  /** The guest's MARK lines in order, as "word word ...". */
  const lines = () => guest.marks.map((m) => m.words.join(' '));
  const markOf = (prefix: string): Mark => {
    const m = guest.marks.find((x) => x.words.join(' ').startsWith(prefix));
    assert.ok(m, `no MARK ${prefix} in:\n${lines().join('\n')}`);
    return m;
  };

  before(async () => {
    img = prepareGuest();
    tb = await Testbed.create();
    await tb.serveWan([`sink:${WAN.internet}:9100`]);
    cl = new ToastnetClient(tb.socketPath(I));
    tb.startDaemon(I);
    await waitFor(() => cl.ping(), 'the daemon');
    peer = await cl.create({ name: 'peer' });
    await tb.serveInSandbox(I, 'peer', ['http:0.0.0.0:80:peer']);
    otherTap = await cl.create({ name: 'other', mode: 'tap' });
    // The guest probes by address (spoofing, limits, the sink) what this test is about; name
    // checks, the same on a TAP's host side as on a veth's, are name-checks.test.ts's.
    vm = await cl.create({ name: 'vm', mode: 'tap', policy: { egress: { domains: ['example.test'], verifyNames: false }, limits: { egressRate: '4mbit' } } });
    sunkBefore = sunk();
    const t = vm.tap!;
    guest = bootGuest(img, {
      netns: t.netns, tap: t.device, mac: t.guestMac, kernelIp: t.kernelIp, timeoutMs: 240_000,
      probes: [
        'dns:example.test', 'get:http://example.test/', // by name, through the gateway's resolver
        'dns:other.test', 'get:http://203.0.113.20/', // not on the allow-list
        `get:http://${WAN.metadata}/`, `tcp:${t.gateway}:8080`, `tcp:${WAN.hostUplink}:8080`,
        `get:http://${WAN.vpc}/`, `get:http://${WAN.private10}/`, `get:http://${WAN.private192}/`, `get:http://${WAN.cgnat}/`,
        `get:http://${peer.ip}/`, `tcp:${otherTap.ip}:80`,
        // Twice: the first empties the policer's bucket (a second of rate plus the burst), the second meets the rate.
        `send:${WAN.internet}:9100:${UPLOAD_KB}`, `send:${WAN.internet}:9100:${UPLOAD_KB}`,
        'spoofmac:02:00:00:00:00:99', `get:http://${WAN.internet}/spoofed-mac`, 'restore', `get:http://${WAN.internet}/after-mac`,
        `spoofip:${otherTap.ip}`, `get:http://${WAN.internet}/spoofed-ip`, 'restore', `get:http://${WAN.internet}/after-ip`,
        `loop:http://${WAN.internet}/`,
      ],
    });
  });
  after(async () => {
    guest?.kill();
    await tb?.destroy();
  });

  it('boots on the TAP with the ip= argument toastnet gave and reaches the internet by name', async (t) => {
    await guest.mark(['tick'], 200_000);
    t.diagnostic(guest.marks.map((m) => `${(m.atMs / 1000).toFixed(2)}s ${m.words.join(' ')}`).join('\n'));
    assert.equal(markOf('dns example.test').words[2], WAN.internet, 'the gateway resolver answered the guest');
    assert.match(lines().find((l) => l.startsWith('get http://example.test/'))!, / ok internet$/);
  });

  it('the domain allow-list applies to the guest', () => {
    assert.equal(markOf('dns other.test').words[2], 'none', 'a name off the list resolved');
    assert.equal(markOf('get http://203.0.113.20/').words[2], 'fail', 'an address no allowed name gave was reached');
  });

  it('metadata, host services, private ranges and other sandboxes (veth and tap) are blocked', async () => {
    for (const p of [`get http://${WAN.metadata}/`, `tcp ${vm.gateway}:8080`, `tcp ${WAN.hostUplink}:8080`, `get http://${WAN.vpc}/`,
      `get http://${WAN.private10}/`, `get http://${WAN.private192}/`, `get http://${WAN.cgnat}/`, `get http://${peer.ip}/`, `tcp ${otherTap.ip}:80`]) {
      assert.equal(markOf(p).words[2], 'fail', `${p} got through`);
    }
    // The host saw and refused each (not a black hole in the guest): denial events name them.
    const evs = await waitForEvents(cl, 'vm', (e) => [WAN.metadata, peer.ip, otherTap.ip, WAN.vpc].every((d) => e.some((x) => x.dst === d)), 'denials of the guest');
    assert.ok(evs.every((e) => e.action === 'blocked'));
    // The other TAP sandbox received nothing of it.
    const o = await cl.stats('other') as SandboxStats;
    assert.equal(o.received.packets, 0, 'the other tap sandbox received packets');
  });

  it('a guest that changes its MAC or its address gets nothing through; its own again, it does', () => {
    const seq = lines();
    const after = (prefix: string) => seq.find((l) => l.startsWith(prefix));
    assert.match(after(`get http://${WAN.internet}/spoofed-mac`)!, / fail$/);
    assert.match(after(`get http://${WAN.internet}/after-mac`)!, / ok internet$/);
    assert.match(after(`get http://${WAN.internet}/spoofed-ip`)!, / fail$/);
    assert.match(after(`get http://${WAN.internet}/after-ip`)!, / ok internet$/);
  });

  it('its egress limit holds, and stats count its bytes', async (t) => {
    const sends = guest.marks.filter((m) => m.words[0] === 'send');
    assert.equal(sends.length, 2, lines().join('\n'));
    const got = sunk() - sunkBefore;
    assert.ok(got >= 2 * UPLOAD_KB * 1024, `the sink got ${got} of ${2 * UPLOAD_KB * 1024} bytes`);
    // The first upload emptied the policer's bucket (a second of rate plus the burst, kernel-facts.md); the second meets the rate.
    const seconds = Number(sends[1].words[4]) - Number(sends[1].words[3]);
    const rate = (UPLOAD_KB * 1024 * 8) / seconds;
    t.diagnostic(`guest's second upload: ${UPLOAD_KB} KiB in ${seconds.toFixed(2)} s = ${(rate / 1e6).toFixed(1)} Mbit/s (limit 4)`);
    assert.ok(rate <= LIMIT_BITS * 1.25, `${(rate / 1e6).toFixed(1)} Mbit/s through a 4 Mbit/s limit`);
    const s = await cl.stats('vm') as SandboxStats;
    assert.ok(s.sent.bytes >= 2 * UPLOAD_KB * 1024, `stats: sent ${s.sent.bytes} bytes, the guest uploaded ${2 * UPLOAD_KB} KiB`);
    assert.ok(s.received.bytes > 0 && s.blocked.packets > 0, JSON.stringify(s));
  });

  it('removed while QEMU runs: nothing passes from that moment, and QEMU is ended', async () => {
    await guest.mark(['tick', 'ok'], 30_000);
    const r = tb.toastnet(I, ['rm', 'vm']);
    assert.equal(r.code, 0, r.stderr);
    const removedAt = performance.now();
    assert.doesNotMatch(tb.sh(tb.hostNs, ['ip', 'route', 'get', vm.ip]), new RegExp(`dev ${vm.hostLink}`), 'still routed to the guest after rm');
    const ended = await Promise.race([guest.exited.then(() => true), new Promise<boolean>((res) => setTimeout(() => res(false), 10_000))]);
    assert.ok(ended, 'QEMU still runs 10 s after rm');
    // Ticks that reached us well after rm returned all failed (a tick's line trails its packets
    // by the guest's print and the serial console under TCG: a margin of 250 ms).
    const late = guest.marks.filter((m) => m.words[0] === 'tick' && m.atMs > removedAt - guest.startedAt + 250);
    assert.ok(late.every((m) => m.words[1] === 'fail'), `a tick passed after rm: ${late.map((m) => m.words.join(' ')).join(', ')}`);
  });
});
