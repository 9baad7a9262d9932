#!/usr/bin/env node
// The toastnet command line. Each command is a thin shell over the engine (in-process) or
// the daemon's API; errors print one line and exit with the catalogue's code.
import fs from 'node:fs';
import { spawn } from 'node:child_process';
import { Command, Option } from 'commander';
import { loadConfig } from '../config/load.js';
import { Config, ConfigInput } from '../config/schema.js';
import { ToastnetError, asToastnetError } from '../errors.js';
import { instanceNames, netnsName, validateSandboxName } from '../core/names.js';
import { netnsPath } from '../kernel/netns.js';
import type { SandboxInfo, Status } from '../api/types.js';
import { runDaemon } from '../daemon/run.js';
import { LOG_FILE_MAX_BYTES, createLogger, defaultTarget } from '../daemon/log.js';
import { LOG_LEVELS, type LogLevel } from '../config/schema.js';
import { runDoctor } from '../service/doctor.js';
import type { DenialEvent } from '../service/events.js';
import type { FlowList, FlowRecord } from '../api/types.js';
import { printable } from './terminal-text.js';
import { bashCompletion, zshCompletion } from './completion.js';
import { LINK_MODES, type SandboxMode } from '../core/link-modes.js';
import { PublishFlags, addPublishOption, publishFromFlags } from './publish-flags.js';
import { TapFlags, tapFromFlags } from './tap-flags.js';
import { client, daemonBackend, ensureDaemon, withBackend } from './instance.js';
import { PolicyFlags, addPolicyOptions, policyFromFlags } from './policy-flags.js';
import { formatStats, formatTop, topRows } from './stats-view.js';
import { formatSandboxes, formatStatus } from './instance-view.js';
import { toastnetVersion } from '../version.js';
import { sandboxFilter } from './list-filter.js';
import { parseLabelFlags } from '../core/labels.js';
import { CommandNotRunnable, EXEC_EXIT, findCommand } from './command-lookup.js';

interface GlobalOpts {
  config?: string;
  instance?: string;
  subnet?: string;
  gateway?: string;
  dns?: string;
  stateDir?: string;
  runDir?: string;
  logLevel?: LogLevel;
}

const program = new Command('toastnet')
  .description('Safe-by-default networks for sandboxes that run untrusted code')
  .version(toastnetVersion(), '-V, --version', 'print the version and exit')
  .option('--config <file>', 'config file (default /etc/toastnet/config.json if present)')
  .option('--instance <name>', 'instance name (default toastnet)')
  .option('--subnet <cidr>', 'sandbox subnet (default 10.166.0.0/16)')
  .option('--gateway <ip>', 'gateway address (default: first address of the subnet)')
  .option('--dns <upstreams>', 'DNS upstreams, comma-separated ip[:port]')
  .option('--state-dir <dir>', 'state directory')
  .option('--run-dir <dir>', 'runtime directory (socket, lock)')
  .addOption(new Option('--log-level <level>', 'the daemon\'s log level (default info)').choices(LOG_LEVELS))
  .showHelpAfterError(false)
  .configureOutput({ outputError: (str, write) => write(`toastnet: ${str.replace(/^error: /, '').trim()}\n`) })
  .exitOverride();

/** `--help` ends with this example of the command. */
function example(cmd: Command, line: string, more = ''): Command {
  return cmd.addHelpText('after', `\nExample:\n  $ ${line}${more ? `\n\n${more}` : ''}`);
}

/** Collects a repeatable option's values. */
const collect = (value: string, previous: string[]) => [...previous, value];

const LABEL_HELP = 'a label (KEY or KEY=VALUE, Kubernetes syntax; repeatable), for ls --filter label=... and metricsLabels';

/**
 * Set when `run` or `exec` is the command: they exit with their command's own code, so their
 * own failures exit 125 (see command-lookup.ts) instead of the catalogue's codes. Set
 * before the subcommand's flags are parsed, so a bad flag counts too.
 */
