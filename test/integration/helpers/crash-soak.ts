// Crash consistency by fault injection: a stream of mixed API operations (create, with and
// without limits, veth and macvlan; rm; acquisition from the warm pool; policy set; up)
// against a daemon that is SIGKILLed at a random moment, restarted and gc'd, round after
// round. After each restart the instance is audited against its store: what the kernel
// holds (namespaces, host links, /etc/netns entries, set elements, named objects) belongs
// to a row, each row has what it needs, no address is leased twice; and the API's answers
// before the kill hold: a sandbox reported created works or is cleanly absent, one reported
// removed is absent. Shared by crash-soak.test.ts (100 kills) and bench/soak.ts (1,000).
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { ToastnetClient } from '../../../src/api/client.js';
import { ToastnetError } from '../../../src/errors.js';
import { instanceNames, isPoolMember, netnsName, sandboxIdFromLink, sandboxLinkName } from '../../../src/core/names.js';
import { ipHex } from '../../../src/core/sandbox-limits.js';
import type { Testbed } from '../../testbed/testbed.js';
import { waitFor } from '../../helpers/wait.js';
import { prng, intIn } from '../../unit/prng.js';

export interface SoakOptions {
  rounds: number;
  seed: number;
  /** Operations in flight at once. */
  streams?: number;
  /** The kill comes this long (ms, uniform) after the daemon answered. */
  killAfterMs?: [number, number];
  /** Warm pool size of the daemon (creates acquire its members). */
  poolSize?: number;
  /** Sandboxes checked with packets after each round. */
  probesPerRound?: number;
  log?: (line: string) => void;
}

export interface SoakReport {
  rounds: number;
  operations: { sent: number; reported: number; lostInCrash: number };
  createdThenAbsent: number;
  problems: string[];
  restartMs: number[];
}

type Fate = 'created' | 'removed' | 'unknown';

const POLICIES = [
  {},
  { limits: { egressRate: '10mbit', maxConnections: 64 } },
  { egress: { internet: false } },
  { egress: { deny: ['203.0.113.20/32'] }, limits: { packetsPerSecond: 5000 } },
];

/** Leases and rows as the store holds them (read-only, beside the running daemon). */
function storeView(stateDir: string): { rows: { id: number; name: string; ip: string; mode: string; state: string }[]; released: number[] } {
  const db = new Database(path.join(stateDir, 'state.db'), { readonly: true, fileMustExist: true });
  try {
    return {
      rows: db.prepare('SELECT id, name, ip, mode, state FROM sandboxes').all() as { id: number; name: string; ip: string; mode: string; state: string }[],
      released: (db.prepare('SELECT ip FROM released').all() as { ip: number }[]).map((r) => r.ip),
    };
  } finally {
    db.close();
  }
}

const ipNumber = (ip: string) => ip.split('.').reduce((n, o) => n * 256 + Number(o), 0);

