// The completion scripts, run by the shell that reads them: what `toastnet <TAB>` offers.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';

const CLI = new URL('../../src/cli/main.js', import.meta.url).pathname;

describe('toastnet completion', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tn-completion-'));
  const script = path.join(dir, 'toastnet.bash');
  fs.writeFileSync(script, execFileSync(process.execPath, [CLI, 'completion', 'bash'], { encoding: 'utf8' }));
  // A stand-in `toastnet` for the sandbox names the script asks for (never the real CLI here).
  fs.writeFileSync(path.join(dir, 'toastnet'), '#!/bin/sh\n[ "$1 $2" = "ls -q" ] && printf "web\\nbuild-7\\n"\n', { mode: 0o755 });

  /** What bash completes for the words typed so far (the last one being completed). */
  const complete = (...typed: string[]): string[] => {
    const words = ['toastnet', ...typed].map((x) => `'${x}'`).join(' ');
    const out = execFileSync('bash', ['-c', `source '${script}'; COMP_WORDS=(${words}); COMP_CWORD=${typed.length}; _toastnet; printf '%s\\n' "\${COMPREPLY[@]}"`], { encoding: 'utf8', env: { PATH: `${dir}:/usr/bin:/bin` } });
    return out.split('\n').filter(Boolean).sort();
  };

  it('offers the commands, and completes a prefix', () => {
    assert.ok(complete('').includes('create'));
    assert.ok(complete('').includes('completion'));
    assert.deepEqual(complete('ins'), ['inspect']);
  });

  it('offers a command\'s own options, and a subcommand\'s', () => {
    assert.deepEqual(complete('rm', '--'), ['--force', '--json']);
    assert.deepEqual(complete('policy', ''), ['get', 'set']);
    assert.ok(complete('policy', 'get', '--').includes('--effective'));
  });

  it('offers sandbox names where a command takes one, also after global options', () => {
    assert.deepEqual(complete('rm', ''), ['--force', '--json', '-f', 'build-7', 'web']);
    assert.deepEqual(complete('--instance', 'ci', 'exec', 'w'), ['web']);
    assert.ok(!complete('create', '').includes('web'), 'create takes a new name');
  });

  it('zsh gets the same completion through bashcompinit; another shell is a one-line error', () => {
    const zsh = execFileSync(process.execPath, [CLI, 'completion', 'zsh'], { encoding: 'utf8' });
    assert.match(zsh, /^#compdef toastnet/);
    assert.match(zsh, /bashcompinit/);
    assert.ok(zsh.includes('complete -F _toastnet toastnet'));
    let code = 0;
    try {
      execFileSync(process.execPath, [CLI, 'completion', 'fish'], { stdio: 'pipe' });
    } catch (err) {
      code = (err as { status: number }).status;
    }
    assert.equal(code, 2);
  });
});