let runsACommand = false;
program.hook('preSubcommand', (_program, sub) => {
  runsACommand = sub.name() === 'run' || sub.name() === 'exec';
});
example(program, 'toastnet run -- curl -s https://example.com/');

function globals(cmd: Command): GlobalOpts {
  return cmd.optsWithGlobals() as GlobalOpts;
}

function config(cmd: Command): Config {
  const g = globals(cmd);
  const flags: Partial<ConfigInput> = {
    instance: g.instance,
    subnet: g.subnet,
    gateway: g.gateway,
    dnsUpstreams: g.dns?.split(',').map((s) => s.trim()).filter(Boolean),
    stateDir: g.stateDir,
    runDir: g.runDir,
    logLevel: g.logLevel,
  };
  return loadConfig({ flags, configFile: g.config });
}

/** The global flags again, for the background daemon to see the same configuration. */
function globalArgs(cmd: Command): string[] {
  const g = globals(cmd);
  const out: string[] = [];
  const add = (flag: string, v?: string) => v !== undefined && out.push(flag, v);
  add('--config', g.config);
  add('--instance', g.instance);
  add('--subnet', g.subnet);
  add('--gateway', g.gateway);
  add('--dns', g.dns);
  add('--state-dir', g.stateDir);
  add('--run-dir', g.runDir);
  add('--log-level', g.logLevel);
  return out;
}

const print = (s: string) => process.stdout.write(s.endsWith('\n') ? s : `${s}\n`);
const printJson = (v: unknown) => print(JSON.stringify(v, null, 2));

const printStatus = (s: Status) => print(formatStatus(s, toastnetVersion()));
const printSandboxes = (list: SandboxInfo[]) => print(formatSandboxes(list));

example(program.command('up'), 'toastnet up --persist')
  .description('set up the host side (gateway link, forwarding, nftables table); idempotent')
  .option('--persist', 'also write a systemd unit and sysctl file so the setup survives reboots')
  .option('--root <dir>', 'write --persist files under this directory instead of /', '/')
  .option('--json', 'print status as JSON')
  .action(async (o: { persist?: boolean; root: string; json?: boolean }, cmd: Command) => {
    const c = config(cmd);
    const s = await withBackend(c, (b) => b.up({ persist: o.persist, persistRoot: o.root }));
    if (o.json) printJson(s);
    else printStatus(s);
  });

example(program.command('down'), 'toastnet --instance ci-42 down --json')
  .description('remove everything this instance made: sandboxes, links, table, state, persisted files')
  .option('--root <dir>', 'where --persist files were written', '/')
  .option('--json', 'print what was removed: {"instance","sandboxes"}')
  .action(async (o: { root: string; json?: boolean }, cmd: Command) => {
    const c = config(cmd);
    const r = await withBackend(c, (b) => b.down({ persistRoot: o.root }));
    if (o.json) printJson({ instance: c.instance, sandboxes: r.sandboxes });
    else print(`down: removed instance ${c.instance} and ${r.sandboxes} sandbox(es)`);
  });

example(program.command('status'), 'toastnet status --json')
  .description('what is set up, sandboxes, free addresses, DNS upstreams, daemon')
  .option('--json', 'JSON output')
  .action(async (o: { json?: boolean }, cmd: Command) => {
    const s = await withBackend(config(cmd), (b) => b.status());
    if (o.json) printJson(s);
    else printStatus(s);
  });