/** What the kernel holds of the instance that no row accounts for, and what rows lack. */
export function audit(tb: Testbed, instance: string, stateDir: string): string[] {
  const problems: string[] = [];
  const names = instanceNames(instance);
  const { rows, released } = storeView(stateDir);
  const ips = new Set(rows.map((r) => r.ip));
  if (ips.size !== rows.length) problems.push(`an address leased twice: ${rows.map((r) => r.ip).join(',')}`);
  for (const ip of released) if (ips.has([24, 16, 8, 0].map((s) => (ip >>> s) & 255).join('.'))) problems.push(`address ${ip} both released and leased`);
  for (const r of rows) if (r.state !== 'ready') problems.push(`row ${r.name} left in state ${r.state}`);

  const wantNs = new Set(rows.map((r) => netnsName(names, r.name)));
  const ns = fs.readdirSync('/run/netns').filter((n) => n.startsWith(names.netnsPrefix));
  for (const n of ns) if (!wantNs.has(n)) problems.push(`leaked namespace ${n}`);
  for (const n of wantNs) if (!ns.includes(n)) problems.push(`row without namespace ${n}`);
  const etc = fs.existsSync('/etc/netns') ? fs.readdirSync('/etc/netns').filter((n) => n.startsWith(names.netnsPrefix)) : [];
  for (const n of etc) if (!wantNs.has(n)) problems.push(`leaked /etc/netns/${n}`);

  const ids = new Set(rows.map((r) => r.id));
  const links = (JSON.parse(tb.sh(tb.hostNs, ['ip', '-j', 'link', 'show'])) as { ifname: string }[]).map((l) => l.ifname);
  for (const l of links) {
    const id = sandboxIdFromLink(names, l);
    if (id !== undefined && !ids.has(id)) problems.push(`leaked link ${l}`);
  }
  for (const r of rows) if (r.mode === 'veth' && !links.includes(sandboxLinkName(names, r.id))) problems.push(`row ${r.name} without its link`);

  const table = JSON.parse(tb.sh(tb.hostNs, ['nft', '-j', 'list', 'table', 'inet', instance])).nftables as Record<string, { name: string; elem?: unknown[] }>[];
  const hexes = new Set(rows.map((r) => ipHex(r.ip)));
  for (const item of table) {
    const set = item.set ?? item.map;
    if (set?.elem && !['dns_allowed', 'dns_flood', 'conn_flood'].includes(set.name)) {
      for (const e of set.elem) {
        // Every element names its sandbox by address somewhere in it (key, concatenation or range).
        const text = JSON.stringify(e);
        const addrs = [...text.matchAll(/\b(\d{1,3}(?:\.\d{1,3}){3})\b/g)].map((m) => m[1]).filter((a) => ipNumber(a) !== 0);
        if (addrs.length > 0 && !addrs.some((a) => ips.has(a))) problems.push(`element of no sandbox in ${set.name}: ${text}`);
      }
    }
    for (const kind of ['limit', 'quota'] as const) {
      const obj = item[kind];
      const hex = obj && /_([0-9a-f]{8})(?:_|$)/.exec(obj.name)?.[1];
      if (hex && !hexes.has(hex)) problems.push(`named ${kind} of no sandbox: ${obj.name}`);
    }
  }
  const admitted = new Set<string>();
  for (const item of table) {
    const set = item.set;
    if (set && ['veth_src', 'macvlan_src'].includes(set.name)) for (const e of set.elem ?? []) for (const m of JSON.stringify(e).matchAll(/\b(\d{1,3}(?:\.\d{1,3}){3})\b/g)) admitted.add(m[1]);
  }
  // Idle pool members hold an address but are admitted only when acquired.
  for (const r of rows) if (!isPoolMember(r.name) && !admitted.has(r.ip)) problems.push(`row ${r.name} (${r.ip}) not admitted in the kernel`);
  return problems;
}

