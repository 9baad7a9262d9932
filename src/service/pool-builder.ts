// Makes warm-pool members' kernel part on a worker thread. A member's namespace, links and
// routes are most of a create (~1.7 ms, mostly kernel time); on the daemon's main thread
// each refill step held up the API requests behind it, and on a 2-CPU host the other CPU
// sat partly idle. The main thread keeps the row and the address (Engine.reservePoolMember
// / finishPoolMember); the worker only touches the kernel, one member at a time.
import { Worker } from 'node:worker_threads';
import { ToastnetError, isCode } from '../errors.js';
import { withUndo } from '../undo.js';
import type { NetnsEtc } from '../kernel/netns-etc.js';
import type { RtnetlinkSocket } from '../kernel/rtnetlink.js';
import { SandboxNetSpec, createSandboxNet, removeSandboxNet } from '../kernel/sandbox-net.js';

/**
 * A member's kernel part: its network and /etc/netns entry, all or nothing. What the worker
 * runs for each request, and Engine.createPoolMember on the calling thread.
 */
export function buildMember(host: RtnetlinkSocket, etc: NetnsEtc, net: SandboxNetSpec): void {
  withUndo((undo) => {
    createSandboxNet(host, net);
    undo.push('remove the network', () => removeSandboxNet(host, net));
    etc.link(net.netns);
  });
}

export interface BuildRequest {
  id: number;
  net: SandboxNetSpec;
}

export interface BuildReply {
  id: number;
  error?: { code: string; message: string };
}

export class PoolBuilder {
  private readonly worker: Worker;
  private nextId = 1;
  private readonly waiting = new Map<number, { resolve: () => void; reject: (e: Error) => void }>();
  private failed: Error | undefined;

  constructor(instance: string) {
    this.worker = new Worker(new URL('./pool-builder-worker.js', import.meta.url), { workerData: { instance } });
    this.worker.on('message', (r: BuildReply) => {
      const w = this.waiting.get(r.id);
      this.waiting.delete(r.id);
      if (!w) return;
      if (r.error) w.reject(new ToastnetError(isCode(r.error.code) ? r.error.code : 'internal', r.error.message));
      else w.resolve();
    });
    const fail = (err: Error) => {
      this.failed = new ToastnetError('internal', `pool builder thread: ${err.message}`);
      for (const w of this.waiting.values()) w.reject(this.failed);
      this.waiting.clear();
    };
    this.worker.on('error', fail);
    this.worker.on('exit', (code) => fail(new Error(`exited (${code})`)));
  }

  /** The thread died (or failed to start): a new builder is needed. */
  get dead(): boolean {
    return this.failed !== undefined;
  }

  /** Makes one member's namespace, links, routes and /etc/netns entry; all or nothing. */
  build(net: SandboxNetSpec): Promise<void> {
    if (this.failed) return Promise.reject(this.failed);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      this.worker.postMessage({ id, net } satisfies BuildRequest);
    });
  }

  /** Ends the thread; call once no build is pending (WarmPool.stop waits for its own). */
  async close(): Promise<void> {
    await this.worker.terminate();
  }
}
