// toastnet's own version, read at run time from the package.json it was installed with
// (dist/src/version.js -> ../../package.json), so `--version`, `status` and the metrics
// report what is actually running and there is no second copy of the number to forget.
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { ToastnetError } from './errors.js';

export const PACKAGE_JSON = fileURLToPath(new URL('../../package.json', import.meta.url));

let version: string | undefined;

/** The package version; a broken install (no readable package.json) is an internal error. */
export function toastnetVersion(): string {
  if (version !== undefined) return version;
  let parsed: unknown;
  try {
    parsed = JSON.parse(fs.readFileSync(PACKAGE_JSON, 'utf8'));
  } catch (err) {
    throw new ToastnetError('internal', `cannot read toastnet's version from ${PACKAGE_JSON}: ${(err as Error).message}`);
  }
  const v = (parsed as { version?: unknown }).version;
  if (typeof v !== 'string' || v === '') throw new ToastnetError('internal', `${PACKAGE_JSON} has no "version"`);
  version = v;
  return v;
}
