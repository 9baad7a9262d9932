// The live sandboxes in the kernel's terms: each one's spec (address, link, resolved
// policy), by name, by address and by id, and what the ruleset derives from all of them
// (set elements, named objects, group peers). Pure bookkeeping: the engine applies what
// this computes.
import { Element, SandboxSpec, groupPeers, sandboxElements } from '../core/sandbox-elements.js';
import { SandboxObject, sandboxObjects } from '../core/sandbox-limits.js';
import type { Closed } from '../core/policy-compile.js';

/** A live sandbox's spec with its identity. */
export interface LiveSpec extends SandboxSpec {
  /** The row id: never reused, unlike names and addresses (what outlives a sandbox, such as a DNS query upstream, holds this). */
  id: number;
}

export class LiveSandboxes {
  /** @param instanceSubnet the instance's subnet, which sandbox allows never open (groups do). */
  constructor(private readonly instanceSubnet: Closed) {}

  private readonly byName = new Map<string, LiveSpec>();
  /** Name by address (DNS answers and logged packets come with an address). */
  private readonly nameByIp = new Map<string, string>();
  private readonly nameById = new Map<number, string>();

  /**
   * Told of every change of which spec holds an address, with the spec that held it before
   * (the name checks' reader follows policies by address, and acts on what changed).
   */
  onChange?: (ip: string, s: LiveSpec | undefined, before: LiveSpec | undefined) => void;

  set(name: string, s: LiveSpec): void {
    const old = this.byName.get(name);
    const before = this.at(s.ip)?.spec;
    this.forgetKeys(name);
    this.byName.set(name, s);
    this.nameByIp.set(s.ip, name);
    this.nameById.set(s.id, name);
    if (old && old.ip !== s.ip && !this.nameByIp.has(old.ip)) this.onChange?.(old.ip, undefined, old);
    this.onChange?.(s.ip, s, before);
  }

  delete(name: string): void {
    const old = this.byName.get(name);
    this.forgetKeys(name);
    this.byName.delete(name);
    if (old && !this.nameByIp.has(old.ip)) this.onChange?.(old.ip, undefined, old);
  }

  /** Drops `name`'s address and id entries, unless they name another sandbox by now. */
  private forgetKeys(name: string): void {
    const s = this.byName.get(name);
    if (s && this.nameByIp.get(s.ip) === name) this.nameByIp.delete(s.ip);
    if (s && this.nameById.get(s.id) === name) this.nameById.delete(s.id);
  }

  get(name: string): LiveSpec | undefined {
    return this.byName.get(name);
  }

  names(): string[] {
    return [...this.byName.keys()];
  }

  specs(): LiveSpec[] {
    return [...this.byName.values()];
  }

  /** The sandbox at `ip`, if one lives there. */
  at(ip: string): { name: string; spec: LiveSpec } | undefined {
    return this.named(this.nameByIp.get(ip));
  }

  /** The sandbox with row id `id`, if it still lives. */
  byId(id: number): { name: string; spec: LiveSpec } | undefined {
    return this.named(this.nameById.get(id));
  }

  private named(name: string | undefined): { name: string; spec: LiveSpec } | undefined {
    const spec = name === undefined ? undefined : this.byName.get(name);
    return name !== undefined && spec ? { name, spec } : undefined;
  }

  /** The sandboxes of `s`'s group other than `name` itself. */
  peersOf(name: string, s: SandboxSpec): SandboxSpec[] {
    if (!s.policy.group) return []; // the common case: no scan of every sandbox
    return groupPeers(s, [...this.byName].filter(([n]) => n !== name).map(([, p]) => p));
  }

  /** A sandbox's own elements, with its group's pairs. */
  elementsOf(name: string, s: SandboxSpec): Element[] {
    return sandboxElements(s, this.peersOf(name, s), this.instanceSubnet);
  }

  /** Every live sandbox's elements, each group pair once. */
  elements(): Element[] {
    const out: Element[] = [];
    const seen: SandboxSpec[] = [];
    for (const s of this.byName.values()) {
      out.push(...sandboxElements(s, groupPeers(s, seen), this.instanceSubnet));
      seen.push(s);
    }
    return out;
  }

  /** Every live sandbox's named objects (limits, quotas, connection tiers). */
  objects(used?: ReadonlyMap<string, number>): SandboxObject[] {
    return [...this.byName.values()].flatMap((s) => sandboxObjects(s, used));
  }
}
