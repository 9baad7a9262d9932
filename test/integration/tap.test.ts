// TAP sandboxes without a guest (test/integration/tap-guest.test.ts boots one): the device
// and its plumbing in the sandbox's namespace, the elements, what create --json tells a VMM,
// the options, refused requests leaving nothing behind, removal while a VMM holds the device,
// and a warm pool of TAP sandboxes as the instance's default mode.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { ChildProcess } from 'node:child_process';
import { ToastnetClient } from '../../src/api/client.js';
import type { SandboxInfo } from '../../src/api/types.js';
import { Testbed } from '../testbed/testbed.js';
import { waitFor } from '../helpers/wait.js';

// A stand-in VMM: opens the sandbox's TAP as a VMM does (TUNSETIFF IFF_TAP|IFF_NO_PI|IFF_VNET_HDR), says so, holds it.
const HOLD_TAP = `import fcntl, os, struct, sys, time
fd = os.open('/dev/net/tun', os.O_RDWR)
fcntl.ioctl(fd, 0x400454ca, struct.pack('16sH', sys.argv[1].encode(), 0x1002 | 0x4000))
print('attached', flush=True)
time.sleep(300)`;

interface LinkJson {
  ifname: string;
  flags: string[];
  operstate: string;
  address: string;
  linkinfo?: { info_kind: string; info_data?: Record<string, unknown> };
}

