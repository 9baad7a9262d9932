// The daemon's kernel readers (NFLOG denials, the name gate's NFQUEUE queue, conntrack's
// flow events) each run in a worker thread of their own, since their recv() blocks. They
// start the same way: the worker binds its socket and posts `ready` (with what it wants to
// tell) or `error`; after that it posts batches, which the service takes on this thread.
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';

/** What every reader posts, besides its batches. */
interface ReaderStatus<R> {
  ready?: R;
  error?: string;
}

export interface KernelReader<R> {
  worker: Worker;
  /** Resolves once the worker's socket is bound; rejects if it could not be. */
  ready: Promise<R>;
}

/**
 * Starts `kernel/<module>.js` in a worker that does not keep the process alive. Every
 * message goes to `onMessage`; `what` prefixes the errors, and a worker that dies is logged.
 */
export function startKernelReader<M extends object, R = true>(
  module: string,
  workerData: unknown,
  what: string,
  onMessage: (m: M) => void,
  log: (m: string) => void,
): KernelReader<R> {
  const file = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'kernel', `${module}.js`);
  const worker = new Worker(file, { workerData });
  worker.unref();
  let started = false;
  const ready = new Promise<R>((resolve, reject) => {
    worker.on('message', (m: M & ReaderStatus<R>) => {
      if (m.ready !== undefined) {
        started = true;
        resolve(m.ready);
      }
      // Before ready: its socket could not be bound, and the caller, which awaits `ready`,
      // says so. After: reading failed, and only the log can say it.
      if (m.error) {
        if (started) log(`${what}: ${m.error}`);
        else reject(new Error(`${what}: ${m.error}`));
      }
      onMessage(m);
    });
    worker.on('error', (err) => {
      log(`${what}: ${err.message}`);
      reject(err);
    });
  });
  return { worker, ready };
}
