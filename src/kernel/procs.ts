// Processes inside a network namespace. A process left in a removed sandbox's namespace
// keeps the namespace and its link alive after the address goes to someone else, so
// `rm` ends them: TERM, then KILL after a grace period.
import fs from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

/** PIDs whose network namespace is the one with inode `ino` (~7 µs per process on the host). */
export function pidsInNetns(ino: number): number[] {
  const want = `net:[${ino}]`;
  const out: number[] = [];
  for (const d of fs.readdirSync('/proc')) {
    const c = d.charCodeAt(0);
    if (c < 48 || c > 57) continue;
    try {
      if (fs.readlinkSync(`/proc/${d}/ns/net`) === want) out.push(Number(d));
    } catch {
      // exited meanwhile, or a kernel thread
    }
  }
  return out;
}

function signal(pids: number[], sig: NodeJS.Signals): number[] {
  const alive: number[] = [];
  for (const pid of pids) {
    try {
      process.kill(pid, sig);
      alive.push(pid);
    } catch {
      // already gone
    }
  }
  return alive;
}

function stillAlive(pids: number[]): number[] {
  return pids.filter((pid) => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  });
}

/** Ends the given processes: SIGTERM, then SIGKILL for those still alive after `graceMs`. */
export async function terminate(pids: number[], graceMs = 2000): Promise<void> {
  let alive = signal(pids, 'SIGTERM');
  const deadline = Date.now() + graceMs;
  while (alive.length > 0 && Date.now() < deadline) {
    await sleep(20);
    alive = stillAlive(alive);
  }
  signal(alive, 'SIGKILL');
}
