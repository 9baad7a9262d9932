// Processes inside a network namespace. A process left in a removed sandbox's namespace
// keeps the namespace and its link alive, so `rm` ends them (TERM, then KILL after a grace
// period) before the address goes to someone else.
import fs from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

/**
 * PIDs in each of the network namespaces with the given inodes, from one pass over /proc
 * (~7 µs per process on the host: batch the namespaces of many removals into one call).
 */
export function pidsInNetnses(inos: ReadonlySet<number>): Map<number, number[]> {
  const out = new Map<number, number[]>();
  if (inos.size === 0) return out;
  for (const d of fs.readdirSync('/proc')) {
    const c = d.charCodeAt(0);
    if (c < 48 || c > 57) continue;
    let link: string;
    try {
      link = fs.readlinkSync(`/proc/${d}/ns/net`);
    } catch {
      continue; // exited meanwhile, or a kernel thread
    }
    // "net:[<inode>]"
    const ino = Number(link.slice(5, -1));
    if (!inos.has(ino)) continue;
    const list = out.get(ino);
    if (list) list.push(Number(d));
    else out.set(ino, [Number(d)]);
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
