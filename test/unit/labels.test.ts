// Sandbox labels: Kubernetes' key and value syntax, the --label flag, the metric label names.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ToastnetError } from '../../src/errors.js';
import { LABEL_KEY_RE, LABEL_VALUE_RE, MAX_LABELS, metricLabelName, parseLabelFlags, validateLabels } from '../../src/core/labels.js';

const invalid = (re: RegExp) => (e: unknown) => e instanceof ToastnetError && e.code === 'invalid_argument' && re.test(e.message) && !e.message.includes('\n');

describe('labels', () => {
  it('keys: NAME (1-63, alphanumeric at both ends, -_. inside) or PREFIX/NAME with a lowercase DNS prefix', () => {
    for (const k of ['app', 'a', 'A_b.c-9', 'x'.repeat(63), 'example.com/team', 'app.kubernetes.io/name', 'a-b/c']) assert.ok(LABEL_KEY_RE.test(k), k);
    for (const k of ['', '-a', 'a-', '.a', 'x'.repeat(64), 'a b', 'a=b', 'Example.com/x', '/x', 'a/', 'a/b/c', `${'a'.repeat(254)}/x`, 'é']) assert.ok(!LABEL_KEY_RE.test(k), k);
  });

  it('values: empty, or as a NAME', () => {
    for (const v of ['', 'v', 'v1.2_3-x', 'x'.repeat(63)]) assert.ok(LABEL_VALUE_RE.test(v), v);
    for (const v of ['-v', 'v-', 'a b', 'x'.repeat(64), 'a/b', 'a=b']) assert.ok(!LABEL_VALUE_RE.test(v), v);
  });

  it('validateLabels: one line naming the label; not an object, a non-string value or too many are refused', () => {
    assert.deepEqual(validateLabels(undefined), {});
    assert.deepEqual(validateLabels({ team: 'ml' }), { team: 'ml' });
    assert.throws(() => validateLabels({ 'bad key': 'x' }), invalid(/^labels: "bad key": a label key is NAME or PREFIX\/NAME/));
    assert.throws(() => validateLabels({ team: 'a b' }), invalid(/^labels: "team": a label value is empty or 1-63/));
    assert.throws(() => validateLabels({ team: 3 }), invalid(/"team": a label value/));
    assert.throws(() => validateLabels(['a']), invalid(/want an object/));
    const many = Object.fromEntries(Array.from({ length: MAX_LABELS + 1 }, (_, i) => [`k${i}`, 'v']));
    assert.throws(() => validateLabels(many), invalid(new RegExp(`${MAX_LABELS + 1} labels, at most ${MAX_LABELS}`)));
  });

  it('--label KEY=VALUE, or KEY alone for an empty value; a value with "=" is refused; a later key wins', () => {
    assert.deepEqual(parseLabelFlags(['team=ml', 'tier', 'team=infra']), { team: 'infra', tier: '' });
    assert.throws(() => parseLabelFlags(['team=a=b']), invalid(/^--label team=a=b: "team": a label value/));
    assert.throws(() => parseLabelFlags(['=x']), invalid(/^--label =x: "": a label key/));
  });

  it('metric label names: label_ and the key with what Prometheus does not allow as _', () => {
    assert.equal(metricLabelName('team'), 'label_team');
    assert.equal(metricLabelName('app.kubernetes.io/name'), 'label_app_kubernetes_io_name');
    assert.match(metricLabelName('a-b.c/D_e'), /^[a-zA-Z_][a-zA-Z0-9_]*$/);
  });
});
