// What is left of removed sandboxes after `rm` returns: processes still inside their
// namespaces, and their addresses.
//
// `rm` stops a sandbox's traffic (its elements), frees its name (namespace released, row
// deleted) and returns. Whether any process still holds the namespace can only be learnt by
// reading every process's /proc/PID/ns/net, ~7 µs per process on the host: 0.4 ms with a
// few dozen processes, tens of ms on a host running thousands of sandboxed programs. So it
// is done here, once per batch of removals: one pass over /proc for all of them, shortly
// after. A namespace nobody holds is already gone; one still held gets its host route
// removed and its processes ended (TERM, then KILL after the grace period). Only then is the
// address given back to the pool: until then no new sandbox can get an address that a
// leftover process might still be using.
import fs from 'node:fs';
import { pidsInNetnses, terminate } from '../kernel/procs.js';

export interface Removed {
  /**
   * An fd holding the sandbox's namespace (undefined: it was already gone), taken before its
   * name was unmounted. It keeps the namespace, and so its inode number, from being freed
   * and handed to a namespace made meanwhile, whose processes would then look like
   * leftovers. Closed here once the namespace was looked at.
   */
  fd: number | undefined;
  /** Called once nothing holds the namespace any more, or never did. */
  release: () => void;
  /** Called (before the processes are ended) when processes hold the namespace. */
  held: () => void;
}

/** Removals read in one pass over /proc at most (each holds its namespace's fd until then). */
const MAX_BATCH = 256;

export class Reaper {
  private pending: Removed[] = [];
  private timer: NodeJS.Timeout | undefined;
  /** Removals whose leftover processes are being ended. */
  private readonly ending = new Set<Promise<void>>();

  constructor(private readonly o: { delayMs: number; graceMs: number }) {}

  add(r: Removed): void {
    this.pending.push(r);
    // A batch holds one fd per removal: a mass removal (down) is read in bounded batches.
    if (this.pending.length >= MAX_BATCH) this.reap();
    else this.timer ??= setTimeout(() => this.reap(), this.o.delayMs);
  }

  /** Removals not yet released (waiting for their batch, or for their processes to end). */
  get size(): number {
    return this.pending.length + this.ending.size;
  }

  /** Reads pending batches now, and resolves when every removal (also those added meanwhile) is released. */
  async settled(): Promise<void> {
    for (;;) {
      this.reap();
      if (this.ending.size === 0) return;
      await Promise.all([...this.ending]);
    }
  }

  /**
   * For an owner closing without settled(): runs what is pending now, without waiting for
   * processes to end (their addresses are not released in this process any more).
   */
  stop(): void {
    this.reap();
  }

  private reap(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    const batch = this.pending;
    this.pending = [];
    if (batch.length === 0) return;
    const inoOf = new Map<Removed, number>();
    for (const r of batch) if (r.fd !== undefined) inoOf.set(r, fs.fstatSync(r.fd).ino);
    const pids = pidsInNetnses(new Set(inoOf.values()));
    for (const r of batch) {
      const ino = inoOf.get(r);
      const held = ino === undefined ? undefined : pids.get(ino);
      if (r.fd !== undefined) fs.closeSync(r.fd);
      if (!held) {
        r.release();
        continue;
      }
      r.held();
      const p: Promise<void> = terminate(held, this.o.graceMs).finally(() => {
        this.ending.delete(p);
        r.release();
      });
      this.ending.add(p);
    }
  }
}
