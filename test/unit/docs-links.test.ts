// Every relative link in README.md and docs/*.md points at a file that exists, and every
// #anchor at a heading that exists (GitHub's slugs), so moving a section cannot leave a
// reader at a dead link. Links to other sites are not checked (no network in unit tests).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

// dist/test/unit/docs-links.test.js -> the repository root (tsc does not copy Markdown).
const ROOT = fileURLToPath(new URL('../../../', import.meta.url));

/** The Markdown files the check covers, as paths relative to the root. */
function docFiles(): string[] {
  const docs = path.join(ROOT, 'docs');
  const inDocs = fs.existsSync(docs) ? fs.readdirSync(docs).filter((f) => f.endsWith('.md')).sort().map((f) => `docs/${f}`) : [];
  return ['README.md', ...inDocs];
}

/** Lines outside fenced code blocks, with their numbers (links in code are not links). */
function proseLines(text: string): { line: string; n: number }[] {
  const out: { line: string; n: number }[] = [];
  let fence: string | undefined;
  text.split('\n').forEach((line, i) => {
    const m = /^\s*(`{3,}|~{3,})/.exec(line);
    if (m) {
      if (fence === undefined) fence = m[1][0];
      else if (m[1][0] === fence) fence = undefined;
      return;
    }
    if (fence === undefined) out.push({ line, n: i + 1 });
  });
  return out;
}

/** Inline code spans removed: `[a](b)` inside backticks is text, not a link. */
const withoutCode = (line: string) => line.replace(/(`+)[\s\S]*?\1/g, '');

/** GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens. */
export function slug(heading: string): string {
  const text = heading
    .replace(/\[([^\]]*)\]\([^)]*\)/g, '$1') // a link's text
    .replace(/`/g, '')
    .replace(/<[^>]*>/g, '')
    .trim()
    .toLowerCase();
  return text.replace(/[^\p{L}\p{M}\p{N}\p{Pc} -]/gu, '').replace(/ /g, '-');
}

/** The anchors of a Markdown file: its headings' slugs, repeats numbered as GitHub does. */
export function anchors(text: string): Set<string> {
  const seen = new Map<string, number>();
  const out = new Set<string>();
  for (const { line } of proseLines(text)) {
    const m = /^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$/.exec(line);
    if (!m) continue;
    const base = slug(m[1]);
    const k = seen.get(base) ?? 0;
    seen.set(base, k + 1);
    out.add(k === 0 ? base : `${base}-${k}`);
  }
  return out;
}

/** Link targets of a Markdown file: inline links and images, and reference definitions. */
export function links(text: string): { target: string; n: number }[] {
  const out: { target: string; n: number }[] = [];
  for (const { line, n } of proseLines(text)) {
    const prose = withoutCode(line);
    for (const m of prose.matchAll(/\]\(\s*(?:<([^>]*)>|([^)\s]*))(?:\s+"[^"]*")?\s*\)/g)) out.push({ target: m[1] ?? m[2], n });
    const def = /^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+"[^"]*")?\s*$/.exec(prose);
    if (def) out.push({ target: def[1], n });
  }
  return out;
}

/** What is wrong with each link of `file` (relative to the root); empty when all resolve. */
export function brokenLinks(file: string, read = (p: string) => fs.readFileSync(path.join(ROOT, p), 'utf8'), exists = (p: string) => fs.existsSync(path.join(ROOT, p))): string[] {
  const problems: string[] = [];
  for (const { target, n } of links(read(file))) {
    const where = `${file}:${n}: ${target}`;
    if (target === '') {
      problems.push(`${where}: empty link`);
      continue;
    }
    if (/^[a-z][a-z0-9+.-]*:/i.test(target)) continue; // https:, mailto: ...
    const hash = target.indexOf('#');
    const filePart = decodeURIComponent(hash < 0 ? target : target.slice(0, hash));
    const anchor = hash < 0 ? undefined : decodeURIComponent(target.slice(hash + 1));
    const dest = filePart === '' ? file : path.posix.normalize(path.posix.join(path.posix.dirname(file), filePart));
    if (dest.startsWith('../') || path.posix.isAbsolute(dest)) {
      problems.push(`${where}: points outside the repository`);
      continue;
    }
    if (!exists(dest)) {
      problems.push(`${where}: no such file ${dest}`);
      continue;
    }
    if (anchor === undefined) continue;
    if (!dest.endsWith('.md')) {
      problems.push(`${where}: an anchor into a file that is not Markdown`);
      continue;
    }
    if (!anchors(read(dest)).has(anchor)) problems.push(`${where}: no heading with anchor #${anchor} in ${dest}`);
  }
  return problems;
}

describe('slug', () => {
  it('follows GitHub: lower case, punctuation out, spaces to hyphens', () => {
    assert.equal(slug('Why these dependencies'), 'why-these-dependencies');
    assert.equal(slug('Limits and accounting'), 'limits-and-accounting');
    assert.equal(slug('Create and delete (`bench:create-delete`)'), 'create-and-delete-benchcreate-delete');
    assert.equal(slug('What a create costs, step by step'), 'what-a-create-costs-step-by-step');
    assert.equal(slug('src/core: the pure core'), 'srccore-the-pure-core');
    assert.equal(slug('A [link](x.md) in a heading'), 'a-link-in-a-heading');
    assert.equal(slug('snake_case stays'), 'snake_case-stays');
  });

  it('numbers repeated headings, and ignores headings in code blocks', () => {
    const a = anchors('# A\n## Notes\n```\n# Notes\n```\n## Notes\n');
    assert.deepEqual([...a], ['a', 'notes', 'notes-1']);
  });
});

describe('links', () => {
  it('finds inline links and definitions, not code', () => {
    const text = 'See [a](docs/a.md#x) and [b](<b c.md> "t").\n`[no](code.md)`\n```\n[no](fence.md)\n```\n[ref]: docs/r.md\n';
    assert.deepEqual(links(text).map((l) => l.target), ['docs/a.md#x', 'b c.md', 'docs/r.md']);
  });

  it('reports a missing file, a missing anchor and a link out of the repository', () => {
    const files: Record<string, string> = {
      'README.md': '# Top\n## Here\n[ok](#here) [ok](docs/d.md#there) [bad](#nowhere) [bad](docs/none.md) [bad](docs/d.md#gone) [bad](../x.md) [web](https://example.com/#x)\n',
      'docs/d.md': '# There\n[ok](../README.md#top) [bad](README.md)\n',
    };
    const read = (p: string) => files[p];
    const exists = (p: string) => p in files;
    assert.deepEqual(brokenLinks('README.md', read, exists).map((p) => p.replace(/^README\.md:\d+: /, '')), [
      '#nowhere: no heading with anchor #nowhere in README.md',
      'docs/none.md: no such file docs/none.md',
      'docs/d.md#gone: no heading with anchor #gone in docs/d.md',
      '../x.md: points outside the repository',
    ]);
    assert.deepEqual(brokenLinks('docs/d.md', read, exists), ['docs/d.md:2: README.md: no such file docs/README.md']);
  });
});

describe('README.md and docs/*.md', () => {
  for (const file of docFiles()) {
    it(`${file}: every relative link and anchor resolves`, () => {
      assert.deepEqual(brokenLinks(file), []);
    });
  }
});
