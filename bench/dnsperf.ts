// dnsperf (Debian's package, the field's standard DNS load tool) and a dnsmasq peer for
// bench:dns: run inside a namespace with nsenter, and read back what dnsperf reports.
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import type { Testbed } from '../test/testbed/testbed.js';

export interface DnsperfResult {
  qps: number;
  sent: number;
  lost: number;
  /** "NOERROR 100.00%"-style summary of the response codes. */
  rcodes: string;
  /** Average latency (ms) as dnsperf reports it. */
  avgMs: number;
}

/** Reads dnsperf's statistics block. */
export function parseDnsperf(out: string): DnsperfResult {
  const num = (re: RegExp): number => {
    const m = re.exec(out);
    if (!m) throw new Error(`dnsperf printed no ${re.source}:\n${out.slice(-600)}`);
    return Number(m[1]);
  };
  return {
    qps: num(/Queries per second:\s+([\d.]+)/),
    sent: num(/Queries sent:\s+(\d+)/),
    lost: num(/Queries lost:\s+(\d+)/),
    rcodes: /Response codes:\s+(.*)/.exec(out)?.[1].trim() ?? '',
    avgMs: num(/Average Latency \(s\):\s+([\d.]+)/) * 1000,
  };
}

/**
 * dnsperf from the namespace `ns` (a path under /run/netns) against `server`: `inFlight`
 * queries outstanding (-q) from one client socket, the data file's queries in a loop for
 * `seconds` (or once through, with `once`).
 */
export function dnsperf(ns: string, server: string, dataFile: string, seconds: number, inFlight: number, once = false): DnsperfResult {
  const args = ['-s', server, '-d', dataFile, '-c', '1', '-q', String(inFlight), '-l', String(seconds), '-t', '2', ...(once ? ['-n', '1'] : [])];
  const r = spawnSync('nsenter', [`--net=${ns}`, 'dnsperf', ...args], { encoding: 'utf8', timeout: (seconds + 30) * 1000 });
  if (r.status !== 0) throw new Error(`dnsperf ${args.join(' ')} exited ${r.status ?? r.signal}: ${r.stderr}${r.stdout.slice(-300)}`);
  return parseDnsperf(r.stdout);
}

/** A dnsperf data file of `names`, one A query each; returns its path. */
export function queryFile(dir: string, file: string, names: Iterable<string>): string {
  const p = path.join(dir, file);
  const fd = fs.openSync(p, 'w');
  try {
    let chunk: string[] = [];
    for (const n of names) {
      chunk.push(`${n} A\n`);
      if (chunk.length === 10_000) {
        fs.writeSync(fd, chunk.join(''));
        chunk = [];
      }
    }
    fs.writeSync(fd, chunk.join(''));
  } finally {
    fs.closeSync(fd);
  }
  return p;
}

/** `count` names never asked before (`tag` makes them unique to one row of one run). */
export function* uniqueNames(tag: string, count: number): Generator<string> {
  for (let i = 0; i < count; i++) yield `m${tag}-${i}.load.test`;
}

/**
 * dnsmasq as a peer resolver in the testbed's namespace `ns` on `listen`: a caching
 * forwarder to `upstream` (the fake internet's DNS server), no hosts file, no resolv.conf,
 * no DHCP, logging nothing per query. Resolves once it answers; the testbed kills it on destroy.
 */
export async function startDnsmasq(tb: Testbed, ns: string, listen: string, upstream: string): Promise<ChildProcess> {
  tb.sh(ns, ['ip', 'addr', 'add', `${listen}/32`, 'dev', 'lo']);
  const p = tb.background(ns, [
    'dnsmasq', '--keep-in-foreground', '--conf-file=/dev/null', '--no-hosts', '--no-resolv', '--user=root', '--pid-file=',
    `--listen-address=${listen}`, '--bind-interfaces', `--server=${upstream}`, '--cache-size=10000', '--log-facility=-',
  ]);
  let err = '';
  p.stderr!.on('data', (d) => (err += d));
  p.stdout!.resume();
  for (let i = 0; i < 100; i++) {
    if (p.exitCode !== null) throw new Error(`dnsmasq exited ${p.exitCode}: ${err}`);
    const r = spawnSync('nsenter', [`--net=/run/netns/${ns}`, 'dig', '+short', '+time=1', '+tries=1', `@${listen}`, 'example.test'], { encoding: 'utf8' });
    if (r.stdout.trim() !== '') return p;
    await new Promise((res) => setTimeout(res, 50));
  }
  throw new Error(`dnsmasq did not answer on ${listen}: ${err}`);
}
