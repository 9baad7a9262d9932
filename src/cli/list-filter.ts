// `ls --filter KEY=VALUE`: which sandboxes to list. Keys: mode (veth, macvlan, tap), name (a
// glob: `*` any run of characters, `?` one character, nothing else special, matched against
// the whole name), label (label=K=V: label K is V; label=K: it has label K), and for
// containers attached through CNI container (their id) and pod (`namespace/name`), globs
// too. Values of the same key are alternatives, except labels, which must all match (as
// docker's: a label filter narrows); different keys must all match.
import { ToastnetError } from '../errors.js';
import { LINK_MODES } from '../core/link-modes.js';
import { validateLabels } from '../core/labels.js';
import type { SandboxInfo } from '../api/types.js';

const FILTER_KEYS = ['mode', 'name', 'label', 'container', 'pod'] as const;
type FilterKey = (typeof FILTER_KEYS)[number];

/** A glob as an anchored regular expression; every other character stands for itself. */
export function globToRegExp(glob: string): RegExp {
  const body = [...glob].map((ch) => (ch === '*' ? '.*' : ch === '?' ? '.' : ch.replace(/[\\^$.|+()[\]{}]/g, '\\$&'))).join('');
  return new RegExp(`^${body}$`, 's');
}

/** Parses the `--filter` values into one predicate; a malformed one is invalid_argument. */
export function sandboxFilter(specs: string[]): (s: SandboxInfo) => boolean {
  const tests = new Map<FilterKey, ((s: SandboxInfo) => boolean)[]>();
  const labels: ((s: SandboxInfo) => boolean)[] = [];
  for (const spec of specs) {
    const eq = spec.indexOf('=');
    const key = spec.slice(0, eq);
    const value = spec.slice(eq + 1);
    if (eq < 0 || !(FILTER_KEYS as readonly string[]).includes(key) || value === '') {
      throw new ToastnetError('invalid_argument', `--filter ${spec}: want mode=${Object.keys(LINK_MODES).join('|')}, name=GLOB, label=KEY or label=KEY=VALUE (CNI containers: container=GLOB, pod=NAMESPACE/NAME glob)`);
    }
    let test: (s: SandboxInfo) => boolean;
    if (key === 'label') {
      const [k, v] = value.includes('=') ? [value.slice(0, value.indexOf('=')), value.slice(value.indexOf('=') + 1)] : [value, undefined];
      validateLabels({ [k]: v ?? '' }, `--filter ${spec}`);
      labels.push(v === undefined ? (s) => Object.hasOwn(s.labels, k) : (s) => Object.hasOwn(s.labels, k) && s.labels[k] === v);
      continue;
    }
    if (key === 'mode') {
      if (!Object.hasOwn(LINK_MODES, value)) throw new ToastnetError('invalid_argument', `--filter ${spec}: mode is one of ${Object.keys(LINK_MODES).join(', ')}`);
      test = (s) => s.mode === value;
    } else {
      const re = globToRegExp(value);
      const field = (s: SandboxInfo): string | undefined => {
        const a = s.attachment;
        if (key === 'name') return s.name;
        if (key === 'container') return a?.containerId;
        return a?.podName === undefined ? undefined : `${a.podNamespace ?? ''}/${a.podName}`;
      };
      test = (s) => {
        const v = field(s);
        return v !== undefined && re.test(v);
      };
    }
    tests.set(key as FilterKey, [...(tests.get(key as FilterKey) ?? []), test]);
  }
  return (s) => labels.every((t) => t(s)) && [...tests.values()].every((alternatives) => alternatives.some((t) => t(s)));
}