example(program.command('daemon'), 'toastnet --config /etc/toastnet/config.json --log-level debug daemon')
  .description('run the daemon in the foreground: up, reconcile, DNS on the gateway, API on the socket; logs JSON lines (readable lines on a terminal)')
  .option('--log-file <file>', `log to this file instead, cut at ${LOG_FILE_MAX_BYTES / (1024 * 1024)} MiB with the previous one kept as FILE.1 (what the auto-start does)`)
  .action(async (o: { logFile?: string }, cmd: Command) => {
    const c = config(cmd);
    const root = createLogger(c.logLevel, o.logFile ? { kind: 'file', file: o.logFile } : defaultTarget());
    try {
      await runDaemon(c, root);
    } catch (err) {
      // The reason it stopped, as the log's last line (the auto-start reports it from there).
      const e = asToastnetError(err);
      root.child({ component: 'daemon' }).fatal({ code: e.code, ...(e.code === 'internal' ? { err } : {}) }, e.message);
      process.exit(e.exitCode);
    }
  });

addPublishOption(addPolicyOptions(example(program.command('create'), 'toastnet create web --domain pypi.org --publish 8080:80 --label team=ml --json')
  .description('create a sandbox network (starts the daemon if none runs)')
  .argument('[name]', 'sandbox name (default sbx-<id>)')
  .addOption(new Option('--mode <mode>', 'link type (default: the instance\'s defaultMode, veth unless configured)').choices(Object.keys(LINK_MODES)))
  .option('--no-vnet-hdr', 'tap: a device without IFF_VNET_HDR (no virtio-net offloads)')
  .option('--queues <n>', 'tap: queues the VMM opens (>1: a multiqueue device)')
  .option('--tap-owner <uid>', 'tap: uid that may open the device without CAP_NET_ADMIN (a jailed VMM)')
  .option('--tap-group <gid>', 'tap: gid that may open the device without CAP_NET_ADMIN')
  .option('--label <key=value>', LABEL_HELP, collect, [])
  .option('--json', 'JSON output (tap: the device, the namespace to start the VMM in, guestMac, kernelIp...)')))
  .action(async (name: string | undefined, o: { mode?: SandboxMode; label: string[]; json?: boolean } & TapFlags & PolicyFlags & PublishFlags, cmd: Command) => {
    if (name !== undefined) validateSandboxName(name);
    const policy = policyFromFlags(o);
    const publish = publishFromFlags(o);
    const tap = tapFromFlags(o);
    const labels = parseLabelFlags(o.label);
    const c = config(cmd);
    const cl = await ensureDaemon(c, globalArgs(cmd));
    const s = await cl.create({ name, ...(o.mode ? { mode: o.mode } : {}), ...(tap ? { tap } : {}), ...(policy ? { policy } : {}), ...publish, ...(o.label.length ? { labels } : {}) });
    if (o.json) printJson(s);
    else print(`${s.name} ${s.ip} ${s.netns}`);
  });

example(program.command('rm'), 'toastnet rm -f web job-1')
  .description('remove sandboxes (ends processes still inside them)')
  .argument('<names...>')
  .option('-f, --force', 'a sandbox that does not exist is no error (exit 0), for scripts')
  .option('--json', 'print what was removed: {"removed":[names],"missing":[names]}')
  .action(async (names: string[], o: { force?: boolean; json?: boolean }, cmd: Command) => {
    for (const n of names) validateSandboxName(n); // also keeps idle pool members out of reach
    const c = config(cmd);
    const removed: string[] = [];
    const missing: string[] = [];
    let failed: ToastnetError | undefined;
    await withBackend(c, async (b) => {
      for (const n of names) {
        try {
          await b.remove(n);
          removed.push(n);
        } catch (err) {
          const e = asToastnetError(err);
          if (e.code === 'not_found') {
            missing.push(n);
            if (o.force) continue;
          }
          failed ??= e;
          warn(e);
        }
      }
    });
    if (o.json) printJson({ removed, missing });
    // Each failure was printed as it happened; exit with the first one's code.
    if (failed) process.exit(failed.exitCode);
  });

function warn(err: unknown): void {
  process.stderr.write(`toastnet: ${asToastnetError(err).message}\n`);
}

