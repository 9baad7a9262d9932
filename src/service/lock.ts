// One toastnet process at a time owns an instance: an exclusive flock on <runDir>/lock.
// The kernel drops the lock when the holder dies, so a crash never leaves it stuck.
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ToastnetError } from '../errors.js';
import { EWOULDBLOCK, LOCK_EX, LOCK_NB, errno, lib } from '../kernel/libc.js';

export class InstanceLock {
  private constructor(private fd: number, readonly file: string) {}

  /** Takes the lock now or throws `busy`. */
  static tryAcquire(runDir: string): InstanceLock {
    fs.mkdirSync(runDir, { recursive: true, mode: 0o700 });
    const file = path.join(runDir, 'lock');
    const fd = fs.openSync(file, 'a', 0o600);
    if (lib().flock(fd, LOCK_EX | LOCK_NB) !== 0) {
      const e = errno();
      fs.closeSync(fd);
      if (e === EWOULDBLOCK) throw new ToastnetError('busy', `instance is in use by another toastnet process (lock ${file})`);
      throw new ToastnetError('kernel', `flock ${file}: errno ${e}`);
    }
    fs.writeFileSync(path.join(runDir, 'lock.pid'), `${process.pid}\n`);
    return new InstanceLock(fd, file);
  }

  /**
   * Waits up to `timeoutMs` for the lock; `giveUp` is asked between tries whether waiting is
   * pointless (a daemon already serves the instance), which ends the wait with `busy` at once.
   */
  static async acquire(runDir: string, timeoutMs: number, giveUp?: () => Promise<boolean>): Promise<InstanceLock> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        return InstanceLock.tryAcquire(runDir);
      } catch (err) {
        if (!(err instanceof ToastnetError) || err.code !== 'busy' || Date.now() > deadline) throw err;
        if (giveUp && (await giveUp())) throw err;
        await sleep(25);
      }
    }
  }

  release(): void {
    if (this.fd >= 0) fs.closeSync(this.fd);
    this.fd = -1;
  }
}
