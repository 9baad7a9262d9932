// Text a sandbox controls (the DNS names it asks for, and everything derived from them)
// reaches an operator's terminal through `events`: control characters in it would be
// terminal escape sequences (moving the cursor, rewriting earlier lines, setting the
// window title), and bidirectional overrides would reorder what the operator reads.
// Human output shows them as visible escapes instead; --json output is escaped by JSON.

// C0 controls, DEL, C1 controls, and the Unicode bidirectional embeddings, overrides and isolates.
const UNPRINTABLE = /[\u0000-\u001f\u007f-\u009f\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;

/** `s` with every control and bidi-control character written as \xNN or \u{NNNN}. */
export function printable(s: string): string {
  return s.replace(UNPRINTABLE, (c) => {
    const n = c.codePointAt(0)!;
    return n <= 0xff ? `\\x${n.toString(16).padStart(2, '0')}` : `\\u{${n.toString(16)}}`;
  });
}
