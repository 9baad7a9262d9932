// Library entry: the API client and the types orchestrators need.
export { ToastnetClient } from './api/client.js';
export type { CreateSandboxBody } from './api/routes.js';
export type { SandboxInfo, Status, GcReport } from './api/types.js';
export { ToastnetError, ERROR_CODES } from './errors.js';
export type { ErrorCode } from './errors.js';
