// The daemon's log, with pino: one JSON object per line with `level` (a name), `time` (ISO
// 8601), `component` (daemon, api, dns, events, pool, metrics) and, where one is concerned,
// `sandbox`. Where it goes depends on how the daemon runs:
// - under systemd or piped (`toastnet daemon`, stdout not a terminal): JSON lines, warnings
//   and errors on stderr, the rest on stdout, for journald and log shippers;
// - on a terminal: the same records as one readable line each (prettyLine);
// - auto-started in the background (`--log-file`): JSON lines in a file of bounded size,
//   kept with one older file (rotatingFile), where before one file grew forever.
import fs from 'node:fs';
import pino from 'pino';

import type { LogLevel } from '../config/schema.js';

export type Logger = pino.Logger;

/** The auto-started daemon's log file is cut at this size (and the previous one kept): 20 MiB on disk at most. */
export const LOG_FILE_MAX_BYTES = 10 * 1024 * 1024;

export type LogTarget =
  | { kind: 'json' }
  | { kind: 'pretty'; color: boolean }
  | { kind: 'file'; file: string; maxBytes?: number }
  /** For tests: every line, as written. */
  | { kind: 'stream'; stream: { write(line: string): void } };

/** Where logs go when nothing is said: pretty on a terminal, JSON otherwise. */
export const defaultTarget = (): LogTarget => (process.stdout.isTTY ? { kind: 'pretty', color: process.stdout.hasColors?.() ?? false } : { kind: 'json' });

/** The root logger; each part logs through a child naming it: `root.child({ component: 'dns' })`. */
export function createLogger(level: LogLevel, target: LogTarget): Logger {
  const options: pino.LoggerOptions = {
    level,
    base: { pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
  };
  return pino(options, destination(target));
}

function destination(target: LogTarget): pino.DestinationStream {
  switch (target.kind) {
    case 'stream':
      return target.stream;
    case 'file':
      return rotatingFile(target.file, target.maxBytes ?? LOG_FILE_MAX_BYTES);
    case 'pretty': {
      const out = (fd: 1 | 2) => ({ write: (line: string) => void fs.writeSync(fd, prettyLine(line, target.color)) });
      return pino.multistream([{ level: 'trace', stream: out(1) }, { level: 'warn', stream: out(2) }], { dedupe: true });
    }
    case 'json':
      // Synchronous writes: a line logged just before the process exits is not lost, and
      // the daemon logs a few lines per operation at most.
      return pino.multistream([
        { level: 'trace', stream: pino.destination({ dest: 1, sync: true }) },
        { level: 'warn', stream: pino.destination({ dest: 2, sync: true }) },
      ], { dedupe: true });
  }
}

/**
 * A log file of at most `maxBytes`: a line that would take it past the cap first moves it to
 * `<file>.1` (replacing the one there) and starts a new one. Writes are synchronous appends.
 */
export function rotatingFile(file: string, maxBytes: number): pino.DestinationStream {
  let fd = fs.openSync(file, 'a', 0o600);
  let size = fs.fstatSync(fd).size;
  return {
    write(line: string) {
      const bytes = Buffer.byteLength(line);
      if (size > 0 && size + bytes > maxBytes) {
        fs.closeSync(fd);
        fs.renameSync(file, `${file}.1`);
        fd = fs.openSync(file, 'a', 0o600);
        size = 0;
      }
      fs.writeSync(fd, line);
      size += bytes;
    },
  };
}

const LEVEL_COLORS: Record<string, string> = { trace: '90', debug: '36', info: '32', warn: '33', error: '31', fatal: '35' };
/** Fields shown in the line's head, not as key=value. */
const HEAD_FIELDS = new Set(['level', 'time', 'pid', 'component', 'sandbox', 'msg', 'err']);

/** One JSON log line as a terminal line: `12:00:00.123 INFO  dns [web] message key=value`. */
export function prettyLine(json: string, color = false): string {
  let r: Record<string, unknown>;
  try {
    r = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return json.endsWith('\n') ? json : `${json}\n`;
  }
  const level = String(r.level ?? '');
  const time = typeof r.time === 'string' ? r.time.slice(11, 23) : '';
  const paint = (code: string | undefined, s: string) => (color && code ? `\x1b[${code}m${s}\x1b[0m` : s);
  const rest = Object.entries(r).filter(([k]) => !HEAD_FIELDS.has(k))
    .map(([k, v]) => `${k}=${typeof v === 'string' && !/\s/.test(v) ? v : JSON.stringify(v)}`);
  const parts = [
    time,
    paint(LEVEL_COLORS[level], level.toUpperCase().padEnd(5)),
    String(r.component ?? ''),
    ...(r.sandbox !== undefined ? [`[${String(r.sandbox)}]`] : []),
    String(r.msg ?? ''),
    ...rest,
  ];
  // An error's stack on the lines after, as a terminal user expects it.
  const err = r.err as { message?: string; stack?: string } | undefined;
  const tail = err ? `\n${(err.stack ?? err.message ?? JSON.stringify(err)).replace(/^/gm, '    ')}` : '';
  return `${parts.filter((p) => p !== '').join(' ')}${tail}\n`;
}
