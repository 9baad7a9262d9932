// Adversarial tests of the resolver's isolation, with real packets in the testbed. Each
// attempt comes with a control showing it would have worked without the protection:
// - answers are judged with the sandbox as it is when they arrive (policy narrowed, or the
//   sandbox removed and its address given to another, while the query was upstream);
// - resolver limits belong to a sandbox, not to its address;
// - only what a stub resolver needs reaches the upstream (the testbed's upstream records
//   every query it gets; a recording server inside the sandbox shows what was sent).
//
// Two instances: I (a /16, the upstream on 203.0.113.53:5353 records), and J (a /29 whose
// other addresses are held by fillers, so every new sandbox gets the address the last one
// had); a third, K, runs on an engine in-process (helpers/admission-steps.ts).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import dnsPacket from 'dns-packet';
import { DNS_EXCHANGE, Result, Testbed, WAN } from '../testbed/testbed.js';
import { waitFor } from '../helpers/wait.js';

/** Names under slow.test are answered 6 s late (servers.ts), all with this address. */
const SLOW_ADDRESS = WAN.internet2;
const UPSTREAM_PORT = 5353;
const ADMISSION_STEPS = path.join(path.dirname(fileURLToPath(import.meta.url)), 'helpers', 'admission-steps.js');

interface Recorded {
  transport: string;
  wire: Buffer;
}

/** The queries a recording DNS server (servers.ts dns:IP:PORT:FILE) got so far. */
function recorded(file: string): Recorded[] {
  if (!fs.existsSync(file)) return [];
  return fs.readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => {
    const [transport, hex] = l.split(' ');
    return { transport, wire: Buffer.from(hex, 'hex') };
  });
}

function questionName(wire: Buffer): string | undefined {
  try {
    return dnsPacket.decode(wire).questions?.[0]?.name?.toLowerCase();
  } catch {
    return undefined;
  }
}

const TXT = (name: string, data: string): dnsPacket.Answer => ({ type: 'TXT', name, ttl: 0, data });

