// The error catalogue: every failure toastnet reports has one stable code, and each code
// has one HTTP status (API) and one exit code (CLI). Documented in README "Errors".

export const ERROR_CODES = {
  invalid_argument: { http: 400, exit: 2, summary: 'bad input: a flag, config key, name or CIDR' },
  not_found: { http: 404, exit: 3, summary: 'no such sandbox' },
  conflict: { http: 409, exit: 4, summary: 'a sandbox with that name already exists, or a host port to publish is in use' },
  exhausted: { http: 507, exit: 5, summary: 'no free address left in the subnet' },
  busy: { http: 409, exit: 6, summary: 'another toastnet process holds this instance' },
  not_ready: { http: 503, exit: 7, summary: 'host not set up, or a kernel feature or tool is missing' },
  kernel: { http: 500, exit: 8, summary: 'the kernel refused an operation' },
  // The API's own refusals of a malformed request; the CLI meets them only when it talks to
  // a daemon of another version.
  method_not_allowed: { http: 405, exit: 9, summary: 'the API path does not take that method' },
  too_large: { http: 413, exit: 10, summary: 'the API request body is over its size limit' },
  internal: { http: 500, exit: 1, summary: 'a bug in toastnet' },
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

export class ToastnetError extends Error {
  readonly code: ErrorCode;
  readonly details: Record<string, unknown>;
  constructor(code: ErrorCode, message: string, details: Record<string, unknown> = {}) {
    super(message);
    this.name = 'ToastnetError';
    this.code = code;
    this.details = details;
  }
  get httpStatus(): number {
    return ERROR_CODES[this.code].http;
  }
  get exitCode(): number {
    return ERROR_CODES[this.code].exit;
  }
  toJSON(): { code: ErrorCode; message: string } {
    return { code: this.code, message: this.message };
  }
}

/** Wraps anything thrown into a ToastnetError so callers can rely on code and message. */
export function asToastnetError(err: unknown): ToastnetError {
  if (err instanceof ToastnetError) return err;
  const msg = err instanceof Error ? err.message : String(err);
  return new ToastnetError('internal', msg);
}

export function isCode(code: string): code is ErrorCode {
  return Object.prototype.hasOwnProperty.call(ERROR_CODES, code);
}