export async function crashSoak(tb: Testbed, instance: string, o: SoakOptions): Promise<SoakReport> {
  const rnd = prng(o.seed);
  const stateDir = path.join(tb.dir, instance, 'state');
  const cl = new ToastnetClient(tb.socketPath(instance));
  const fate = new Map<string, Fate>();
  const report: SoakReport = { rounds: 0, operations: { sent: 0, reported: 0, lostInCrash: 0 }, createdThenAbsent: 0, problems: [], restartMs: [] };
  const [killLo, killHi] = o.killAfterMs ?? [20, 400];
  let next = 0;

  const configFile = path.join(tb.dir, `${instance}.soak.json`);
  fs.writeFileSync(configFile, JSON.stringify({ poolSize: o.poolSize ?? 3 }));
  const start = async () => {
    const t0 = performance.now();
    const d = tb.startDaemon(instance, ['--config', configFile]);
    let out = '';
    d.stderr?.on('data', (x) => (out += x));
    await waitFor(async () => {
      if (d.exitCode !== null) throw new Error(`the daemon exited ${d.exitCode}: ${out}`);
      return cl.ping();
    }, () => `the daemon to answer: ${out}`, 30_000);
    report.restartMs.push(performance.now() - t0);
    return d;
  };

  // The daemon restarted and audited after one kill is the one the next round's operations
  // run against (and kill).
  let daemon = await start();
  for (let round = 0; round < o.rounds; round++) {
    let alive = true;
    const op = async (): Promise<void> => {
      const created = [...fate].filter(([, f]) => f === 'created').map(([n]) => n);
      const pick = intIn(rnd, 0, 99);
      report.operations.sent++;
      let name = '';
      try {
        // Creates outnumber removals until 100 live, then removals win: the instance stays
        // about that size over a thousand rounds instead of growing without end.
        if (created.length < 3 || pick < (created.length < 100 ? 45 : 25)) {
          name = `s${next++}`;
          fate.set(name, 'unknown');
          await cl.create({ name, mode: intIn(rnd, 0, 3) === 0 ? 'macvlan' : 'veth', policy: POLICIES[intIn(rnd, 0, POLICIES.length - 1)] });
          fate.set(name, 'created');
        } else if (pick < (created.length < 100 ? 80 : 75)) {
          name = created[intIn(rnd, 0, created.length - 1)];
          fate.set(name, 'unknown');
          await cl.remove(name);
          fate.set(name, 'removed');
        } else if (pick < 97) {
          name = created[intIn(rnd, 0, created.length - 1)];
          await cl.policySet(name, POLICIES[intIn(rnd, 0, POLICIES.length - 1)]);
          name = '';
        } else {
          await cl.up();
        }
        report.operations.reported++;
      } catch (err) {
        if (err instanceof ToastnetError && alive) {
          // Refused while the daemon lived (a name removed meanwhile by another stream): nothing changed.
          if (name && fate.get(name) === 'unknown') fate.set(name, err.code === 'not_found' ? 'removed' : 'created');
          if (!name) return;
        }
        report.operations.lostInCrash++;
      }
    };
    const streams = Array.from({ length: o.streams ?? 4 }, async () => {
      while (alive) await op();
    });
    await new Promise((r) => setTimeout(r, intIn(rnd, killLo, killHi)));
    daemon.kill('SIGKILL');
    alive = false;
    await Promise.all(streams);
    await new Promise<void>((r) => (daemon.exitCode !== null || daemon.signalCode !== null ? r() : daemon.once('exit', () => r())));

    daemon = await start();
    await cl.gc();
    // Audit a quiet instance: the pool topped up again, no member half-built.
    let last = '';
    await waitFor(async () => {
      const st = await cl.status();
      const rows = storeView(stateDir).rows;
      last = `pool ${JSON.stringify(st.pool)}, rows not ready: ${rows.filter((r) => r.state !== 'ready').map((r) => r.name).join(',') || 'none'}`;
      return st.pool.idle >= (o.poolSize ?? 3) && rows.every((r) => r.state === 'ready');
    }, () => `round ${round}: the warm pool to fill again (${last})`, 60_000);
    const listed = new Set((await cl.list()).map((s) => s.name));
    for (const [name, f] of fate) {
      if (f === 'removed' && listed.has(name)) report.problems.push(`round ${round}: ${name} reported removed but listed`);
      if (f === 'created' && !listed.has(name)) {
        report.createdThenAbsent++;
        fate.set(name, 'removed');
      }
      if (f === 'unknown') fate.set(name, listed.has(name) ? 'created' : 'removed');
    }
    for (const p of audit(tb, instance, stateDir)) report.problems.push(`round ${round}: ${p}`);
    const live = [...fate].filter(([, f]) => f === 'created').map(([n]) => n);
    for (let i = 0; i < (o.probesPerRound ?? 1) && live.length; i++) {
      const name = live[intIn(rnd, 0, live.length - 1)];
      const gw = (await cl.get(name)).gateway;
      const ns = (await cl.get(name)).netns;
      const r = tb.try(tb.hostNs, ['ip', 'netns', 'exec', ns.split('/').pop()!, 'dig', '+short', '+tries=2', '+time=2', `@${gw}`, 'example.test'], 30_000);
      if (!r.stdout.includes('203.0.113.10')) report.problems.push(`round ${round}: ${name} reported created but its DNS does not work: ${r.stdout}${r.stderr}`);
    }
    // Forget the removed, so the model stays small over a thousand rounds.
    for (const [name, f] of fate) if (f === 'removed') fate.delete(name);
    report.rounds++;
    o.log?.(`round ${round}: ${report.operations.reported} reported, ${fate.size} live, ${report.problems.length} problems`);
  }
  daemon.kill('SIGKILL');
  await new Promise<void>((r) => (daemon.exitCode !== null || daemon.signalCode !== null ? r() : daemon.once('exit', () => r())));
  return report;
}