describe('dns isolation', () => {
  let tb: Testbed;
  const stamp = Date.now().toString(36);
  const I = `i${stamp}`;
  const J = `j${stamp}`;
  const flags: Record<string, string[]> = {};
  let upstreamLog: string;
  const run = (inst: string, args: string[]) => tb.toastnet(inst, args, { extraFlags: flags[inst] });
  const dig = (inst: string, s: string, name: string, ...extra: string[]) => run(inst, ['exec', s, '--', 'dig', '+tries=1', ...extra, name]);
  // By name (--resolve to the address the test expects): with an allow-list, a connection must name an allowed domain first (name checks).
  const curl = (inst: string, s: string, url: string, name = `n-${unique()}.slow.test`) => run(inst, ['exec', s, '--', 'curl', '-sS', '--max-time', '2', '-H', `Host: ${name}`, url]);
  const dnsCounters = (inst: string) => JSON.parse(run(inst, ['status', '--json']).stdout).dns as { queries: number; answered: number };
  const dnsAllowed = (inst: string) => tb.sh(tb.hostNs, ['nft', 'list', 'set', 'inet', inst, 'dns_allowed']);
  const admitted = (inst: string, ip: string, daddr: string) => dnsAllowed(inst).includes(`${ip} . ${daddr}`);
  const rm = (inst: string, s: string) => assert.equal(run(inst, ['rm', s]).code, 0);
  /** Runs `fn`, then removes `s` whatever happened: J has one address to pass on. */
  async function thenRemove(inst: string, s: string, fn: () => Promise<void>): Promise<void> {
    try {
      await fn();
    } finally {
      run(inst, ['rm', s]);
    }
  }
  const unique = () => randomBytes(4).toString('hex');

  /** Creates a sandbox and returns its address; in J, waits for the address a removal gives back (J is full until then). */
  async function create(inst: string, name: string, ...f: string[]): Promise<string> {
    let r: Result | undefined;
    await waitFor(() => {
      r = run(inst, ['create', name, '--json', ...f]);
      return !/exhausted/.test(r.stderr);
    }, `an address for ${name}`);
    assert.equal(r!.code, 0, r!.stderr);
    return JSON.parse(r!.stdout).ip as string;
  }

  before(async () => {
    tb = await Testbed.create();
    upstreamLog = path.join(tb.dir, 'upstream-queries.log');
    await tb.serveWan([`dns:${WAN.dns}:${UPSTREAM_PORT}:${upstreamLog}`]);
    // Upstream timeout well past the slow names' 6 s (a window for a removal and a create through the CLI on a loaded machine); admissions short enough not to linger.
    const cfg = path.join(tb.dir, 'isolation.json');
    fs.writeFileSync(cfg, JSON.stringify({ dnsMinTtl: 1, dnsTimeoutMs: 8000 }));
    const upstream = ['--dns', `${WAN.dns}:${UPSTREAM_PORT}`];
    flags[I] = ['--config', cfg, ...upstream];
    flags[J] = ['--config', cfg, ...upstream, '--subnet', '10.167.0.0/29'];
    // J's five addresses: four held for the whole run, one that passes from sandbox to sandbox.
    for (let i = 1; i <= 4; i++) await create(J, `fill${i}`);
  });
  after(async () => {
    await tb?.destroy();
  });

  describe('answers are judged with the sandbox as it is when they arrive', () => {
    it('control: a slow answer under the policy it was asked with admits its address', async () => {
      const ip = await create(I, 'patient', '--domain', '*.slow.test');
      const r = dig(I, 'patient', `ctl-${unique()}.slow.test`, '+time=8');
      assert.match(r.stdout, /status: NOERROR/, r.stdout);
      assert.ok(admitted(I, ip, SLOW_ADDRESS), dnsAllowed(I));
      assert.equal(curl(I, 'patient', `http://${SLOW_ADDRESS}/`).stdout, 'internet2');
    });

    it('a name dropped from the allow-list while its query is upstream gets REFUSED and opens nothing', async () => {
      const ip = await create(I, 'narrowed', '--domain', '*.slow.test', '--domain', 'example.test');
      const name = `atk-${unique()}.slow.test`;
      const asked = tb.toastnetAsync(I, ['exec', 'narrowed', '--', 'dig', '+tries=1', '+time=8', name]);
      await waitFor(() => recorded(upstreamLog).some((q) => questionName(q.wire) === name), 'the query to reach the upstream');
      const set = run(I, ['policy', 'set', 'narrowed', '--domain', 'example.test']);
      assert.equal(set.code, 0, set.stderr);
      const r = await asked;
      assert.match(r.stdout, /status: REFUSED/, r.stdout);
      assert.ok(!admitted(I, ip, SLOW_ADDRESS), dnsAllowed(I));
      assert.notEqual(curl(I, 'narrowed', `http://${SLOW_ADDRESS}/`).code, 0, 'the answered address stays closed');
      const log = run(I, ['events', '--queries', '--json', '--sandbox', 'narrowed']).stdout;
      assert.match(log, /changed while the query was upstream/);
    });
  });

  describe('an address passed to another sandbox', () => {
    it('control: a late answer admits its address for the sandbox that asked, while it lives', async () => {
      const ip = await create(J, 'asker', '--domain', '*.slow.test');
      await thenRemove(J, 'asker', async () => {
        const base = dnsCounters(J).answered;
        dig(J, 'asker', `ctl-${unique()}.slow.test`, '+time=1'); // gives up after 1 s; the answer comes at 6 s
        await waitFor(() => dnsCounters(J).answered > base, 'the slow answer');
        assert.ok(admitted(J, ip, SLOW_ADDRESS), dnsAllowed(J));
        assert.equal(curl(J, 'asker', `http://${SLOW_ADDRESS}/`).stdout, 'internet2');
      });
    });

    it('a sandbox removed while its query is upstream: the next sandbox at its address (same name too) is admitted nothing', async () => {
      const ip = await create(J, 'leaver', '--domain', '*.slow.test');
      // Counted when its answer comes (as dropped: its sandbox is gone), not before.
      const base = dnsCounters(J).queries;
      dig(J, 'leaver', `atk-${unique()}.slow.test`, '+time=1');
      rm(J, 'leaver');
      const heir = await create(J, 'leaver', '--domain', 'example.test');
      await thenRemove(J, 'leaver', async () => {
        assert.equal(heir, ip, 'the address was passed on');
        assert.equal(dnsCounters(J).queries, base, 'the new sandbox was there before the answer');
        await waitFor(() => dnsCounters(J).queries > base, 'the slow answer');
        assert.ok(!admitted(J, ip, SLOW_ADDRESS), dnsAllowed(J));
        assert.notEqual(curl(J, 'leaver', `http://${SLOW_ADDRESS}/`).code, 0, 'the new sandbox cannot reach the answered address');
      });
    });

    it('the engine itself admits an answer only for the sandbox that asked, not for the next one at its address', () => {
      const K = `k${stamp}`;
      tb.instances.add(K);
      const r = spawnSync('nsenter', [`--net=/run/netns/${tb.hostNs}`, process.execPath, ADMISSION_STEPS, K, path.join(tb.dir, K, 'state'), path.join(tb.dir, K, 'run'), WAN.dns], { encoding: 'utf8', timeout: 60_000 });
      assert.equal(r.status, 0, r.stderr);
      const seen = JSON.parse(r.stdout.trim().split('\n').pop()!) as { reused: Record<string, boolean>; forRemoved: string; forItself: string; ip: string; downError?: string };
      assert.deepEqual(seen.reused, { name: true, ip: true, id: false });
      assert.ok(!seen.forRemoved.includes(`${seen.ip} . ${SLOW_ADDRESS}`), seen.forRemoved);
      assert.ok(seen.forItself.includes(`${seen.ip} . ${SLOW_ADDRESS}`), `control: ${seen.forItself}`);
      assert.equal(seen.downError, undefined);
    });

    it('resolver limits belong to the sandbox: the next one at its address does not inherit a spent failure budget', async () => {
      const p = path.join(tb.dir, 'fragile.json');
      fs.writeFileSync(p, JSON.stringify({ dns: { maxFailuresPerMinute: 3 } }));
      await create(J, 'spender', '--policy', p);
      await thenRemove(J, 'spender', async () => {
        for (let i = 0; i < 3; i++) assert.match(dig(J, 'spender', `nx${i}-${unique()}.test`, '+time=2').stdout, /status: NXDOMAIN/);
        assert.match(dig(J, 'spender', 'example.test', '+time=2').stdout, /status: REFUSED/, 'control: its budget is spent');
      });
      await create(J, 'spender', '--policy', p); // same name, same address: a new sandbox
      await thenRemove(J, 'spender', async () => {
        assert.match(dig(J, 'spender', 'example.test', '+time=2').stdout, /status: NOERROR/, 'it starts afresh');
      });
    });
  });

  describe('only what a stub resolver needs reaches the upstream', () => {
    let localLog: string;
    const S = 'smuggler';
    /** Sends `msg` from the sandbox, byte for byte, to the gateway's resolver or to the recording server inside it. */
    const exchange = (transport: 'udp' | 'tcp', to: 'gateway' | 'local', msg: Buffer) => {
      const [server, port] = to === 'gateway' ? ['10.166.0.1', '53'] : ['127.0.0.1', String(UPSTREAM_PORT)];
      const r = run(I, ['exec', S, '--', process.execPath, DNS_EXCHANGE, transport, server, port, msg.toString('hex')]);
      assert.equal(r.code, 0, r.stderr);
      const out = JSON.parse(r.stdout) as { answer?: string; error?: string };
      return { ...out, rcode: out.answer ? Buffer.from(out.answer, 'hex')[3] & 0x0f : undefined };
    };
    const upstreamGot = (name: string) => recorded(upstreamLog).filter((q) => questionName(q.wire) === name);
    const localGot = (name: string) => recorded(localLog).filter((q) => questionName(q.wire) === name);
    const query = (name: string, o: { id?: number; flags?: number; answers?: dnsPacket.Answer[]; authorities?: dnsPacket.Answer[]; additionals?: dnsPacket.Answer[]; type?: dnsPacket.RecordType } = {}) =>
      dnsPacket.encode({ type: 'query', id: o.id ?? 4242, flags: o.flags ?? dnsPacket.RECURSION_DESIRED, questions: [{ type: o.type ?? 'A', name }], answers: o.answers ?? [], authorities: o.authorities ?? [], additionals: o.additionals ?? [] });

    before(async () => {
      await create(I, S, '--domain', 'example.test', '--domain', '*.example.test');
      localLog = path.join(tb.dir, 'sandbox-queries.log');
      await tb.serveInSandbox(I, S, [`dns:127.0.0.1:${UPSTREAM_PORT}:${localLog}`]);
    });

    it('an EDNS option\'s payload never reaches the upstream; the query still does, with only size and DO', () => {
      const name = `edns-${unique()}.example.test`;
      const payload = Buffer.from(`edns-secret-${unique()}`);
      const opts = [`+ednsopt=65001:${payload.toString('hex')}`, '+bufsize=4096', '+dnssec', '+time=3'];
      assert.match(dig(I, S, name, ...opts, '@127.0.0.1', '-p', String(UPSTREAM_PORT)).stdout, /status: NXDOMAIN/);
      assert.ok(localGot(name)[0]?.wire.includes(payload), 'control: dig put the payload in the query');
      assert.match(dig(I, S, name, ...opts).stdout, /status: NXDOMAIN/, 'answered through the resolver');
      const got = upstreamGot(name);
      assert.equal(got.length, 1);
      assert.ok(!got[0].wire.includes(payload), 'no payload upstream');
      const optRecord = dnsPacket.decode(got[0].wire).additionals?.find((r) => r.type === 'OPT') as unknown as { udpPayloadSize: number; flags: number; options: unknown[] };
      assert.deepEqual([optRecord.udpPayloadSize, optRecord.flags, optRecord.options], [1232, dnsPacket.DNSSEC_OK, []]);
    });

    it('records in the answer or authority section: FORMERR, nothing forwarded; other additional records: dropped', () => {
      for (const section of ['answers', 'authorities'] as const) {
        const name = `${section}-${unique()}.example.test`;
        const payload = `${section}-secret-${unique()}`;
        const msg = query(name, { [section]: [TXT(name, payload)] });
        exchange('udp', 'local', msg);
        assert.ok(localGot(name)[0]?.wire.includes(payload), 'control: the payload was sent');
        assert.equal(exchange('udp', 'gateway', msg).rcode, 1 /* FORMERR */, section);
        assert.deepEqual(upstreamGot(name), [], `${section}: nothing upstream`);
      }
      const name = `additional-${unique()}.example.test`;
      const payload = `additional-secret-${unique()}`;
      const msg = query(name, { additionals: [TXT(name, payload)] });
      exchange('udp', 'local', msg);
      assert.ok(localGot(name)[0]?.wire.includes(payload), 'control: the payload was sent');
      assert.equal(exchange('udp', 'gateway', msg).rcode, 3 /* NXDOMAIN: forwarded and answered */);
      const got = upstreamGot(name);
      assert.equal(got.length, 1);
      assert.ok(!got[0].wire.includes(payload));
      assert.equal(got[0].wire.readUInt16BE(10), 0, 'no additional record');
    });

    it('UPDATE is refused and never forwarded', () => {
      const zone = `upd-${unique()}.example.test`;
      const payload = `update-secret-${unique()}`;
      // RFC 2136 layout: zone in the question section, the change in the authority section.
      const msg = query(zone, { type: 'SOA', authorities: [TXT(zone, payload)] });
      msg[2] = (msg[2] & 0x87) | (5 << 3); // opcode UPDATE
      exchange('udp', 'local', msg);
      assert.ok(localGot(zone)[0]?.wire.includes(payload), 'control: the update was sent');
      assert.equal(exchange('udp', 'gateway', msg).rcode, 5 /* REFUSED */);
      assert.equal(exchange('tcp', 'gateway', msg).rcode, 5, 'over TCP too');
      assert.ok(!recorded(upstreamLog).some((q) => q.wire.includes(payload)), 'nothing upstream');
    });

    it('header bits beyond RD and CD, and the sandbox\'s message ID, do not reach the upstream (UDP and TCP)', () => {
      const all = 0xffff & ~0x8000 & ~0x7800 & ~0x000f; // every flag bit but QR, opcode and rcode
      for (const transport of ['udp', 'tcp'] as const) {
        const name = `flags-${transport}-${unique()}.example.test`;
        const msg = query(name, { id: 0x5eed, flags: all });
        exchange(transport, 'local', msg);
        assert.equal(localGot(name)[0]?.wire.readUInt16BE(2), all, 'control: the bits were sent');
        const r = exchange(transport, 'gateway', msg);
        assert.equal(r.rcode, 3, r.error);
        assert.equal(Buffer.from(r.answer!, 'hex').readUInt16BE(0), 0x5eed, 'the sandbox gets its own ID back');
        const [got] = upstreamGot(name);
        assert.equal(got.transport, transport);
        assert.equal(got.wire.readUInt16BE(2), dnsPacket.RECURSION_DESIRED | dnsPacket.CHECKING_DISABLED);
        assert.notEqual(got.wire.readUInt16BE(0), 0x5eed, 'the forwarder\'s own ID (a 1 in 65536 chance of a false failure)');
      }
    });

    it('a huge TCP query is dropped unread; a padded one goes upstream at the size of its question', () => {
      const pad = (name: string, bytes: number) => Array.from({ length: Math.ceil(bytes / 250) }, () => TXT(name, `pad-secret-${'z'.repeat(239)}`));
      const huge = `huge-${unique()}.example.test`;
      const hugeMsg = query(huge, { additionals: pad(huge, 20_000) });
      assert.ok(hugeMsg.length > 20_000);
      exchange('tcp', 'local', hugeMsg);
      assert.equal(localGot(huge)[0]?.wire.length, hugeMsg.length, 'control: all of it was sent');
      const r = exchange('tcp', 'gateway', hugeMsg);
      assert.equal(r.answer, undefined);
      assert.match(r.error ?? '', /^(closed|read ECONNRESET|write EPIPE)$/, 'the connection is closed on it');
      assert.deepEqual(upstreamGot(huge), [], 'nothing upstream');

      const padded = `padded-${unique()}.example.test`;
      const paddedMsg = query(padded, { additionals: pad(padded, 3000) });
      assert.equal(exchange('tcp', 'gateway', paddedMsg).rcode, 3);
      const [got] = upstreamGot(padded);
      assert.equal(got.wire.length, 12 + padded.length + 2 + 4, 'header and question only');
      assert.ok(!got.wire.includes('pad-secret'));
    });
  });
});