example(program.command('ls'), "toastnet ls -q --filter mode=macvlan --filter 'name=job-*' --filter label=team=ml")
  .description('list sandboxes')
  .option('--json', 'JSON output')
  .addOption(new Option('-q, --quiet', 'names only, one per line').conflicts('json'))
  .option('--filter <key=value>', 'only sandboxes with mode=veth|macvlan|tap, name=GLOB (* and ?), label=KEY or label=KEY=VALUE, or CNI containers by container=GLOB or pod=NAMESPACE/NAME glob; repeatable: values of one key are alternatives (labels: all must match), different keys must all match', collect, [])
  .action(async (o: { json?: boolean; quiet?: boolean; filter: string[] }, cmd: Command) => {
    const keep = sandboxFilter(o.filter);
    const list = (await withBackend(config(cmd), (b) => b.list())).filter(keep);
    if (o.json) printJson(list);
    else if (o.quiet) process.stdout.write(list.map((s) => `${s.name}\n`).join(''));
    else printSandboxes(list);
  });

example(program.command('inspect'), 'toastnet inspect web')
  .description('a sandbox with both ends of its link as the kernel sees them')
  .argument('<name>')
  .option('--json', 'JSON output')
  .action(async (name: string, o: { json?: boolean }, cmd: Command) => {
    const r = await withBackend(config(cmd), (b) => b.inspect(name));
    printJson(r);
    void o;
  });

example(program.command('gc'), 'toastnet gc --json')
  .description('remove what no live sandbox owns (after a crash)')
  .option('--json', 'JSON output')
  .action(async (o: { json?: boolean }, cmd: Command) => {
    const r = await withBackend(config(cmd), (b) => b.gc());
    if (o.json) printJson(r);
    else print(`gc: removed ${r.sandboxes.length} dead sandbox(es), ${r.namespaces.length} namespace(s), ${r.links.length} link(s), ${r.files.length} file(s)`);
  });

/** Runs CMD in the sandbox's namespace with its resolv.conf, as `ip netns exec` does; resolves to CMD's exit code. */
function execIn(c: Config, name: string, argv: string[]): Promise<number> {
  validateSandboxName(name);
  const ns = netnsName(instanceNames(c.instance), name);
  if (!fs.existsSync(netnsPath(ns))) throw new ToastnetError('not_found', `no sandbox named "${name}"`);
  if (argv.length === 0) throw new ToastnetError('invalid_argument', 'no command given (toastnet exec NAME -- CMD...)');
  findCommand(argv[0]); // 126 or 127 now, rather than an exit code of ip's that CMD could give too
  return new Promise((resolve, reject) => {
    const child = spawn('ip', ['netns', 'exec', ns, ...argv], { stdio: 'inherit' });
    // Signals to toastnet go on to CMD (a terminal's Ctrl-C reaches both; CMD sees it twice
    // at worst), and toastnet itself stays alive to clean up after CMD exits.
    const forward = (sig: NodeJS.Signals) => child.kill(sig);
    const signals: NodeJS.Signals[] = ['SIGTERM', 'SIGINT', 'SIGHUP'];
    for (const s of signals) process.on(s, forward);
    child.on('error', (err) => reject(new ToastnetError('not_ready', `cannot run ip netns exec: ${err.message} (install iproute2)`)));
    child.on('exit', (code, signal) => {
      for (const s of signals) process.off(s, forward);
      resolve(code ?? 128 + (signal ? osSignal(signal) : 1));
    });
  });
}

function osSignal(s: NodeJS.Signals): number {
  return ({ SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGKILL: 9, SIGTERM: 15 } as Record<string, number>)[s] ?? 1;
}

const EXIT_STATUS_HELP = `Exit status: CMD's own; ${EXEC_EXIT.toastnetFailed} if toastnet itself failed (a bad flag, no such sandbox...),
${EXEC_EXIT.cannotExecute} if CMD cannot be executed, ${EXEC_EXIT.notFound} if CMD was not found (as docker run).`;

