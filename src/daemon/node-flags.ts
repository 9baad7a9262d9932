// How the daemon's Node process is started: shared by the auto-start, the systemd unit,
// the tests and the bench, so that all of them run the daemon the same way.

/**
 * Node flags the daemon is started with (auto-start, systemd unit, tests, bench). V8 lets
 * its young generation grow to 32 MB under the allocation bursts of creates and of a
 * reconcile, and keeps it: with 4 MB semi-spaces the daemon holds ~25 MB less at 4,000
 * sandboxes (149 -> 124 MB RSS), for slightly more frequent, smaller scavenges.
 */
export const DAEMON_NODE_FLAGS = ['--max-semi-space-size=4'];
