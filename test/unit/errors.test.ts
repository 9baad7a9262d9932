import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ERROR_CODES, ToastnetError, asToastnetError, isCode, type ErrorCode } from '../../src/errors.js';

const codes = Object.keys(ERROR_CODES) as ErrorCode[];

describe('error catalogue', () => {
  it('lists the documented codes', () => {
    assert.deepEqual([...codes].sort(), ['busy', 'conflict', 'exhausted', 'internal', 'invalid_argument', 'kernel', 'method_not_allowed', 'not_found', 'not_ready', 'too_large']);
  });

  it('gives every code a distinct exit code', () => {
    const exits: number[] = codes.map((c) => ERROR_CODES[c].exit);
    assert.equal(new Set(exits).size, codes.length, `exit codes collide: ${JSON.stringify(exits)}`);
    for (const c of codes) {
      const e = ERROR_CODES[c].exit;
      assert.ok(Number.isInteger(e) && e >= 1 && e <= 125, `${c}: exit ${e} out of range`);
    }
    // 0 means success: no failure may exit 0.
    assert.ok(!exits.includes(0));
  });

  it('gives every code an HTTP error status', () => {
    for (const c of codes) {
      const s = ERROR_CODES[c].http;
      assert.ok(Number.isInteger(s) && s >= 400 && s <= 599, `${c}: http ${s} is not an error status`);
      assert.ok(ERROR_CODES[c].summary.length > 0, `${c}: no summary`);
    }
  });

  it('maps client errors to 4xx and server-side ones to 5xx', () => {
    assert.equal(ERROR_CODES.invalid_argument.http, 400);
    assert.equal(ERROR_CODES.not_found.http, 404);
    assert.equal(ERROR_CODES.conflict.http, 409);
    assert.equal(ERROR_CODES.method_not_allowed.http, 405);
    assert.equal(ERROR_CODES.too_large.http, 413);
    assert.equal(ERROR_CODES.internal.http, 500);
    assert.equal(ERROR_CODES.internal.exit, 1);
  });
});

describe('ToastnetError', () => {
  it('exposes code, status, exit code and JSON', () => {
    const e = new ToastnetError('not_found', 'no sandbox "x"', { name: 'x' });
    assert.ok(e instanceof Error);
    assert.equal(e.name, 'ToastnetError');
    assert.equal(e.code, 'not_found');
    assert.equal(e.httpStatus, 404);
    assert.equal(e.exitCode, 3);
    assert.deepEqual(e.details, { name: 'x' });
    assert.deepEqual(JSON.parse(JSON.stringify(e)), { code: 'not_found', message: 'no sandbox "x"' });
  });

  it('asToastnetError keeps ToastnetErrors and wraps anything else as internal', () => {
    const orig = new ToastnetError('conflict', 'taken');
    assert.equal(asToastnetError(orig), orig);
    const wrapped = asToastnetError(new TypeError('boom'));
    assert.equal(wrapped.code, 'internal');
    assert.equal(wrapped.message, 'boom');
    const fromString = asToastnetError('plain string');
    assert.equal(fromString.code, 'internal');
    assert.equal(fromString.message, 'plain string');
  });

  it('isCode recognises only catalogue codes', () => {
    for (const c of codes) assert.equal(isCode(c), true);
    assert.equal(isCode('nope'), false);
    assert.equal(isCode('toString'), false);
    assert.equal(isCode('__proto__'), false);
  });
});