example(program.command('exec'), 'toastnet exec web -- sh -c \'curl -s https://pypi.org/ >/dev/null\'', EXIT_STATUS_HELP)
  .description('run CMD inside a sandbox\'s network namespace; exits with CMD\'s code')
  .argument('<name>')
  .argument('<cmd...>')
  .action(async (name: string, argv: string[], _o: unknown, cmd: Command) => {
    const c = config(cmd);
    // The sandbox's DNS is the daemon's: a dead one (crashed, killed) is brought back first.
    await ensureDaemon(c, globalArgs(cmd));
    process.exitCode = await execIn(c, name, argv);
  });

addPublishOption(addPolicyOptions(example(program.command('run'), 'toastnet run --no-internet --allow 172.16.5.5:5432/tcp -- psql -h 172.16.5.5', EXIT_STATUS_HELP)
  .description('create a sandbox, run CMD in it, remove it (unless --keep); exits with CMD\'s code')
  .argument('<cmd...>')
  .addOption(new Option('--mode <mode>', 'link type (default: the instance\'s defaultMode; tap: CMD is the VMM, started in the namespace holding the TAP)').choices(Object.keys(LINK_MODES)))
  .option('--name <name>', 'sandbox name')
  .option('--label <key=value>', LABEL_HELP, collect, [])
  .option('--keep', 'keep the sandbox after CMD exits')))
  .action(async (argv: string[], o: { mode?: SandboxMode; name?: string; label: string[]; keep?: boolean } & PolicyFlags & PublishFlags, cmd: Command) => {
    const policy = policyFromFlags(o);
    const publish = publishFromFlags(o);
    const labels = parseLabelFlags(o.label);
    const c = config(cmd);
    findCommand(argv[0]); // before a sandbox is made for nothing
    const cl = await ensureDaemon(c, globalArgs(cmd));
    const s = await cl.create({ name: o.name, ...(o.mode ? { mode: o.mode } : {}), ...(policy ? { policy } : {}), ...publish, ...(o.label.length ? { labels } : {}) });
    let code = 1;
    try {
      code = await execIn(c, s.name, argv);
    } finally {
      if (!o.keep) await client(c).remove(s.name);
    }
    process.exitCode = code;
  });

const policyCmd = example(program.command('policy'), 'toastnet policy get web --effective').description('show or change a sandbox\'s policy');
example(policyCmd.command('get'), 'toastnet policy get web --effective')
  .argument('<name>')
  .option('--effective', 'with the instance defaults merged in')
  .action(async (name: string, o: { effective?: boolean }, cmd: Command) => {
    const v = await withBackend(config(cmd), (b) => b.policyGet(name));
    printJson(o.effective ? v.effective : v.policy);
  });
addPolicyOptions(example(policyCmd.command('set'), 'toastnet policy set web --deny 203.0.113.0/24 --domain pypi.org')
  .description('replace a running sandbox\'s policy atomically')
  .argument('<name>'))
  .action(async (name: string, o: PolicyFlags, cmd: Command) => {
    const doc = policyFromFlags(o) ?? {};
    // A policy's domain list is enforced by the resolver: the daemon must run to apply it.
    const c = config(cmd);
    const v = await daemonBackend(await ensureDaemon(c, globalArgs(cmd))).policySet(name, doc);
    printJson({ policy: v.policy, cut: v.cut ?? 0 });
  });

