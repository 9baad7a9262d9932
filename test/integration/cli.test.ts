// CLI surface that needs no traffic: doctor, version, status before up, help and its
// examples, config errors, exit codes of run and exec, ls/rm/down for scripts.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync, spawn } from 'node:child_process';
import { CLI, Testbed } from '../testbed/testbed.js';
import { waitFor } from '../helpers/wait.js';

// dist/test/integration/cli.test.js -> the repository's package.json.
const VERSION = (JSON.parse(fs.readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string }).version;

/** Whether a process named `comm` runs in the network namespace /run/netns/`ns`. */
function runsIn(ns: string, comm: string): boolean {
  const ino = fs.statSync(`/run/netns/${ns}`).ino;
  return fs.readdirSync('/proc').some((pid) => {
    try {
      return /^\d+$/.test(pid) && fs.readlinkSync(`/proc/${pid}/ns/net`) === `net:[${ino}]` && fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === comm;
    } catch {
      return false; // exited meanwhile
    }
  });
}

describe('cli', () => {
  let tb: Testbed;
  const I = `m${Date.now().toString(36)}`;
  before(async () => {
    tb = await Testbed.create({ hostService: false });
  });
  after(async () => {
    await tb?.destroy();
  });

  it('doctor finds every feature on this machine and leaves nothing behind', () => {
    const before = fs.readdirSync('/run/netns').length;
    const r = tb.toastnet(I, ['doctor', '--json']);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const checks = JSON.parse(r.stdout) as { name: string; ok: boolean }[];
    assert.ok(checks.length >= 9);
    assert.ok(checks.every((c) => c.ok), JSON.stringify(checks.filter((c) => !c.ok)));
    assert.ok(checks.some((c) => c.name === 'macvlan'));
    assert.ok(checks.some((c) => c.name.startsWith('bandwidth shaping')), 'the qdiscs and filters limits use');
    assert.ok(checks.some((c) => c.name.startsWith('the name gate\'s queue')), 'the xtables target name checks use');
    // A /run/netns that is not tmpfs works, with a note on what it costs.
    const runDir = checks.find((c) => c.name.startsWith('/run/netns filesystem')) as { advice?: string } | undefined;
    assert.ok(runDir);
    const tmpfs = execFileSync('stat', ['-f', '-c', '%T', '/run/netns'], { encoding: 'utf8' }).trim() === 'tmpfs';
    assert.equal(runDir.advice === undefined, tmpfs, JSON.stringify(runDir));
    assert.equal(fs.readdirSync('/run/netns').length, before);
  });

  it('--version and -V print the package version and exit 0', () => {
    for (const flag of ['--version', '-V']) {
      const r = tb.toastnet(I, [flag]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, `${VERSION}\n`);
    }
  });

  it('status before up says down, counts nothing and names the version; ls is empty', () => {
    const s = JSON.parse(tb.toastnet(I, ['status', '--json']).stdout);
    assert.equal(s.version, VERSION);
    assert.match(tb.toastnet(I, ['status']).stdout, new RegExp(`^version +${VERSION.replace(/\./g, '\\.')}$`, 'm'));
    assert.equal(s.up, false);
    assert.equal(s.sandboxes, 0);
    assert.equal(s.daemon, null);
    assert.equal(tb.toastnet(I, ['ls', '--json']).stdout.trim(), '[]');
  });

  it('help exits 0; an unknown flag exits 2 with one line', () => {
    assert.equal(tb.toastnet(I, ['--help']).code, 0);
    const r = tb.toastnet(I, ['create', '--colour', 'red']);
    assert.equal(r.code, 2);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  });

  it('a config file with an unknown key or a bad value is refused, naming file and key', () => {
    const f = path.join(tb.dir, 'bad.json');
    fs.writeFileSync(f, JSON.stringify({ subnet: '10.166.0.0/16', colour: 'red' }));
    let r = tb.toastnet(I, ['status'], { extraFlags: ['--config', f] });
    assert.equal(r.code, 2);
    assert.match(r.stderr, new RegExp(`config file ${f}: unknown key "colour"`));
    fs.writeFileSync(f, JSON.stringify({ allowCidrs: ['172.16.5.5:99999/tcp'] }));
    r = tb.toastnet(I, ['status'], { extraFlags: ['--config', f] });
    assert.equal(r.code, 2);
    assert.match(r.stderr, /allowCidrs/);
    r = tb.toastnet(I, ['status'], { env: { TOASTNET_SUBNET: '10.166.0.0/40' } });
    assert.equal(r.code, 2);
    assert.match(r.stderr, /environment: key "subnet"/);
  });

  it('run removes its sandbox when interrupted (SIGINT) and exits with the command\'s code', async () => {
    const p = spawn('nsenter', [`--net=/run/netns/${tb.hostNs}`, process.execPath, CLI, ...tb.flags(I), 'run', '--name', 'interrupted', '--', 'sleep', '30'], { stdio: 'ignore' });
    const exited = new Promise<number | null>((r) => p.on('exit', (code) => r(code)));
    await waitFor(() => fs.existsSync(`/run/netns/${I}-interrupted`) && runsIn(`${I}-interrupted`, 'sleep'), 'the sandbox made and the command running in it');
    p.kill('SIGINT');
    assert.equal(await exited, 130);
    assert.equal(fs.existsSync(`/run/netns/${I}-interrupted`), false);
    assert.equal(tb.toastnet(I, ['inspect', 'interrupted']).code, 3);
    assert.equal(tb.toastnet(I, ['down']).code, 0);
  });

  it('every command\'s --help ends with an example; ls, run and exec document their flags and exit codes', () => {
    const commands = ['up', 'down', 'status', 'daemon', 'create', 'rm', 'ls', 'inspect', 'gc', 'exec', 'run', 'policy', 'policy get', 'policy set', 'events', 'stats', 'top', 'doctor'];
    const help = new Map<string, string>();
    for (const c of commands) {
      const r = tb.toastnet(I, [...c.split(' '), '--help']);
      assert.equal(r.code, 0, `${c}: ${r.stderr}`);
      assert.match(r.stdout, /\nExample:\n {2}\$ toastnet .+\n/, `${c} --help has no example`);
      help.set(c, r.stdout);
    }
    assert.match(help.get('ls')!, /-q, --quiet +names only/);
    assert.match(help.get('ls')!.replace(/\s+/g, ' '), /--filter <key=value> only sandboxes with mode=veth\|macvlan\|tap, name=GLOB \(\* and \?\), label=KEY or label=KEY=VALUE/);
    for (const c of ['create', 'run']) assert.match(help.get(c)!, /--label <key=value>/);
    assert.match(help.get('rm')!, /-f, --force/);
    for (const c of ['run', 'exec']) assert.match(help.get(c)!.replace(/\s+/g, ' '), /125 if toastnet itself failed .*126 if CMD cannot be executed, 127 if CMD was not found/);
  });

  it('run and exec exit with the command\'s code, 125 when toastnet fails, 126 when the command cannot be executed, 127 when it is not found', () => {
    const notExecutable = path.join(tb.dir, 'not-executable');
    fs.writeFileSync(notExecutable, 'echo never\n', { mode: 0o644 });
    const expect = (args: string[], code: number, stderr?: RegExp) => {
      const r = tb.toastnet(I, args);
      assert.equal(r.code, code, `${args.join(' ')}: ${r.stdout}${r.stderr}`);
      if (stderr) {
        assert.match(r.stderr, stderr);
        assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
      }
    };
    // toastnet's own failures: a bad flag (2 elsewhere), no such sandbox (3 elsewhere).
    expect(['run', '--colour', 'red', '--', 'true'], 125, /unknown option '--colour'/);
    expect(['exec', 'nosuch', '--', 'true'], 125, /no sandbox named "nosuch"/);
    // Checked before a sandbox is made: none is left either way.
    expect(['run', '--', 'no-such-command-tn'], 127, /^toastnet: no-such-command-tn: command not found\n$/);
    expect(['run', '--', notExecutable], 126, /not an executable file/);
    expect(['run', '--', tb.dir], 126, /not an executable file/);
    assert.equal(tb.toastnet(I, ['ls', '-q']).stdout, '');
    // The command's own code, through run (daemon started, sandbox made and removed) and exec.
    expect(['run', '--name', 'codes', '--', 'sh', '-c', 'exit 3'], 3);
    assert.equal(tb.toastnet(I, ['inspect', 'codes']).code, 3);
    assert.equal(tb.toastnet(I, ['create', 'kept']).code, 0);
    expect(['exec', 'kept', '--', 'sh', '-c', 'exit 42'], 42);
    expect(['exec', 'kept', '--', 'no-such-command-tn'], 127, /command not found/);
    expect(['exec', 'kept', '--', notExecutable], 126, /not an executable file/);
    expect(['run', '--name', 'kept', '--', 'true'], 125, /"kept"/); // the name is taken
    assert.equal(tb.toastnet(I, ['down']).code, 0);
  });

  it('ls -q and --filter; rm -f and --json; down --json: output for scripts', () => {
    for (const [name, mode] of [['a', 'veth'], ['b', 'macvlan'], ['job-1', 'veth']]) {
      const r = tb.toastnet(I, ['create', name, '--mode', mode]);
      assert.equal(r.code, 0, r.stderr);
    }
    const quiet = (...filters: string[]) => {
      const r = tb.toastnet(I, ['ls', '-q', ...filters.flatMap((f) => ['--filter', f])]);
      assert.equal(r.code, 0, r.stderr);
      return r.stdout;
    };
    assert.deepEqual(quiet().split('\n').sort(), ['', 'a', 'b', 'job-1']);
    assert.equal(quiet('mode=macvlan'), 'b\n');
    assert.equal(quiet('name=job-*'), 'job-1\n');
    assert.equal(quiet('mode=veth', 'name=?'), 'a\n');
    assert.equal(quiet('name=nothing*'), '');
    const veth = JSON.parse(tb.toastnet(I, ['ls', '--json', '--filter', 'mode=veth']).stdout) as { name: string }[];
    assert.deepEqual(veth.map((s) => s.name).sort(), ['a', 'job-1']);
    const table = tb.toastnet(I, ['ls', '--filter', 'mode=macvlan']).stdout.trim().split('\n');
    assert.equal(table.length, 2);
    assert.match(table[1], /^b +10\.166\.\S+ +macvlan /);
    for (const bad of [['ls', '--filter', 'colour=red'], ['ls', '--filter', 'mode=bridge'], ['ls', '-q', '--json']]) {
      const r = tb.toastnet(I, bad);
      assert.equal(r.code, 2, `${bad.join(' ')}: ${r.stderr}`);
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    }

    // Without --force a missing sandbox is an error (exit 3), after the others are removed.
    let r = tb.toastnet(I, ['rm', '--json', 'a', 'nosuch']);
    assert.equal(r.code, 3, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), { removed: ['a'], missing: ['nosuch'] });
    assert.match(r.stderr, /^toastnet: no sandbox named "nosuch"\n$/);
    r = tb.toastnet(I, ['rm', '-f', 'nosuch']);
    assert.deepEqual([r.code, r.stdout, r.stderr], [0, '', '']);
    r = tb.toastnet(I, ['rm', '--force', '--json', 'b', 'a']);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), { removed: ['b'], missing: ['a'] });
    assert.equal(quiet(), 'job-1\n');

    r = tb.toastnet(I, ['down', '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), { instance: I, sandboxes: 1 });
  });

  it('labels: create and run --label, shown by ls, ls --json and inspect, found by ls --filter label=; a bad one refused with one line', () => {
    let r = tb.toastnet(I, ['create', 'lab1', '--label', 'team=ml', '--label', 'app.kubernetes.io/name=web', '--label', 'tier', '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout).labels, { team: 'ml', 'app.kubernetes.io/name': 'web', tier: '' });
    r = tb.toastnet(I, ['run', '--keep', '--name', 'lab2', '--label', 'team=infra', '--', 'true']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(tb.toastnet(I, ['create', 'plain']).code, 0);
    const quiet = (...filters: string[]) => tb.toastnet(I, ['ls', '-q', ...filters.flatMap((f) => ['--filter', f])]).stdout;
    assert.equal(quiet('label=team=ml'), 'lab1\n');
    assert.equal(quiet('label=team'), 'lab1\nlab2\n');
    assert.equal(quiet('label=team', 'label=tier'), 'lab1\n');
    assert.equal(quiet('label=team=nobody'), '');
    const listed = JSON.parse(tb.toastnet(I, ['ls', '--json']).stdout) as { name: string; labels: Record<string, string> }[];
    assert.deepEqual(Object.fromEntries(listed.map((s) => [s.name, s.labels])), { lab1: { team: 'ml', 'app.kubernetes.io/name': 'web', tier: '' }, lab2: { team: 'infra' }, plain: {} });
    assert.deepEqual(JSON.parse(tb.toastnet(I, ['inspect', 'lab2', '--json']).stdout).labels, { team: 'infra' });
    const table = tb.toastnet(I, ['ls']).stdout.trim().split('\n');
    assert.match(table[0], /^NAME +IP +MODE +NETNS +CREATED +PUBLISH +LABELS$/);
    assert.match(table.find((l) => l.startsWith('lab1'))!, / app\.kubernetes\.io\/name=web,team=ml,tier=$/);
    for (const bad of [['create', 'lab3', '--label', 'bad key=x'], ['create', 'lab3', '--label', 'team=a b'], ['ls', '--filter', 'label=-x']]) {
      r = tb.toastnet(I, bad);
      assert.equal(r.code, 2, `${bad.join(' ')}: ${r.stderr}`);
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
      assert.match(r.stderr, /a label (key|value)/);
    }
    assert.equal(quiet('name=lab3'), '', 'nothing made for a bad label');
    assert.equal(tb.toastnet(I, ['down']).code, 0);
  });

  it('the auto-started daemon logs JSON lines (level, time, component, sandbox) to <runDir>/daemon.log, at --log-level', () => {
    const records = (instance: string) => fs.readFileSync(path.join(path.dirname(tb.socketPath(instance)), 'daemon.log'), 'utf8').split('\n').filter(Boolean)
      .map((l) => JSON.parse(l) as { level: string; time: string; component: string; sandbox?: string; msg: string; method?: string });
    const I2 = `${I}l`;
    for (const [instance, flags] of [[I2, ['--log-level', 'debug']], [`${I}w`, ['--log-level', 'warn']]] as const) {
      const r = tb.toastnet(instance, ['create', 'lg1'], { extraFlags: [...flags] });
      assert.equal(r.code, 0, r.stderr);
      assert.equal(tb.toastnet(instance, ['rm', 'lg1']).code, 0);
      assert.equal(tb.toastnet(instance, ['down']).code, 0);
    }
    const debug = records(I2);
    for (const r of debug) {
      assert.ok(['trace', 'debug', 'info', 'warn', 'error', 'fatal'].includes(r.level), JSON.stringify(r));
      assert.match(r.time, /^\d{4}-\d\d-\d\dT/);
      assert.ok(['daemon', 'api', 'dns', 'events', 'names', 'flows', 'pool', 'metrics'].includes(r.component), JSON.stringify(r));
    }
    assert.ok(debug.some((r) => r.component === 'daemon' && r.msg === 'ready'));
    assert.ok(debug.some((r) => r.component === 'api' && r.level === 'info' && r.sandbox === 'lg1' && r.method === 'POST'), 'the create, with its sandbox');
    assert.ok(debug.some((r) => r.component === 'api' && r.level === 'debug' && r.method === 'GET'), 'reads at debug');
    // At warn, a run without trouble logs nothing at all.
    assert.deepEqual(records(`${I}w`).filter((r) => r.level !== 'warn' && r.level !== 'error'), []);
  });
});
