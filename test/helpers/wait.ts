// Waiting in tests: for a condition, never for a guessed length of time. A sleep that hopes
// something has happened meanwhile makes a test slow when it has and flaky when it has not;
// waitFor polls the condition and, when it does not come in time, fails naming what it
// waited for.

/**
 * Resolves once `condition` holds. The condition may be async (a long poll of the API is
 * fine: pass everyMs 0), and may throw to fail at once (a process that exited early).
 * Rejects after `timeoutMs`, naming `what` (a function: evaluated then, to show the state).
 */
export async function waitFor(
  condition: () => boolean | Promise<boolean>,
  what: string | (() => string),
  timeoutMs = 10_000,
  everyMs = 50,
): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    if (await condition()) return;
    if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${typeof what === 'function' ? what() : what}`);
    await sleep(everyMs);
  }
}

/**
 * A pause that is itself what a test measures or waits out (a TTL, a rate limiter's refill,
 * a kernel timer), with a comment saying so where it is used. Never to let something else
 * happen meanwhile: wait for that with waitFor.
 */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
