// The client package (`toastnet/client`): what an orchestrator needs to drive a daemon over
// its Unix socket, and nothing that reaches the kernel. Loading it loads only Node's http
// and this package's pure modules: no koffi, no better-sqlite3 (no native code at all), so
// it runs wherever Node does, not only where toastnet itself can. Every type the API takes
// or answers with is here; test/unit/client-package.test.ts holds the entry to both.
export { ToastnetClient } from './api/client.js';
export { ToastnetError, ERROR_CODES } from './errors.js';
export type { ErrorCode } from './errors.js';
export type {
  CreateSandboxBody,
  DenialEvent,
  DnsQueryRecord,
  DownReport,
  EventQuery,
  FlowCounts,
  FlowList,
  FlowRecord,
  GcReport,
  PolicyView,
  QueryLogEntry,
  ResolverCounters,
  SandboxInfo,
  SandboxInspection,
  SandboxStats,
  ShapedCounts,
  Status,
  TapInfo,
  TapOptions,
  Traffic,
} from './api/types.js';
export type { PolicyInput } from './core/policy.js';
export type { SandboxMode } from './core/link-modes.js';
export type { PortMapping, PublishProtocol } from './core/publish.js';
export type { DenyReason } from './core/deny-reasons.js';
export type { QueryOutcome } from './dns/query-outcomes.js';
