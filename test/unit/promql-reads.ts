// What a PromQL expression reads: the metrics it selects (with the labels its matchers
// name) and the labels it groups or matches by. A tokenizer, not a parser: enough to check
// a dashboard's queries against the metrics a daemon exports, not to check their syntax.

export interface Selector {
  /** The metric name; '' for a selector without one ({__name__=~"..."}). */
  metric: string;
  labels: string[];
}

export interface PromqlReads {
  selectors: Selector[];
  /** Labels in by (...), without (...), on (...), ignoring (...), group_left/right (...). */
  grouping: string[];
}

const GROUPING = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right']);
const KEYWORDS = new Set(['and', 'or', 'unless', 'bool', 'offset', 'atan2']);

const TOKEN = /\s+|"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`|\[[^\]]*\]|\$\{?\w+\}?|[A-Za-z_:][A-Za-z0-9_:]*|\d[\w.]*|=~|!~|!=|==|>=|<=|[{}(),=<>+\-*/%^@]/y;

function tokens(expr: string): string[] {
  const out: string[] = [];
  TOKEN.lastIndex = 0;
  while (TOKEN.lastIndex < expr.length) {
    const at = TOKEN.lastIndex;
    const m = TOKEN.exec(expr);
    if (!m) throw new Error(`cannot read PromQL at ${at}: ${expr.slice(at, at + 20)}`);
    if (!/^\s/.test(m[0])) out.push(m[0]);
  }
  return out;
}

const isName = (t: string | undefined) => t !== undefined && /^[A-Za-z_:][A-Za-z0-9_:]*$/.test(t);

export function readPromql(expr: string): PromqlReads {
  const t = tokens(expr);
  const selectors: Selector[] = [];
  const grouping: string[] = [];
  /** Reads the matchers from t[i] = '{'; returns the index after the '}'. */
  const matchers = (i: number, labels: string[]): number => {
    for (i++; i < t.length && t[i] !== '}'; i++) if (isName(t[i]) && ['=', '!=', '=~', '!~'].includes(t[i + 1])) labels.push(t[i]);
    return i + 1;
  };
  for (let i = 0; i < t.length;) {
    const tok = t[i];
    if (GROUPING.has(tok)) {
      i++;
      if (t[i] === '(') for (i++; i < t.length && t[i] !== ')'; i++) if (isName(t[i])) grouping.push(t[i]);
      i++;
    } else if (tok === '{') {
      const s: Selector = { metric: '', labels: [] };
      selectors.push(s);
      i = matchers(i, s.labels);
    } else if (isName(tok) && !KEYWORDS.has(tok)) {
      // A function or an aggregation (sum by (...) (...)) is followed by its arguments.
      if (t[i + 1] === '(' || GROUPING.has(t[i + 1])) {
        i++;
        continue;
      }
      const s: Selector = { metric: tok, labels: [] };
      selectors.push(s);
      i = t[i + 1] === '{' ? matchers(i + 1, s.labels) : i + 1;
    } else i++;
  }
  return { selectors, grouping };
}
