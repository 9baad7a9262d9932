// `toastnet/client` is a client package without native dependencies: nothing its entry
// loads reaches koffi, better-sqlite3 or the kernel layer, and its declarations need none
// of their types either; a consumer resolves it through package.json's exports and gets
// every API type, with policies typed.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { builtinModules } from 'node:module';

// dist/test/unit/ -> the repository (package.json, node_modules) and its compiled sources.
const ROOT = new URL('../../../', import.meta.url).pathname;
const DIST_SRC = path.join(ROOT, 'dist', 'src');
const ENTRY = path.join(DIST_SRC, 'client.js');
const KERNEL = path.join(DIST_SRC, 'kernel') + path.sep;
const NATIVE = ['koffi', 'better-sqlite3'];

/** Specifiers of the static imports and re-exports in a compiled file, and literal dynamic imports. */
function importsOf(file: string): string[] {
  const text = fs.readFileSync(file, 'utf8');
  const from = [...text.matchAll(/^\s*(?:import|export)\b[^'";]*?\bfrom\s*['"]([^'"]+)['"]/gm)].map((m) => m[1]);
  const bare = [...text.matchAll(/^\s*import\s*['"]([^'"]+)['"]/gm)].map((m) => m[1]);
  const dynamic = [...text.matchAll(/\bimport\(\s*['"]([^'"]+)['"]\s*\)/g)].map((m) => m[1]);
  return [...from, ...bare, ...dynamic];
}

const packageOf = (spec: string) => (spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : spec.split('/')[0]);
const isBuiltin = (spec: string) => spec.startsWith('node:') || builtinModules.includes(packageOf(spec));

/**
 * Follows imports from `entry` through this package's files (`.js` at run time, `.d.ts` for
 * the declarations); returns the files reached and the packages they import.
 */
function reach(entry: string, ext: '.js' | '.d.ts'): { files: Set<string>; packages: Map<string, string> } {
  const files = new Set<string>();
  const packages = new Map<string, string>(); // package -> the first file importing it
  const visit = (file: string) => {
    if (files.has(file)) return;
    files.add(file);
    for (const spec of importsOf(file)) {
      if (spec.startsWith('.')) visit(path.resolve(path.dirname(file), ext === '.js' ? spec : spec.replace(/\.js$/, '.d.ts')));
      else if (!isBuiltin(spec) && !packages.has(packageOf(spec))) packages.set(packageOf(spec), file);
    }
  };
  visit(entry);
  return { files, packages };
}

function assertNoNativeReach(r: { files: Set<string>; packages: Map<string, string> }, what: string): void {
  for (const f of r.files) assert.ok(!f.startsWith(KERNEL), `${what} reaches the kernel layer: ${path.relative(ROOT, f)}`);
  for (const p of NATIVE) assert.ok(!r.packages.has(p), `${what} reaches ${p} (from ${path.relative(ROOT, r.packages.get(p) ?? '')})`);
}

describe('toastnet/client', () => {
  it('the import reader follows the imports (it is not blind): the daemon reaches koffi and the kernel layer', () => {
    const daemon = reach(path.join(DIST_SRC, 'daemon', 'run.js'), '.js');
    assert.ok([...daemon.files].some((f) => f.startsWith(KERNEL)));
    assert.ok(daemon.packages.has('koffi') && daemon.packages.has('better-sqlite3'), [...daemon.packages.keys()].join(', '));
  });

  it('nothing its entry imports at run time reaches koffi, better-sqlite3 or src/kernel/', () => {
    const r = reach(ENTRY, '.js');
    assertNoNativeReach(r, 'toastnet/client');
    assert.ok(r.files.has(path.join(DIST_SRC, 'api', 'client.js')), 'the reader got to the client');
  });

  it('nor do its declarations: a consumer needs no native package, nor its types', () => {
    const r = reach(path.join(DIST_SRC, 'client.d.ts'), '.d.ts');
    assertNoNativeReach(r, 'toastnet/client\'s declarations');
    for (const f of r.files) assert.ok(fs.existsSync(f), `declaration ${path.relative(ROOT, f)} exists`);
  });

  it('loads through the package\'s exports in a fresh process, without loading a native module', () => {
    // Native modules are CommonJS: whatever loads them, ESM or not, lands in require.cache.
    const probe = (what: string) => spawnSync(process.execPath, ['--input-type=module', '-e', `
      import { createRequire } from 'node:module';
      const m = await import(${JSON.stringify(what)});
      const loaded = Object.keys(createRequire(import.meta.url).cache).filter((k) => /koffi|better-sqlite3|better_sqlite3/.test(k));
      console.log(JSON.stringify({ exports: Object.keys(m).sort(), loaded }));
    `], { cwd: ROOT, encoding: 'utf8' });
    const r = probe('toastnet/client');
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { exports: string[]; loaded: string[] };
    assert.deepEqual(out.exports, ['ERROR_CODES', 'ToastnetClient', 'ToastnetError']);
    assert.deepEqual(out.loaded, []);
    // The probe sees a native module when one is loaded.
    const control = probe(path.join(DIST_SRC, 'kernel', 'libc.js'));
    assert.equal(control.status, 0, control.stderr);
    assert.notDeepEqual((JSON.parse(control.stdout) as { loaded: string[] }).loaded, []);
    // `.` still works, with the same runtime exports.
    const main = probe('toastnet');
    assert.equal(main.status, 0, main.stderr);
    assert.deepEqual((JSON.parse(main.stdout) as { exports: string[] }).exports, out.exports);
  });

  it('a consumer compiles against it through the exports, with every API type; a wrong policy does not compile', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'toastnet-consumer-'));
    try {
      fs.mkdirSync(path.join(dir, 'node_modules'));
      fs.symlinkSync(ROOT, path.join(dir, 'node_modules', 'toastnet'), 'dir');
      fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module' }));
      const tsconfig = (files: string[]) => JSON.stringify({
        compilerOptions: {
          target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, noEmit: true,
          // Check toastnet's declarations too, as a consumer without skipLibCheck would.
          skipLibCheck: false, types: ['node'], typeRoots: [path.join(ROOT, 'node_modules', '@types')],
        },
        files,
      });
      fs.writeFileSync(path.join(dir, 'good.ts'), `
import {
  ToastnetClient, ToastnetError, ERROR_CODES,
  type SandboxInfo, type PolicyInput, type Status, type PolicyView, type SandboxStats, type DenialEvent,
  type DnsQueryRecord, type GcReport, type CreateSandboxBody, type EventQuery, type SandboxInspection,
  type DownReport, type ErrorCode, type SandboxMode, type ResolverCounters,
} from 'toastnet/client';
import { ToastnetClient as SameClient } from 'toastnet';

const policy: PolicyInput = {
  egress: { internet: true, allow: ['203.0.113.0/24:443/tcp'], deny: ['198.51.100.0/24'], domains: ['pypi.org'] },
  dns: { qps: 20 }, limits: { egressRate: '10mbit', maxConnections: 100 }, inbound: { enabled: false },
};
const body: CreateSandboxBody = { name: 'job', mode: 'veth' satisfies SandboxMode, policy };
const query: EventQuery = { sandbox: 'job', limit: 10 };

export async function use(cl: ToastnetClient): Promise<SandboxInfo> {
  const s: SandboxInfo = await cl.create(body);
  const view: PolicyView = await cl.policySet(s.name, { egress: { internet: false } });
  const status: Status = await cl.status();
  const dns: ResolverCounters | undefined = status.dns;
  const stats: SandboxStats = await cl.stats(s.name);
  const events: DenialEvent[] = await cl.events(query);
  const queries: DnsQueryRecord[] = await cl.dnsQueries(query);
  const gc: GcReport = await cl.gc();
  const seen: SandboxInspection = await cl.inspect(s.name);
  const down: DownReport = await cl.down();
  const code: ErrorCode = 'not_found';
  void [view, dns, stats.sent.bytes, events, queries, gc, seen.kernel, down, ERROR_CODES[code], new ToastnetError(code, 'x'), SameClient];
  return s;
}
`);
      fs.writeFileSync(path.join(dir, 'bad.ts'), `
import { ToastnetClient, type PolicyInput } from 'toastnet/client';
export const wrongType: PolicyInput = { egress: { internet: 'yes' } };
export const unknownField: PolicyInput = { egress: { allowed: ['10.0.0.0/8'] } };
export const misuse = (cl: ToastnetClient) => cl.policySet('job', { limits: { maxConnections: 'many' } });
export const wrongMode = (cl: ToastnetClient) => cl.create({ mode: 'bridge' });
`);
      fs.writeFileSync(path.join(dir, 'deep.ts'), `import { Engine } from 'toastnet/dist/src/service/engine.js';\nexport { Engine };\n`);
      const tsc = (files: string[]) => {
        fs.writeFileSync(path.join(dir, 'tsconfig.json'), tsconfig(files));
        const r = spawnSync(path.join(ROOT, 'node_modules', '.bin', 'tsc'), ['-p', dir], { cwd: dir, encoding: 'utf8' });
        return { code: r.status, out: `${r.stdout}${r.stderr}` };
      };
      const good = tsc(['good.ts']);
      assert.equal(good.code, 0, good.out);
      assert.equal(good.out.trim(), '');
      const bad = tsc(['bad.ts']);
      assert.notEqual(bad.code, 0, 'a wrong policy must not compile');
      const errorLines = new Set([...bad.out.matchAll(/^bad\.ts\((\d+),\d+\): error/gm)].map((m) => Number(m[1])));
      assert.deepEqual([...errorLines].sort((a, b) => a - b), [3, 4, 5, 6], bad.out);
      assert.doesNotMatch(bad.out, /node_modules\/toastnet/, 'no error inside toastnet\'s own declarations');
      const deep = tsc(['deep.ts']);
      assert.notEqual(deep.code, 0, 'only the exported entries are reachable');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
