// Sandbox labels: key=value pairs an orchestrator attaches at create (`--label`, the API's
// `labels`) to find its sandboxes again (`ls --filter label=...`) and to group them in
// metrics (config `metricsLabels`). The syntax is Kubernetes' (a key is NAME or PREFIX/NAME,
// a value at most 63 characters), so labels carry over from the pods the sandboxes serve.
import { z } from 'zod';
import { ToastnetError } from '../errors.js';

/** NAME: 1-63 of [A-Za-z0-9-_.], beginning and ending with a letter or digit; PREFIX: a lowercase DNS subdomain of at most 253. */
export const LABEL_KEY_RE = /^(?:(?=[a-z0-9.-]{1,253}\/)[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*\/)?(?=.{1,63}$)[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?$/;
/** Empty, or as a key's NAME. */
export const LABEL_VALUE_RE = /^(?:(?=.{1,63}$)[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?)?$/;
/** Labels are metadata, not storage: a bound keeps every row and API answer small. */
export const MAX_LABELS = 64;

const KEY_RULE = 'a label key is NAME or PREFIX/NAME: NAME 1-63 of [A-Za-z0-9-_.] beginning and ending with a letter or digit, PREFIX a lowercase DNS name';
const VALUE_RULE = 'a label value is empty or 1-63 of [A-Za-z0-9-_.] beginning and ending with a letter or digit';

export type Labels = Record<string, string>;

export const LabelsSchema = z.record(
  z.string().regex(LABEL_KEY_RE, KEY_RULE),
  z.string().regex(LABEL_VALUE_RE, VALUE_RULE),
).refine((l) => Object.keys(l).length <= MAX_LABELS, `at most ${MAX_LABELS} labels`)
  .describe('key=value metadata (Kubernetes label syntax): for ls --filter label=..., and metricsLabels');

/** Checks a labels object; one line naming the label at fault. */
export function validateLabels(labels: unknown, where = 'labels'): Labels {
  if (labels === undefined) return {};
  if (typeof labels !== 'object' || labels === null || Array.isArray(labels)) throw new ToastnetError('invalid_argument', `${where}: want an object of key: value strings`);
  const entries = Object.entries(labels);
  if (entries.length > MAX_LABELS) throw new ToastnetError('invalid_argument', `${where}: ${entries.length} labels, at most ${MAX_LABELS}`);
  for (const [k, v] of entries) {
    if (!LABEL_KEY_RE.test(k)) throw new ToastnetError('invalid_argument', `${where}: ${JSON.stringify(k)}: ${KEY_RULE}`);
    if (typeof v !== 'string' || !LABEL_VALUE_RE.test(v)) throw new ToastnetError('invalid_argument', `${where}: ${JSON.stringify(k)}: ${VALUE_RULE}`);
  }
  return labels as Labels;
}

/** `--label KEY=VALUE` (or `KEY`, an empty value) into labels; a later key replaces an earlier one. */
export function parseLabelFlags(flags: string[]): Labels {
  const out: Labels = {};
  for (const f of flags) {
    const eq = f.indexOf('=');
    const [k, v] = eq < 0 ? [f, ''] : [f.slice(0, eq), f.slice(eq + 1)];
    validateLabels({ [k]: v }, `--label ${f}`);
    out[k] = v;
  }
  return validateLabels(out, '--label');
}

/**
 * The Prometheus label name a label key becomes on per-sandbox series: `label_` and the key
 * with every character Prometheus does not allow as `_` (as kube-state-metrics does:
 * app.kubernetes.io/name -> label_app_kubernetes_io_name).
 */
export const metricLabelName = (key: string) => `label_${key.replace(/[^A-Za-z0-9_]/g, '_')}`;
