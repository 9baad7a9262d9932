// Addresses that DNS answers opened for each sandbox (the dns_allowed set), with when each
// expires: the engine's view of that set, so that repeated answers cost no kernel call and
// a sandbox's removal or policy change can close exactly what its answers opened.
import type { Nft } from '../kernel/nft.js';
import type { RulesetBuilder } from '../core/ruleset.js';

export class DnsAdmissions {
  /** Expiry (ms) by address, by sandbox address. */
  private readonly bySandbox = new Map<string, Map<string, number>>();

  constructor(private readonly nft: Nft, private readonly rules: RulesetBuilder) {}

  /**
   * Admits the sandbox at `ip` to `allAddresses` for `ttl` seconds. An element that is
   * still there is replaced (delete + add in one transaction) to refresh its timeout.
   */
  admit(ip: string, allAddresses: string[], ttl: number, now = Date.now()): void {
    let mine = this.bySandbox.get(ip);
    if (!mine) this.bySandbox.set(ip, (mine = new Map()));
    // An element with more than half its time left is not touched: repeated answers (the
    // common case) then cost no kernel call, and an address stays open at least ttl/2.
    const stale = (a: string) => (mine!.get(a) ?? 0) - now < (ttl * 1000) / 2;
    if (!allAddresses.some(stale)) return;
    const addresses = allAddresses.filter(stale);
    const live = addresses.filter((a) => (mine!.get(a) ?? 0) > now);
    try {
      this.nft.apply([...this.rules.forgetResolved(ip, live), ...this.rules.allowResolved(ip, addresses, ttl)], 'admit resolved addresses');
    } catch {
      // Our view was stale (an element expired just now): add what is missing one by one.
      for (const a of addresses) {
        try {
          this.nft.apply(this.rules.allowResolved(ip, [a], ttl));
        } catch {
          // present: keeps its older timeout
        }
      }
    }
    for (const a of addresses) mine.set(a, now + ttl * 1000);
  }

  /** Whether an answer has `daddr` open for the sandbox at `ip` now. */
  isOpen(ip: string, daddr: string, now = Date.now()): boolean {
    return (this.bySandbox.get(ip)?.get(daddr) ?? 0) > now;
  }

  /** Closes what answers opened for the sandbox at `ip` (its removal or a policy change). */
  forgetAll(ip: string, now = Date.now()): void {
    const mine = this.bySandbox.get(ip);
    this.bySandbox.delete(ip);
    if (!mine) return;
    for (const [a, exp] of mine) {
      if (exp <= now) continue;
      try {
        this.nft.apply(this.rules.forgetResolved(ip, [a]));
      } catch {
        // expired meanwhile
      }
    }
  }

  /** Forgets everything without kernel calls: the set was flushed with its table. */
  clear(): void {
    this.bySandbox.clear();
  }
}