example(program.command('events'), 'toastnet events --sandbox web --follow')
  .description('denied (or, in report mode, would-be-denied) connection attempts, with the reason')
  .option('--sandbox <name>', 'only this sandbox')
  .option('--limit <n>', 'at most this many (newest)', '100')
  .option('--follow', 'keep printing new events')
  .option('--json', 'one JSON object per line')
  .option('--queries', 'the DNS query log instead: name, type, answer, verdict')
  .option('--flows', 'the flow log instead: flows sandboxes opened (open and closed records), bytes each way, the name where known')
  .action(async (o: { sandbox?: string; limit: string; follow?: boolean; json?: boolean; queries?: boolean; flows?: boolean }, cmd: Command) => {
    const c = config(cmd);
    if (o.flows) return flowsCommand(c, o);
    if (o.queries) {
      const lim = Number(o.limit);
      const qs = await withBackend(c, (b) => b.dnsQueries({ sandbox: o.sandbox, limit: lim }));
      for (const q of qs) print(o.json ? JSON.stringify(q) : printable(`${q.time}  ${q.sandbox}  ${q.type} ${q.name}  ${q.verdict}  ${q.answer.join(',')}${q.reason ? `  (${q.reason})` : ''}${q.count !== undefined ? `  (x${q.count})` : ''}`));
      return;
    }
    const show = (list: DenialEvent[]) => {
      for (const e of list) {
        print(o.json ? JSON.stringify(e) : printable(`${e.time}  ${e.sandbox}  ${e.action}  ${e.proto} ${e.dst}${e.dport ? `:${e.dport}` : ''}  ${e.reason}: ${e.rule}${e.name !== undefined ? ` (named ${e.name})` : ''}${e.packets !== undefined ? ` (${e.packets} packets)` : ''}`));
      }
    };
    const limit = Number(o.limit);
    if (!Number.isInteger(limit) || limit < 1) throw new ToastnetError('invalid_argument', `--limit ${o.limit}: want a positive whole number`);
    const first = await withBackend(c, (b) => b.events({ sandbox: o.sandbox, limit }));
    show(first);
    if (!o.follow) return;
    const cl = client(c);
    let since = first.length ? first[first.length - 1].id : 0;
    for (;;) {
      const next = await cl.events({ sandbox: o.sandbox, since, waitMs: 25_000, limit: 1000 });
      show(next);
      if (next.length) since = next[next.length - 1].id;
    }
  });

/** `events --flows`: the flow log, and (on stderr, never silently) any events the daemon lost. */
async function flowsCommand(c: Config, o: { sandbox?: string; limit: string; follow?: boolean; json?: boolean }): Promise<void> {
  const limit = Number(o.limit);
  if (!Number.isInteger(limit) || limit < 1) throw new ToastnetError('invalid_argument', `--limit ${o.limit}: want a positive whole number`);
  let warned = { kernel: 0, daemon: 0 };
  const show = (l: FlowList) => {
    for (const f of l.flows) print(o.json ? JSON.stringify(f) : formatFlow(f));
    const d = l.counts?.dropped;
    if (d && (d.kernel > warned.kernel || d.daemon > warned.daemon)) {
      process.stderr.write(`toastnet: the flow log lost events: ${d.kernel} dropped by the kernel (event buffer full), ${d.daemon} not written (database refused them)\n`);
      warned = { ...d };
    }
  };
  const first = await withBackend(c, (b) => b.flows({ sandbox: o.sandbox, limit }));
  show(first);
  if (!o.follow) return;
  const cl = client(c);
  let since = first.flows.at(-1)?.id ?? 0;
  for (;;) {
    const next = await cl.flows({ sandbox: o.sandbox, since, waitMs: 25_000, limit: 1000 });
    show(next);
    since = next.flows.at(-1)?.id ?? since;
  }
}

function formatFlow(f: FlowRecord): string {
  const bytes = f.sent && f.received ? `  out ${f.sent.bytes} B/${f.sent.packets} pkt  in ${f.received.bytes} B/${f.received.packets} pkt` : '';
  return printable(`${f.time}  ${f.sandbox}  ${f.state.padEnd(6)}  ${f.proto} ${f.src}:${f.sport} > ${f.dst}:${f.dport}${f.name ? `  ${f.name}` : ''}${bytes}`);
}

