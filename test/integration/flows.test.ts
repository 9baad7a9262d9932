// The flow log with real traffic against a daemon in the testbed: a sandbox's curls to the
// testbed's internet appear as open and closed records with the right sandbox, destination,
// ports, the name it resolved, and bytes each way that agree with what curl counted; the
// CLI shows them (`events --flows --json`); another sandbox's flows never show under the
// first's filter; a second instance with a tiny flowRetention keeps no more than that; no
// event is lost. TIME_WAIT is shortened in the testbed's host namespace (a test namespace)
// so that entries expire within a second instead of after 120 s; the closed record still
// waits for conntrack's garbage collector to reap the entry, whose scans come up to 60 s
// apart (gc_worker, GC_SCAN_INTERVAL_MAX): hence waits of up to two minutes.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { ToastnetClient } from '../../src/api/client.js';
import type { FlowRecord } from '../../src/api/types.js';
import { Testbed, WAN } from '../testbed/testbed.js';
import { waitFor } from '../helpers/wait.js';

const I = 'flows';
const R = 'flowsr';
const RETENTION = 3;
const METRICS_PORT = 9477;

describe('flow log: conntrack events as per-sandbox flow records', { timeout: 600_000 }, () => {
  let tb: Testbed;
  let cl: ToastnetClient;
  let small: ToastnetClient;
  let smallConfig: string;
  let mainConfig: string;
  const daemons: ChildProcess[] = [];

  before(async () => {
    tb = await Testbed.create();
    cl = new ToastnetClient(tb.socketPath(I));
    small = new ToastnetClient(tb.socketPath(R));
    smallConfig = path.join(tb.dir, 'small.json');
    fs.writeFileSync(smallConfig, JSON.stringify({ subnet: '10.167.0.0/16', flowRetention: RETENTION }));
    mainConfig = path.join(tb.dir, 'main.json');
    fs.writeFileSync(mainConfig, JSON.stringify({ metricsListen: String(METRICS_PORT) }));
    assert.equal(tb.toastnet(I, ['up']).code, 0);
    const upSmall = tb.toastnet(R, ['up'], { extraFlags: ['--config', smallConfig] });
    assert.equal(upSmall.code, 0, upSmall.stderr);
    // `up` turned accounting on in the host namespace it runs in (the testbed's).
    assert.equal(tb.sh(tb.hostNs, ['cat', '/proc/sys/net/netfilter/nf_conntrack_acct']).trim(), '1');
    tb.sh(tb.hostNs, ['sysctl', '-qw', 'net.netfilter.nf_conntrack_tcp_timeout_time_wait=1']);
    daemons.push(tb.startDaemon(I, ['--config', mainConfig]), tb.startDaemon(R, ['--config', smallConfig]));
    await waitFor(() => cl.ping(), 'the daemon to answer');
    await waitFor(() => small.ping(), 'the second daemon to answer');
    await cl.create({ name: 'a', policy: { egress: { domains: ['example.test'] } } });
    await cl.create({ name: 'b' });
    await small.create({ name: 'c' });
  });
  after(async () => {
    tb?.toastnet(I, ['down']);
    tb?.toastnet(R, ['down'], { extraFlags: ['--config', smallConfig] });
    await tb?.destroy();
  });

  /** curl from a sandbox, printing what it counted: body bytes down, bytes up, its local port. */
  const curl = (instance: string, sb: string, url: string, flags: string[] = []) => {
    const r = tb.inSandbox(instance, sb, ['curl', '-sS', '--max-time', '5', '-o', '/dev/null', '-w', '%{size_download} %{size_header} %{size_request} %{local_port}', ...flags, url], 20_000);
    assert.equal(r.code, 0, r.stderr);
    const [body, headers, request, port] = r.stdout.trim().split(' ').map(Number);
    return { body, headers, request, port };
  };
  const flowRecord = async (sb: string, sport: number, state: 'open' | 'closed'): Promise<FlowRecord> => {
    let found: FlowRecord | undefined;
    await waitFor(async () => {
      found = (await cl.flows({ sandbox: sb, limit: 1000 })).flows.find((f) => f.sport === sport && f.state === state);
      return found !== undefined;
    }, `the ${state} record of ${sb}'s flow from port ${sport}`, 120_000, 200);
    return found!;
  };
  const closedFlow = (sb: string, sport: number) => flowRecord(sb, sport, 'closed');

  it('a curl by name: open and closed records with sandbox, tuple, name, and the bytes curl counted', async () => {
    const c = curl(I, 'a', 'http://example.test/');
    const closed = await closedFlow('a', c.port);
    const open = (await cl.flows({ sandbox: 'a', limit: 1000 })).flows.find((f) => f.sport === c.port && f.state === 'open');
    assert.ok(open, 'an open record too');
    assert.equal(open.conntrackId, closed.conntrackId);
    for (const f of [open, closed]) {
      assert.equal(f.sandbox, 'a');
      assert.equal(f.proto, 'tcp');
      assert.equal(f.dst, WAN.internet);
      assert.equal(f.dport, 80);
      assert.equal(f.name, 'example.test');
    }
    assert.ok(closed.end && Date.parse(closed.end) >= Date.parse(closed.start));
    assert.ok(closed.sent && closed.received && closed.received.bytes > c.body);
  });

  it('bytes and packets each way agree with what curl sent and read', async () => {
    // From the sandbox without name checks: a 3 KB request, several segments each way.
    const c = curl(I, 'b', `http://${WAN.internet}/`, ['-H', 'X-Pad: ' + 'p'.repeat(3000)]);
    const closed = await closedFlow('b', c.port);
    // conntrack counts IP packets (headers included): what curl read and wrote plus at most
    // 40 bytes of IP and TCP header per packet (52 with timestamps: 12 more), and the handshake.
    const { sent, received } = closed;
    assert.ok(sent && received);
    const within = (bytes: number, payload: number, packets: number, what: string) =>
      assert.ok(bytes >= payload + packets * 40 && bytes <= payload + packets * 60, `${what}: ${bytes} bytes in ${packets} packets for ${payload} bytes of payload`);
    within(received.bytes, c.body + c.headers, received.packets, 'received');
    within(sent.bytes, c.request, sent.packets, 'sent');
    assert.ok(c.request > 3000, 'the request carried the padding');
  });

  it('`events --flows --json` shows them; a flow of another sandbox never shows under the first\'s filter', async () => {
    const b = curl(I, 'b', `http://${WAN.internet2}/`);
    await flowRecord('b', b.port, 'open');
    const a = curl(I, 'a', 'http://example.test/');
    await flowRecord('a', a.port, 'open');
    const r = tb.toastnet(I, ['events', '--flows', '--json', '--sandbox', 'a', '--limit', '1000']);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as FlowRecord);
    assert.ok(lines.some((f) => f.sport === a.port), 'a\'s flow is listed');
    assert.ok(lines.every((f) => f.sandbox === 'a' && f.src !== undefined && f.dst !== WAN.internet2), `only a's flows: ${r.stdout}`);
    const all = (await cl.flows({ limit: 1000 })).flows;
    assert.ok(all.some((f) => f.sandbox === 'b' && f.sport === b.port), 'b\'s flow is in the unfiltered log');
    const text = tb.toastnet(I, ['events', '--flows', '--sandbox', 'b']);
    assert.match(text.stdout, new RegExp(`b  open    tcp \\S+:${b.port} > ${WAN.internet2.replaceAll('.', '\\.')}:80`));
  });

  it('long polling: a waiting reader gets the next record when it comes', async () => {
    const since = (await cl.flows({ limit: 1 })).flows.at(-1)?.id ?? 0;
    const waiting = cl.flows({ sandbox: 'b', since, waitMs: 20_000 });
    const t0 = performance.now();
    curl(I, 'b', `http://${WAN.internet}/`);
    const got = await waiting;
    assert.ok(got.flows.length > 0 && got.flows.every((f) => f.sandbox === 'b' && f.id > since));
    assert.ok(performance.now() - t0 < 15_000);
  });

  it('a second instance keeps to its tiny flowRetention and sees only its own subnet\'s flows', async () => {
    for (let i = 0; i < 4; i++) curl(R, 'c', `http://${WAN.internet}/`);
    await waitFor(async () => ((await small.flows({ limit: 1 })).counts?.recorded ?? 0) >= 2 * 4, 'eight records written', 120_000, 200);
    const kept = (await small.flows({ limit: 1000 })).flows;
    assert.equal(kept.length, RETENTION);
    assert.ok(kept.every((f) => f.sandbox === 'c' && f.src.startsWith('10.167.')));
    assert.ok((await cl.flows({ limit: 1000 })).flows.every((f) => f.src.startsWith('10.166.')), 'the first instance never records the second\'s');
  });

  it('denials by reason are exact counts (the kernel\'s counter in each deny chain), whatever the log sampled', async () => {
    const metric = () => {
      const text = tb.sh(tb.hostNs, ['curl', '-s', `http://127.0.0.1:${METRICS_PORT}/metrics`]);
      const m = /^toastnet_denied_packets_total\{reason="private",action="blocked"\} (\d+)$/m.exec(text);
      assert.ok(m, 'the metric is served');
      return Number(m[1]);
    };
    const before = metric();
    // 30 refused connections in a row: more than the denial log's burst would need, each one SYN (reset at once).
    const r = tb.inSandbox(I, 'b', ['sh', '-c', `for i in $(seq 30); do curl -s --max-time 2 http://${WAN.private10}/; done; true`], 60_000);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(metric() - before, 30);
  });

  it('nothing was lost', async () => {
    for (const c of [cl, small]) {
      const counts = (await c.flows({ limit: 1 })).counts;
      assert.ok(counts, 'a daemon answers with its counts');
      assert.deepEqual(counts.dropped, { kernel: 0, daemon: 0 });
    }
  });
});
