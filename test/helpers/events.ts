// The daemon's denial events arrive asynchronously (NFLOG, read by a worker thread): a test
// waits for the ones it expects with the API's long poll, instead of sleeping first.
import type { ToastnetClient } from '../../src/api/client.js';
import type { DenialEvent } from '../../src/service/events.js';
import { waitFor } from './wait.js';

/** Long-polls the events of `sandbox` until `enough` holds for all seen so far; returns them. */
export async function waitForEvents(
  cl: ToastnetClient,
  sandbox: string,
  enough: (events: DenialEvent[]) => boolean,
  what: string,
  timeoutMs = 10_000,
): Promise<DenialEvent[]> {
  const seen: DenialEvent[] = [];
  await waitFor(async () => {
    const since = seen.length > 0 ? seen[seen.length - 1].id : 0;
    seen.push(...(await cl.events({ sandbox, since, limit: 10_000, waitMs: 1000 })));
    return enough(seen);
  }, () => `${what} (events of ${sandbox} so far: ${JSON.stringify(seen)})`, timeoutMs, 0);
  return seen;
}
