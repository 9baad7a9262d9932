// The README's first command ends here: a self-contained demonstration in its own
// namespaces (this machine needs no internet): toastnet sets up a host, creates a
// sandbox, and the sandbox reaches "the internet" by name while metadata, private
// ranges, the host and IPv6 stay closed. Everything is removed at the end.
import { Testbed, WAN } from '../test/testbed/testbed.js';

const say = (s: string) => process.stdout.write(`${s}\n`);

async function main(): Promise<void> {
  const tb = await Testbed.create();
  const I = `demo${tb.run.slice(2, 8)}`;
  let failures = 0;
  const check = (what: string, ok: boolean, detail: string) => {
    if (!ok) failures++;
    say(`  ${ok ? 'ok  ' : 'FAIL'} ${what.padEnd(46)} ${detail}`);
  };
  try {
    say(`testbed: host namespace ${tb.hostNs}, fake internet ${tb.wanNs} (203.0.113.0/24)`);
    say(`$ toastnet up`);
    say(tb.toastnet(I, ['up']).stdout.replace(/^/gm, '  ').trimEnd());
    const t0 = performance.now();
    const c = tb.toastnet(I, ['create', 'toaster', '--json']);
    if (c.code !== 0) throw new Error(c.stderr);
    const s = JSON.parse(c.stdout);
    say(`$ toastnet create toaster   # ${s.ip} in ${s.netns} (first create also starts the daemon: ${(performance.now() - t0).toFixed(0)} ms)`);
    say('what the sandbox can reach:');
    const get = (url: string) => tb.curl(I, 'toaster', url);
    let r = get('http://example.test/');
    check('internet by name (DNS via the gateway)', r.stdout === 'internet', r.stdout || r.stderr.trim());
    for (const [what, url] of [
      ['cloud metadata 169.254.169.254', `http://${WAN.metadata}/`],
      ['private VPC server 172.16.5.5:5432', `http://${WAN.vpc}:5432/`],
      ['private 10.0.0.0/8 and 192.168.0.0/16', `http://${WAN.private10}/`],
      ['host service on the gateway 10.166.0.1:8080', 'http://10.166.0.1:8080/'],
      ['host service on the uplink 192.0.2.2:8080', `http://${WAN.hostUplink}:8080/`],
    ]) {
      r = get(url);
      check(`${what} blocked`, r.code !== 0, r.stderr.trim().replace(/^curl: /, ''));
    }
    r = tb.toastnet(I, ['run', '--', 'sh', '-c', 'exit 42']);
    check('toastnet run passes the exit code through', r.code === 42, `exit ${r.code}`);
  } finally {
    tb.toastnet(I, ['down']);
    await tb.destroy();
    say('cleaned up: namespaces, links, nftables table, daemon');
  }
  if (failures > 0) process.exit(1);
}

main().catch((err) => {
  process.stderr.write(`demo: ${(err as Error).message}\n`);
  process.exit(1);
});
