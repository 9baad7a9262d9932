import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CommandNotRunnable, EXEC_EXIT, findCommand } from '../../src/cli/command-lookup.js';

function refusal(fn: () => unknown): CommandNotRunnable {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof CommandNotRunnable, String(err));
    return err;
  }
  assert.fail('no refusal');
}

describe('findCommand (what run and exec check before starting a command)', () => {
  let dir: string;
  let bin: string;
  let plain: string;
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'toastnet-lookup-'));
    bin = path.join(dir, 'bin');
    plain = path.join(dir, 'plain');
    fs.mkdirSync(bin);
    fs.mkdirSync(plain);
    fs.writeFileSync(path.join(bin, 'tool'), '#!/bin/sh\n', { mode: 0o755 });
    fs.writeFileSync(path.join(plain, 'tool'), 'not a program\n', { mode: 0o644 });
    fs.writeFileSync(path.join(plain, 'only-here'), 'not a program\n', { mode: 0o644 });
    fs.mkdirSync(path.join(bin, 'adir'));
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('uses Docker\'s exit codes: 125 toastnet, 126 cannot execute, 127 not found', () => {
    assert.deepEqual(EXEC_EXIT, { toastnetFailed: 125, cannotExecute: 126, notFound: 127 });
  });

  it('finds a name on PATH, skipping a non-executable file of that name earlier on it', () => {
    assert.equal(findCommand('tool', `${plain}:${bin}`), path.join(bin, 'tool'));
    assert.equal(findCommand('sh', '/usr/bin:/bin'), fs.existsSync('/usr/bin/sh') ? '/usr/bin/sh' : '/bin/sh');
  });

  it('127 for a name on no PATH entry, or a path that does not exist', () => {
    const r = refusal(() => findCommand('no-such-tool-xyz', bin));
    assert.equal(r.exitCode, 127);
    assert.equal(r.message, 'no-such-tool-xyz: command not found');
    assert.equal(refusal(() => findCommand(path.join(bin, 'nope'), bin)).exitCode, 127);
    assert.equal(refusal(() => findCommand('', bin)).exitCode, 127);
  });

  it('126 for a file that is not executable, or a directory, found by name or given as a path', () => {
    const r = refusal(() => findCommand('only-here', `${bin}:${plain}`));
    assert.equal(r.exitCode, 126);
    assert.match(r.message, /only-here: .*plain\/only-here is not an executable file/);
    assert.equal(refusal(() => findCommand(path.join(plain, 'tool'))).exitCode, 126);
    assert.equal(refusal(() => findCommand('adir', bin)).exitCode, 126);
    assert.equal(refusal(() => findCommand(bin)).exitCode, 126);
  });

  it('a path with a slash is not searched for; an empty PATH entry is the current directory', () => {
    assert.equal(findCommand(path.join(bin, 'tool'), ''), path.join(bin, 'tool'));
    const cwd = process.cwd();
    process.chdir(bin);
    try {
      assert.equal(findCommand('tool', `${plain}:`), 'tool');
    } finally {
      process.chdir(cwd);
    }
  });
});
