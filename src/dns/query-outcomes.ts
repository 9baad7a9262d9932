// What became of each message the resolver received. The outcomes partition the queries:
// each is counted once, when its answer (or none) is sent, so they add up to the queries
// the resolver has dealt with, and a sum over them means something (status, metrics).
// Kept apart from the forwarder so that readers (metrics, the API types) need no sockets.

export const QUERY_OUTCOMES = [
  /** An upstream's answer passed on (as the gate let it through: stripped addresses included). */
  'answered',
  /** Answered from the shared cache, without asking upstream. */
  'cached',
  /** Answered with an error without asking upstream: the sandbox's DNS policy or limits, or a query that cannot be forwarded. */
  'refused',
  /** Every upstream failed or timed out: SERVFAIL sent. */
  'servfail',
  /** No answer sent: not from a live sandbox, not a well-formed query, or its sandbox gone when the answer came. */
  'dropped',
] as const;

export type QueryOutcome = (typeof QUERY_OUTCOMES)[number];

export type QueryOutcomeCounts = Record<QueryOutcome, number>;

export const noQueryOutcomes = (): QueryOutcomeCounts => ({ answered: 0, cached: 0, refused: 0, servfail: 0, dropped: 0 });
