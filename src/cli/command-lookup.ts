// Whether `run` and `exec` can start a command, decided before anything is started. They
// exit with the command's own code, so their own failures need codes a command seldom uses:
// Docker's (and the shell's) 125, 126 and 127. `ip netns exec` reports a failed execvp only
// as an exit code a command could give too, so the search it would make is made here first,
// the way execvp(3) makes it.
import fs from 'node:fs';
import path from 'node:path';

/** What `run` and `exec` exit with when the command did not run. */
export const EXEC_EXIT = {
  /** toastnet itself failed (bad flag, no such sandbox, no daemon...). */
  toastnetFailed: 125,
  /** The command exists but cannot be executed (not executable, a directory). */
  cannotExecute: 126,
  notFound: 127,
} as const;

/** The command cannot be started; `exitCode` is 126 or 127. */
export class CommandNotRunnable extends Error {
  constructor(readonly exitCode: number, message: string) {
    super(message);
    this.name = 'CommandNotRunnable';
  }
}

/** glibc's search path when PATH is unset (confstr _CS_PATH). */
const DEFAULT_PATH = '/bin:/usr/bin';

const isExecutableFile = (file: string): 'yes' | 'no' | 'missing' => {
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch {
    return 'missing';
  }
  if (!st.isFile()) return 'no';
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return 'yes';
  } catch {
    return 'no';
  }
};

/**
 * The file execvp would run for `cmd`, or CommandNotRunnable: a name with a slash is used
 * as it is; else each PATH entry in turn (an empty one is the current directory), where a
 * file found but not executable is remembered and the search goes on, as execvp does.
 */
export function findCommand(cmd: string, searchPath: string | undefined = process.env.PATH): string {
  if (cmd === '') throw new CommandNotRunnable(EXEC_EXIT.notFound, 'an empty command name: command not found');
  if (cmd.includes('/')) {
    const found = isExecutableFile(cmd);
    if (found === 'yes') return cmd;
    if (found === 'missing') throw new CommandNotRunnable(EXEC_EXIT.notFound, `${cmd}: no such file`);
    throw new CommandNotRunnable(EXEC_EXIT.cannotExecute, `${cmd}: not an executable file`);
  }
  let notExecutable: string | undefined;
  for (const dir of (searchPath ?? DEFAULT_PATH).split(':')) {
    const file = path.join(dir || '.', cmd);
    const found = isExecutableFile(file);
    if (found === 'yes') return file;
    if (found === 'no') notExecutable ??= file;
  }
  if (notExecutable) throw new CommandNotRunnable(EXEC_EXIT.cannotExecute, `${cmd}: ${notExecutable} is not an executable file`);
  throw new CommandNotRunnable(EXEC_EXIT.notFound, `${cmd}: command not found`);
}