example(program.command('stats'), 'toastnet stats web --json')
  .description('what a sandbox (or each) sent, received and had blocked, quota use, limits, DNS queries')
  .argument('[name]', 'one sandbox (default: all)')
  .option('--json', 'JSON output')
  .action(async (name: string | undefined, o: { json?: boolean }, cmd: Command) => {
    const list = await withBackend(config(cmd), (b) => b.stats(name));
    if (o.json) printJson(name === undefined ? list : list[0]);
    else print(list.map(formatStats).join('\n'));
  });

example(program.command('top'), 'toastnet top --interval 2')
  .description('live view of sandboxes by traffic: rates out and in, blocked packets (Ctrl-C ends it)')
  .option('--interval <seconds>', 'time between readings', '1')
  .option('--count <n>', 'stop after this many screens (default: run until stopped)')
  .action(async (o: { interval: string; count?: string }, cmd: Command) => {
    const interval = Number(o.interval);
    const count = o.count === undefined ? Infinity : Number(o.count);
    if (!(interval > 0 && interval <= 3600)) throw new ToastnetError('invalid_argument', `--interval ${o.interval}: want seconds, more than 0`);
    if (!(count >= 1)) throw new ToastnetError('invalid_argument', `--count ${o.count}: want a positive whole number`);
    const c = config(cmd);
    const read = () => withBackend(c, (b) => b.stats());
    let before = await read();
    let t0 = performance.now();
    for (let i = 0; i < count; i++) {
      await new Promise((r) => setTimeout(r, interval * 1000));
      const now = await read();
      const t1 = performance.now();
      const screen = formatTop(topRows(before, now, (t1 - t0) / 1000));
      // On a terminal, redraw in place; piped, print one screen after another.
      process.stdout.write(process.stdout.isTTY ? `\x1b[H\x1b[2J${screen}\n` : `${screen}\n\n`);
      before = now;
      t0 = t1;
    }
  });

example(program.command('doctor'), 'toastnet doctor')
  .description('check the kernel features and tools toastnet needs')
  .option('--json', 'JSON output')
  .action(async (o: { json?: boolean }) => {
    const checks = await runDoctor();
    if (o.json) printJson(checks);
    else for (const ch of checks) print(`${ch.ok ? 'ok  ' : 'FAIL'}  ${ch.name}${ch.ok ? '' : `: ${ch.detail}${ch.fix ? `\n      fix: ${ch.fix}` : ''}`}${ch.advice ? `\n      note: ${ch.advice}` : ''}`);
    if (checks.some((ch) => !ch.ok)) process.exitCode = 7;
  });

program.command('completion')
  .description('print a shell completion script: bash or zsh')
  .argument('<shell>', 'bash or zsh')
  .addHelpText('after', '\nExample:\n  toastnet completion bash > /etc/bash_completion.d/toastnet')
  .action((shell: string) => {
    if (shell === 'bash') print(bashCompletion(program));
    else if (shell === 'zsh') print(zshCompletion(program));
    else throw new ToastnetError('invalid_argument', `completion ${shell}: use bash or zsh`);
  });

async function main(): Promise<void> {
  try {
    await program.parseAsync(process.argv);
  } catch (err) {
    const e = err as { code?: string; exitCode?: number };
    if (typeof e.code === 'string' && e.code.startsWith('commander.')) {
      // commander already printed its one-line message
      if (e.code === 'commander.helpDisplayed' || e.code === 'commander.version') process.exit(0);
      process.exit(runsACommand ? EXEC_EXIT.toastnetFailed : 2);
    }
    if (err instanceof CommandNotRunnable) {
      process.stderr.write(`toastnet: ${err.message}\n`);
      process.exit(err.exitCode);
    }
    const te = asToastnetError(err);
    process.stderr.write(`toastnet: ${te.message}\n`);
    process.exit(runsACommand ? EXEC_EXIT.toastnetFailed : te.exitCode);
  }
}

await main();
