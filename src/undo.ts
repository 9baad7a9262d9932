// One rollback pattern for multi-step work (CNI's `defer if !success`, netavark's teardown
// error list): each step, once done, registers how to undo it; a failure runs the undos in
// reverse, each guarded so that one failing undo does not skip the rest (an address given
// back after a network that would not go away), and the caller sees the original error,
// with the undo failures attached to it.
//
// Fault points: named places in multi-step work where a test can make the next pass throw
// (failure injection). A plain string comparison when nothing is injected.

/** An undo that failed while rolling back, attached to the original error as `undoFailures`. */
export interface UndoFailure {
  step: string;
  error: unknown;
}

export class Undo {
  private readonly steps: { step: string; undo: () => void }[] = [];

  /** Registers how to undo `step`, which has just been done. */
  push(step: string, undo: () => void): void {
    this.steps.push({ step, undo });
  }

  /** Undoes every registered step, last first, and throws `err` (the undo failures attached). */
  rollback(err: unknown): never {
    const failures: UndoFailure[] = [];
    for (const s of this.steps.reverse()) {
      try {
        s.undo();
      } catch (error) {
        failures.push({ step: s.step, error });
      }
    }
    this.steps.length = 0;
    if (failures.length > 0 && err !== null && typeof err === 'object') {
      Object.defineProperty(err, 'undoFailures', { value: failures, enumerable: false, configurable: true });
      const details = (err as { details?: Record<string, unknown> }).details;
      if (details) details.undoFailures = failures.map((f) => `${f.step}: ${f.error instanceof Error ? f.error.message : String(f.error)}`);
    }
    throw err;
  }
}

/** Runs `work` with an Undo; if it throws, rolls back what it registered and rethrows the same error. */
export function withUndo<T>(work: (undo: Undo) => T): T {
  const undo = new Undo();
  try {
    return work(undo);
  } catch (err) {
    return undo.rollback(err);
  }
}

/** The undo failures attached to an error by a rollback (none: empty). */
export function undoFailuresOf(err: unknown): UndoFailure[] {
  return (err as { undoFailures?: UndoFailure[] } | null)?.undoFailures ?? [];
}

/** What a fault point throws when a test injected a failure there. */
export class InjectedFault extends Error {
  constructor(readonly point: string) {
    super(`injected fault at ${point}`);
    this.name = 'InjectedFault';
  }
}

let injected: string | undefined;

/** Test-only: the next pass through fault point `point` throws InjectedFault (once). */
export function injectFault(point: string | undefined): void {
  injected = point;
}

/** A named place in multi-step work where a test can inject a failure. */
export function faultPoint(point: string): void {
  if (injected === point) {
    injected = undefined;
    throw new InjectedFault(point);
  }
}
