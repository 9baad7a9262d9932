// The daemon's log: levels filter, each record is a JSON line with level, time, component
// and sandbox, warnings go to stderr and the rest to stdout, a terminal gets readable lines,
// and the auto-started daemon's file stays under its cap with one older file kept.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { createLogger, prettyLine, rotatingFile } from '../../src/daemon/log.js';
import { logAnswer } from '../../src/daemon/run.js';
import { lastMessage } from '../../src/cli/instance.js';
import type { LogLevel } from '../../src/config/schema.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'toastnet-log-test-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));

/** A logger at `level` whose records are collected, parsed. */
function collecting(level: LogLevel) {
  const lines: string[] = [];
  const root = createLogger(level, { kind: 'stream', stream: { write: (l: string) => void lines.push(l) } });
  return { root, records: () => lines.map((l) => JSON.parse(l) as Record<string, unknown>), lines };
}

const LOG_MODULE = new URL('../../src/daemon/log.js', import.meta.url).href;

describe('daemon log', () => {
  it('filters by level: below the configured level nothing is written; silent writes nothing', () => {
    const at = (level: LogLevel) => {
      const c = collecting(level);
      const l = c.root.child({ component: 'daemon' });
      l.trace('t');
      l.debug('d');
      l.info('i');
      l.warn('w');
      l.error('e');
      return c.records().map((r) => r.msg);
    };
    assert.deepEqual(at('info'), ['i', 'w', 'e']);
    assert.deepEqual(at('warn'), ['w', 'e']);
    assert.deepEqual(at('debug'), ['d', 'i', 'w', 'e']);
    assert.deepEqual(at('silent'), []);
  });

  it('one JSON object per line with level (a name), time (ISO 8601), component and sandbox', () => {
    const c = collecting('info');
    c.root.child({ component: 'pool' }).info({ sandbox: 'web', size: 3 }, 'ready');
    assert.equal(c.lines.length, 1);
    assert.ok(c.lines[0].endsWith('\n') && !c.lines[0].slice(0, -1).includes('\n'), 'one line');
    const r = c.records()[0];
    assert.equal(r.level, 'info');
    assert.match(String(r.time), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    assert.deepEqual([r.component, r.sandbox, r.msg, r.size, r.pid], ['pool', 'web', 'ready', 3, process.pid]);
    assert.equal(c.lines[0].match(/"component"/g)?.length, 1, 'the component once');
  });

  it('API requests: changes at info with the sandbox (from the path, or a create\'s answer), reads and refusals at debug, daemon failures at error', () => {
    const c = collecting('debug');
    const api = c.root.child({ component: 'api' });
    logAnswer(api, { method: 'POST', path: '/v1/sandboxes', status: 201, body: { name: 'job1' }, ms: 1.23456 });
    logAnswer(api, { method: 'DELETE', path: '/v1/sandboxes/job%2E2', status: 204, ms: 0.5 });
    logAnswer(api, { method: 'GET', path: '/v1/status', status: 200, body: {}, ms: 0.1 });
    logAnswer(api, { method: 'POST', path: '/v1/gc', status: 500, body: { error: { code: 'kernel', message: 'EPERM' } }, ms: 2 });
    logAnswer(api, { method: 'POST', path: '/v1/sandboxes', status: 400, body: { error: { code: 'invalid_argument', message: 'unknown field "x"' } }, ms: 0.1 });
    assert.deepEqual(c.records().map((r) => [r.level, r.component, r.sandbox, r.status, r.msg]), [
      ['info', 'api', 'job1', 201, 'POST /v1/sandboxes 201'],
      ['info', 'api', 'job.2', 204, 'DELETE /v1/sandboxes/job%2E2 204'],
      ['debug', 'api', undefined, 200, 'GET /v1/status 200'],
      ['error', 'api', undefined, 500, 'POST /v1/gc 500: EPERM'],
      ['debug', 'api', undefined, 400, 'POST /v1/sandboxes 400: unknown field "x"'],
    ]);
    assert.equal(c.records()[0].ms, 1.235);
    assert.equal(c.records()[3].code, 'kernel');
  });

  it('as JSON (not a terminal): warnings and errors on stderr, the rest on stdout, each line once', () => {
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', `
      const { createLogger } = await import(${JSON.stringify(LOG_MODULE)});
      const l = createLogger('info', { kind: 'json' }).child({ component: 'dns' });
      l.info('to stdout'); l.warn('to stderr'); l.error('also stderr'); l.debug('nowhere');`], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const msgs = (s: string) => s.trim().split('\n').filter(Boolean).map((l) => (JSON.parse(l) as { msg: string }).msg);
    assert.deepEqual(msgs(r.stdout), ['to stdout']);
    assert.deepEqual(msgs(r.stderr), ['to stderr', 'also stderr']);
  });

  it('on a terminal: one readable line per record, the stack of an error under it', () => {
    const line = JSON.stringify({ level: 'warn', time: '2026-12-07T05:18:06.816Z', pid: 1, component: 'api', sandbox: 'web', msg: 'slow', ms: 3.5, path: '/v1/x y' });
    assert.equal(prettyLine(line), '05:18:06.816 WARN  api [web] slow ms=3.5 path="/v1/x y"\n');
    assert.equal(prettyLine(line, true), '05:18:06.816 \x1b[33mWARN \x1b[0m api [web] slow ms=3.5 path="/v1/x y"\n');
    const err = prettyLine(JSON.stringify({ level: 'error', time: '2026-12-07T05:18:06.816Z', component: 'daemon', msg: 'boom', err: { message: 'boom', stack: 'Error: boom\n    at x' } }));
    assert.equal(err, '05:18:06.816 ERROR daemon boom\n    Error: boom\n        at x\n');
    assert.equal(prettyLine('not json'), 'not json\n');
  });

  it('the log file stays under its cap: at the cap it becomes FILE.1 (replacing the older) and a new one starts', () => {
    const file = path.join(dir, 'daemon.log');
    const cap = 2000;
    const root = createLogger('info', { kind: 'file', file, maxBytes: cap });
    for (let i = 0; i < 500; i++) root.child({ component: 'api' }).info({ sandbox: `s${i}` }, `line ${i}`);
    const size = (f: string) => fs.statSync(f).size;
    assert.ok(size(file) <= cap, `daemon.log ${size(file)} bytes`);
    assert.ok(size(`${file}.1`) <= cap && size(`${file}.1`) > cap / 2, `daemon.log.1 ${size(`${file}.1`)} bytes`);
    assert.deepEqual(fs.readdirSync(dir).filter((f) => f.startsWith('daemon.log')).sort(), ['daemon.log', 'daemon.log.1']);
    const last = fs.readFileSync(file, 'utf8').trim().split('\n');
    assert.equal((JSON.parse(last.at(-1)!) as { msg: string }).msg, 'line 499', 'the newest line is in FILE');
    const older = fs.readFileSync(`${file}.1`, 'utf8').trim().split('\n').map((l) => (JSON.parse(l) as { msg: string }).msg);
    assert.equal(older.at(-1), `line ${499 - last.length}`, 'FILE.1 holds the lines just before, whole');
    // A daemon started again goes on in the same file, still within the cap.
    const again = rotatingFile(file, cap);
    for (let i = 0; i < 100; i++) again.write(`${'x'.repeat(99)}\n`);
    assert.ok(size(file) <= cap && size(`${file}.1`) <= cap);
  });

  it('the auto-start reports its daemon\'s last message: its own last record\'s msg, else the last plain line', () => {
    const f = path.join(dir, 'last.log');
    const rec = (pid: number, level: string, msg: string) => `${JSON.stringify({ level, pid, msg })}\n`;
    fs.writeFileSync(f, rec(7, 'fatal', 'instance x is in use by another toastnet process') + rec(8, 'info', 'ready'));
    assert.equal(lastMessage(f, 7), 'instance x is in use by another toastnet process', 'not the winner\'s later line');
    assert.equal(lastMessage(f), 'ready');
    fs.appendFileSync(f, 'toastnet: config: key "subnet": bad\n');
    assert.equal(lastMessage(f, 9), 'toastnet: config: key "subnet": bad', 'a process that wrote no record: its plain output');
  });
});
