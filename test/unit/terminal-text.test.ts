import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { printable } from '../../src/cli/terminal-text.js';

describe('printable (sandbox-controlled text shown to an operator)', () => {
  it('writes escape sequences and other control characters as visible escapes', () => {
    assert.equal(printable('\x1b[2J\x1b]0;owned\x07evil.test'), '\\x1b[2J\\x1b]0;owned\\x07evil.test');
    assert.equal(printable('a\rb\nc\td\x00\x7f\x9b'), 'a\\x0db\\x0ac\\x09d\\x00\\x7f\\x9b');
    assert.doesNotMatch(printable(String.fromCharCode(...Array.from({ length: 32 }, (_, i) => i))), /[\x00-\x1f]/);
  });

  it('neutralises bidirectional overrides that reorder what is read', () => {
    assert.equal(printable('pypi.org\u202eexe.'), 'pypi.org\\u{202e}exe.');
    assert.equal(printable('\u2066x\u2069'), '\\u{2066}x\\u{2069}');
  });

  it('leaves ordinary names, punctuation and non-ASCII letters alone', () => {
    const s = '2026-12-07T00:00:00Z  web  dns A bücher.example  refused  (not in egress.domains)';
    assert.equal(printable(s), s);
  });
});