describe('tap sandboxes (no guest)', () => {
  let tb: Testbed;
  let cl: ToastnetClient;
  const I = `tp${Date.now().toString(36)}`;
  const run = (args: string[]) => tb.toastnet(I, args);
  const create = (name: string, ...flags: string[]): SandboxInfo => {
    const r = run(['create', name, '--mode', 'tap', '--json', ...flags]);
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout) as SandboxInfo;
  };
  const inNs = (netns: string, cmd: string[]) => tb.sh(tb.hostNs, ['nsenter', `--net=${netns}`, ...cmd]);
  const links = (netns: string): LinkJson[] => JSON.parse(inNs(netns, ['ip', '-d', '-j', 'link', 'show'])) as LinkJson[];
  const hostLink = (name: string): LinkJson | undefined => (JSON.parse(tb.sh(tb.hostNs, ['ip', '-j', 'link', 'show'])) as LinkJson[]).find((l) => l.ifname === name);
  const ourNetns = () => fs.readdirSync('/run/netns').filter((n) => n.startsWith(`${I}-`));

  before(async () => {
    tb = await Testbed.create({ hostService: false });
    cl = new ToastnetClient(tb.socketPath(I));
    tb.startDaemon(I);
    await waitFor(() => cl.ping(), 'the daemon');
  });
  after(async () => {
    await tb?.destroy();
  });

  it('create --json gives a VMM everything: device, namespace, guest MAC, addresses, ip= argument', () => {
    const s = create('vm1');
    assert.equal(s.mode, 'tap');
    assert.ok(s.tap, 'no tap section');
    assert.equal(s.tap.device, 'tap0');
    assert.equal(s.tap.netns, s.netns);
    assert.equal(s.tap.guestMac, s.mac);
    assert.equal(s.tap.ip, s.ip);
    assert.equal(s.tap.gateway, s.gateway);
    assert.equal(s.tap.dns, s.gateway);
    const mask = s.prefixLength === 16 ? '255.255.0.0' : undefined;
    assert.equal(s.tap.kernelIp, `ip=${s.ip}::${s.gateway}:${mask}::eth0:off:${s.gateway}`);
    assert.deepEqual([s.tap.vnetHdr, s.tap.queues], [true, 1]);
    // get answers the same (options come from the state, not from the create's memory)
    const r = run(['ls', '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual((JSON.parse(r.stdout) as SandboxInfo[]).find((x) => x.name === 'vm1')?.tap, s.tap);
  });

  it('the namespace holds a persistent TAP joined to eth0 by tc, and nothing with an address', () => {
    const s = cl && JSON.parse(run(['ls', '--json']).stdout).find((x: SandboxInfo) => x.name === 'vm1') as SandboxInfo;
    const ls = links(s.netns);
    const tap = ls.find((l) => l.ifname === 'tap0');
    assert.ok(tap, `no tap0 in ${s.netns}`);
    assert.equal(tap.linkinfo?.info_kind, 'tun');
    assert.equal(tap.linkinfo?.info_data?.type, 'tap');
    assert.equal(tap.linkinfo?.info_data?.vnet_hdr, true);
    assert.equal(tap.linkinfo?.info_data?.persist, true);
    assert.equal(tap.linkinfo?.info_data?.multi_queue, false);
    assert.ok(tap.flags.includes('UP'));
    const eth0 = ls.find((l) => l.ifname === 'eth0');
    assert.equal(eth0?.address, s.mac, 'eth0 carries the guest MAC');
    const addrs = JSON.parse(inNs(s.netns, ['ip', '-j', 'addr', 'show'])) as { ifname: string; addr_info: { family: string }[] }[];
    for (const a of addrs) if (a.ifname !== 'lo') assert.deepEqual(a.addr_info, [], `${a.ifname} has addresses: the namespace must send nothing of its own`);
    for (const [from, to] of [['tap0', 'eth0'], ['eth0', 'tap0']]) {
      const f = inNs(s.netns, ['tc', 'filter', 'show', 'dev', from, 'ingress']);
      assert.match(f, new RegExp(`mirred \\(Egress Redirect to device ${to}\\) stolen`), `${from} -> ${to}:\n${f}`);
    }
    // The host side is a veth sandbox's: its own link with a /32 route, the guest admitted by link, MAC and address.
    assert.ok(hostLink(s.hostLink!), 'no host link');
    assert.match(tb.sh(tb.hostNs, ['ip', 'route', 'show', `${s.ip}/32`]), new RegExp(`dev ${s.hostLink}`));
    const set = tb.sh(tb.hostNs, ['nft', 'list', 'set', 'inet', I, 'veth_src']);
    assert.match(set, new RegExp(`"?${s.hostLink}"? \\. ${s.mac} \\. ${s.ip.replace(/\./g, '\\.')}`), set);
  });

  it('options: multiqueue, no vnet_hdr, owner and group for a jailed VMM', () => {
    const s = create('vm2', '--queues', '4', '--no-vnet-hdr', '--tap-owner', '1234', '--tap-group', '2345');
    assert.deepEqual({ ...s.tap, kernelIp: undefined }, { ...s.tap, kernelIp: undefined, vnetHdr: false, queues: 4, owner: 1234, group: 2345 });
    const tap = links(s.netns).find((l) => l.ifname === 'tap0')!;
    assert.equal(tap.linkinfo?.info_data?.multi_queue, true);
    assert.equal(tap.linkinfo?.info_data?.vnet_hdr, false);
    assert.equal(String(tap.linkinfo?.info_data?.user), '1234');
    assert.equal(String(tap.linkinfo?.info_data?.group), '2345');
    assert.equal(run(['rm', 'vm2']).code, 0);
  });

  it('refused requests: one line, exit 2, nothing made', () => {
    for (const [args, msg] of [
      [['--mode', 'tap', '--queues', '0'], /tap\.queues: want an integer from 1 to 64, got 0/],
      [['--mode', 'tap', '--queues', '65'], /tap\.queues/],
      [['--mode', 'tap', '--tap-owner', 'root'], /--tap-owner root: want a non-negative integer/],
      [['--mode', 'veth', '--queues', '2'], /tap options apply to mode tap, not veth/],
      [['--mode', 'tun'], /argument 'tun' is invalid|mode/],
    ] as [string[], RegExp][]) {
      const r = run(['create', 'bad', ...args]);
      assert.notEqual(r.code, 0, `${args.join(' ')} was accepted`);
      assert.match(r.stderr, msg);
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
      // (Namespaces of sandboxes removed just before may still be on their way out: only this name counts.)
      assert.ok(!ourNetns().includes(`${I}-bad`), `${args.join(' ')} left a namespace`);
    }
    // The API's own check (a client not going through the CLI; a fresh connection)
    return new ToastnetClient(tb.socketPath(I)).create({ name: 'bad', mode: 'tap', tap: { queues: 1.5 } }).then(
      () => assert.fail('accepted queues 1.5'),
      (e: Error) => {
        assert.match(e.message, /queues/);
        assert.ok(!ourNetns().includes(`${I}-bad`), 'a refused create left a namespace');
        assert.equal(run(['ls', '-q']).stdout.trim().split('\n').includes('bad'), false);
      },
    );
  });

  it('removed while a VMM holds the TAP: nothing is routed to it from then on, the VMM is ended, then everything goes', async () => {
    const s = create('vm3');
    const vmm: ChildProcess = tb.background(tb.hostNs, ['nsenter', `--net=${s.netns}`, 'python3', '-c', HOLD_TAP, 'tap0']);
    await new Promise<void>((resolve, reject) => {
      vmm.stdout!.on('data', (d) => String(d).includes('attached') && resolve());
      vmm.on('exit', (c) => reject(new Error(`stand-in VMM exited ${c}`)));
    });
    const exited = new Promise<void>((resolve) => vmm.on('exit', () => resolve()));
    // Attached: the TAP has a carrier now.
    assert.ok(links(s.netns).find((l) => l.ifname === 'tap0')!.flags.includes('LOWER_UP'));
    const t0 = performance.now();
    // Through the API, not a CLI process: the reaper's turn comes 50 ms after the removal,
    // which a CLI's exit on a loaded machine can take (the check below then saw nothing).
    await new ToastnetClient(tb.socketPath(I)).remove('vm3');
    // Right after rm returns, before the reaper's turn (the VMM still holds the link): no route leads to the guest.
    assert.ok(hostLink(s.hostLink!), 'the link went before the VMM did: this checks nothing');
    assert.doesNotMatch(tb.sh(tb.hostNs, ['ip', 'route', 'get', s.ip]), new RegExp(`dev ${s.hostLink}`), 'still routed to the guest after rm');
    // and its elements are gone: what it sends fails the source check.
    assert.doesNotMatch(tb.sh(tb.hostNs, ['nft', 'list', 'set', 'inet', I, 'veth_src']), new RegExp(s.mac));
    await exited;
    assert.ok(performance.now() - t0 < 5000, 'the VMM was not ended within 5 s');
    await waitFor(() => hostLink(s.hostLink!) === undefined, `${s.hostLink} to be reaped`, 10_000);
    assert.equal(ourNetns().includes(path.basename(s.netns)), false);
  });

  it('rm of an idle TAP sandbox takes everything', async () => {
    assert.equal(run(['rm', 'vm1']).code, 0);
    await waitFor(() => ourNetns().length === 0, () => `no namespace of the instance left: ${ourNetns().join(' ')}`);
  });
});

describe('tap as the default mode, with a warm pool', () => {
  let tb: Testbed;
  let cl: ToastnetClient;
  const I = `tq${Date.now().toString(36)}`;

  before(async () => {
    tb = await Testbed.create({ hostService: false });
    const cfg = path.join(tb.dir, 'tap-pool.json');
    fs.writeFileSync(cfg, JSON.stringify({ defaultMode: 'tap', poolSize: 2 }));
    cl = new ToastnetClient(tb.socketPath(I));
    tb.startDaemon(I, ['--config', cfg]);
    await waitFor(() => cl.ping(), 'the daemon');
  });
  after(async () => {
    await tb?.destroy();
  });

  it('a create without a mode takes a TAP member from the pool; other options get a device made for them', async () => {
    await waitFor(async () => (await cl.status()).pool.idle === 2, '2 idle members', 10_000);
    const s = await cl.create({ name: 'p1' });
    assert.equal(s.mode, 'tap');
    assert.equal((await cl.status()).pool.acquired, 1, 'not served by the pool');
    const tap = (JSON.parse(tb.sh(tb.hostNs, ['nsenter', `--net=${s.netns}`, 'ip', '-d', '-j', 'link', 'show', 'tap0'])) as LinkJson[])[0];
    assert.equal(tap.linkinfo?.info_data?.type, 'tap');
    const q = await cl.create({ name: 'p2', tap: { queues: 2 } });
    assert.equal(q.tap?.queues, 2);
    assert.equal((await cl.status()).pool.acquired, 1, 'a member with default options served a multiqueue request');
    const v = await cl.create({ name: 'p3', mode: 'veth' });
    assert.equal(v.mode, 'veth');
    assert.equal(v.tap, undefined);
  });
});
