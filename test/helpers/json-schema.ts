// A JSON Schema (2020-12) validator for the keywords the OpenAPI document uses, so tests
// check API answers against the document itself, independently of the zod schemas it was
// generated from. Unknown keywords are an error, not ignored: a check that silently skipped
// a keyword would pass anything.
type Schema = Record<string, unknown> | boolean;

const ANNOTATIONS = new Set(['description', 'title', 'default', 'examples', 'format', 'deprecated', 'readOnly', 'writeOnly', 'id']);

function typeOf(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  if (typeof v === 'number') return Number.isInteger(v) ? 'integer' : 'number';
  return typeof v;
}

/** Errors of `value` against `schema` (empty: valid); `$ref`s resolve against `root`. */
export function validate(root: unknown, schema: Schema, value: unknown, at = '$'): string[] {
  if (schema === true) return [];
  if (schema === false) return [`${at}: not allowed`];
  const errs: string[] = [];
  const sub = (s: unknown, v: unknown, where: string) => errs.push(...validate(root, s as Schema, v, where));
  for (const [k, kv] of Object.entries(schema)) {
    switch (k) {
      case '$ref': {
        const target = (kv as string).replace(/^#\//, '').split('/').reduce<unknown>((o, p) => (o as Record<string, unknown>)?.[p.replace(/~1/g, '/').replace(/~0/g, '~')], root);
        if (target === undefined) errs.push(`${at}: unresolved $ref ${kv as string}`);
        else sub(target, value, at);
        break;
      }
      case 'type': {
        const types = Array.isArray(kv) ? kv : [kv];
        const t = typeOf(value);
        if (!types.includes(t) && !(t === 'integer' && types.includes('number'))) errs.push(`${at}: ${t}, want ${types.join('|')}`);
        break;
      }
      case 'enum':
        if (!(kv as unknown[]).some((e) => JSON.stringify(e) === JSON.stringify(value))) errs.push(`${at}: ${JSON.stringify(value)} not one of ${JSON.stringify(kv)}`);
        break;
      case 'const':
        if (JSON.stringify(kv) !== JSON.stringify(value)) errs.push(`${at}: want ${JSON.stringify(kv)}`);
        break;
      case 'properties':
        if (typeOf(value) === 'object') {
          for (const [p, ps] of Object.entries(kv as Record<string, unknown>)) if (Object.hasOwn(value as object, p)) sub(ps, (value as Record<string, unknown>)[p], `${at}.${p}`);
        }
        break;
      case 'required':
        if (typeOf(value) === 'object') for (const p of kv as string[]) if (!Object.hasOwn(value as object, p)) errs.push(`${at}: missing "${p}"`);
        break;
      case 'additionalProperties':
        if (typeOf(value) === 'object') {
          const known = Object.keys((schema.properties ?? {}) as object);
          for (const [p, pv] of Object.entries(value as object)) if (!known.includes(p)) sub(kv, pv, `${at}.${p}`);
        }
        break;
      case 'propertyNames':
        if (typeOf(value) === 'object') for (const p of Object.keys(value as object)) sub(kv, p, `${at}[key ${p}]`);
        break;
      case 'items':
        if (Array.isArray(value)) value.forEach((v, i) => sub(kv, v, `${at}[${i}]`));
        break;
      case 'anyOf':
      case 'oneOf': {
        const passing = (kv as Schema[]).filter((s) => validate(root, s, value, at).length === 0).length;
        if (k === 'anyOf' ? passing === 0 : passing !== 1) errs.push(`${at}: ${passing} of ${k} match`);
        break;
      }
      case 'allOf':
        for (const s of kv as Schema[]) sub(s, value, at);
        break;
      case 'minimum':
        if (typeof value === 'number' && value < (kv as number)) errs.push(`${at}: ${value} < ${kv as number}`);
        break;
      case 'maximum':
        if (typeof value === 'number' && value > (kv as number)) errs.push(`${at}: ${value} > ${kv as number}`);
        break;
      case 'exclusiveMinimum':
        if (typeof value === 'number' && value <= (kv as number)) errs.push(`${at}: ${value} <= ${kv as number}`);
        break;
      case 'exclusiveMaximum':
        if (typeof value === 'number' && value >= (kv as number)) errs.push(`${at}: ${value} >= ${kv as number}`);
        break;
      case 'minLength':
        if (typeof value === 'string' && [...value].length < (kv as number)) errs.push(`${at}: shorter than ${kv as number}`);
        break;
      case 'maxLength':
        if (typeof value === 'string' && [...value].length > (kv as number)) errs.push(`${at}: longer than ${kv as number}`);
        break;
      case 'minItems':
        if (Array.isArray(value) && value.length < (kv as number)) errs.push(`${at}: fewer than ${kv as number} items`);
        break;
      case 'maxItems':
        if (Array.isArray(value) && value.length > (kv as number)) errs.push(`${at}: more than ${kv as number} items`);
        break;
      case 'pattern':
        if (typeof value === 'string' && !new RegExp(kv as string, 'u').test(value)) errs.push(`${at}: ${JSON.stringify(value)} does not match ${kv as string}`);
        break;
      default:
        if (!ANNOTATIONS.has(k)) errs.push(`${at}: the validator does not know the keyword "${k}"`);
    }
  }
  return errs;
}
