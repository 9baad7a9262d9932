// Compiles a sandbox's allow/deny entries into disjoint boxes of (destination address
// range, protocol range, port range) -> verdict, which become elements of one interval
// verdict map in the kernel (nftables does not allow overlapping elements, and a lookup
// must give the precedence below without rules per sandbox).
//
// Precedence: the most specific entry that covers a packet decides: longer prefix first,
// then an entry with ports over one without, then one naming a protocol over one without;
// at equal specificity deny wins over allow.
//
// Allows never open a `closed` range (the instance's own subnet: only groups open other
// sandboxes, so an operator's `--allow 10.0.0.0/8` for a VPC does not open them too).
// Where an allow would decide inside it, nothing decides and the ruleset's later rules
// (group pairs, then "other sandboxes") do; denies inside it still narrow what groups open.
import { EgressRule } from './egress-rule.js';
import { cidrLast } from './ipv4.js';

export type Verdict = 'allow' | 'deny';

const PROTO: Record<string, number> = { icmp: 1, tcp: 6, udp: 17 };

export interface Box {
  dst: [number, number];
  proto: [number, number];
  port: [number, number];
}

export interface Cell extends Box {
  verdict: Verdict;
  /** The entry that decided, as written: for logs and `policy explain`. */
  rule: string;
}

interface Entry extends Box {
  verdict: Verdict;
  rule: EgressRule;
  spec: [number, number, number];
}

function entries(allow: EgressRule[], deny: EgressRule[]): Entry[] {
  const out: Entry[] = [];
  const add = (r: EgressRule, verdict: Verdict) => {
    const dst: [number, number] = [r.cidr.network, cidrLast(r.cidr)];
    const port: [number, number] = r.ports ? [r.ports.from, r.ports.to] : [0, 65535];
    const spec: [number, number, number] = [r.cidr.prefix, r.ports ? 1 : 0, r.proto ? 1 : 0];
    const protos: [number, number][] = r.proto ? [[PROTO[r.proto], PROTO[r.proto]]] : r.ports ? [[6, 6], [17, 17]] : [[0, 255]];
    for (const proto of protos) out.push({ dst, proto, port, verdict, rule: r, spec });
  };
  for (const r of allow) add(r, 'allow');
  for (const r of deny) add(r, 'deny');
  return out;
}

/** true if a should win over b. */
function beats(a: Entry, b: Entry): boolean {
  for (let i = 0; i < 3; i++) if (a.spec[i] !== b.spec[i]) return a.spec[i] > b.spec[i];
  return a.verdict === 'deny' && b.verdict === 'allow';
}

function winner(es: Entry[]): Entry | undefined {
  let w: Entry | undefined;
  for (const e of es) if (!w || beats(e, w)) w = e;
  return w;
}

/** Elementary intervals between all boundaries of the given ranges. */
function cuts(ranges: [number, number][]): [number, number][] {
  const pts = new Set<number>();
  for (const [lo, hi] of ranges) {
    pts.add(lo);
    pts.add(hi + 1);
  }
  const sorted = [...pts].sort((a, b) => a - b);
  const out: [number, number][] = [];
  for (let i = 0; i + 1 < sorted.length; i++) out.push([sorted[i], sorted[i + 1] - 1]);
  return out;
}

const covers = (r: [number, number], x: [number, number]) => r[0] <= x[0] && r[1] >= x[1];

/** An address range (inclusive numbers) that allows never open. */
export type Closed = [number, number];

/** `r` without `closed`: none, one or two ranges. */
function outside(r: [number, number], closed: Closed): [number, number][] {
  if (closed[1] < r[0] || closed[0] > r[1]) return [r];
  const out: [number, number][] = [];
  if (r[0] < closed[0]) out.push([r[0], closed[0] - 1]);
  if (r[1] > closed[1]) out.push([closed[1] + 1, r[1]]);
  return out;
}

export function compileEgress(allow: EgressRule[], deny: EgressRule[], closed?: Closed): Cell[] {
  const cells = compileAll(allow, deny);
  if (!closed) return cells;
  return cells.flatMap((c) => (c.verdict === 'deny' ? [c] : outside(c.dst, closed).map((dst) => ({ ...c, dst }))));
}

function compileAll(allow: EgressRule[], deny: EgressRule[]): Cell[] {
  const all = entries(allow, deny);
  const out: Cell[] = [];
  let prev: { dst: [number, number]; sig: string; cells: Cell[] } | undefined;
  for (const dst of cuts(all.map((e) => e.dst))) {
    const e1 = all.filter((e) => covers(e.dst, dst));
    if (e1.length === 0) {
      prev = undefined;
      continue;
    }
    const cells: Cell[] = [];
    for (const proto of cuts(e1.map((e) => e.proto))) {
      const e2 = e1.filter((e) => covers(e.proto, proto));
      if (e2.length === 0) continue;
      let run: Cell | undefined;
      for (const port of cuts(e2.map((e) => e.port))) {
        const w = winner(e2.filter((e) => covers(e.port, port)));
        if (!w) {
          run = undefined;
          continue;
        }
        if (run && run.verdict === w.verdict && run.rule === w.rule.text && run.port[1] + 1 === port[0]) {
          run.port = [run.port[0], port[1]];
        } else {
          run = { dst, proto, port, verdict: w.verdict, rule: w.rule.text };
          cells.push(run);
        }
      }
    }
    // Neighbouring address ranges decided the same way become one element.
    const sig = JSON.stringify(cells.map((c) => [c.proto, c.port, c.verdict, c.rule]));
    if (prev && prev.sig === sig && prev.dst[1] + 1 === dst[0]) {
      prev.dst[1] = dst[1];
      for (const c of prev.cells) c.dst = [prev.dst[0], dst[1]];
      continue;
    }
    const copy = cells.map((c) => ({ ...c, dst: [dst[0], dst[1]] as [number, number] }));
    out.push(...copy);
    prev = { dst: [dst[0], dst[1]], sig, cells: copy };
  }
  return out;
}

/** The decision for one packet, by the same precedence (reference for tests and logs). */
export function decideEgress(allow: EgressRule[], deny: EgressRule[], daddr: number, proto: number, port: number, closed?: Closed): { verdict: Verdict; rule: string } | undefined {
  const w = winner(entries(allow, deny).filter((e) => covers(e.dst, [daddr, daddr]) && covers(e.proto, [proto, proto]) && covers(e.port, [port, port])));
  if (!w || (w.verdict === 'allow' && closed && covers(closed, [daddr, daddr]))) return undefined;
  return { verdict: w.verdict, rule: w.rule.text };
}

