// Per-sandbox accounting: what each sandbox sent, received and had blocked (the counters of
// its elements in the acct_* sets plus what was carried over table rebuilds), its quotas' use, and the
// blocked packets the kernel logged, by reason.
import type Database from 'better-sqlite3';
import type { Limits } from '../core/policy.js';
import { quotaNames } from '../core/sandbox-limits.js';
import { BLOCKED_COUNT_COMMENT, REPORTED_COUNT_COMMENT } from '../core/ruleset.js';
import type { Nft } from '../kernel/nft.js';
import type { Store } from '../store/store.js';
import type { RuntimeAttachment, SandboxStats, Traffic } from '../api/types.js';

// The shapes the API answers with live with its types (api/types.ts), which the client
// package exports without this module's native imports.
export type { SandboxStats, Traffic };

export interface AccountedSandbox {
  id: number;
  name: string;
  ip: string;
  createdAt: number;
  limits: Limits;
  /** Whether it publishes ports (its stats then count the connections they let in). */
  publishes?: boolean;
  attachment?: RuntimeAttachment;
}

export interface KernelCounters {
  out: Map<string, Traffic>;
  in: Map<string, Traffic>;
  blocked: Map<string, Traffic>;
}

/** The kernel's per-sandbox counters, by sandbox address. */
export function readCounters(nft: Nft, table: string): KernelCounters {
  return { out: nft.listCounters('inet', table, 'acct_out'), in: nft.listCounters('inet', table, 'acct_in'), blocked: nft.listCounters('inet', table, 'acct_blocked') };
}

const ZERO: Traffic = { packets: 0, bytes: 0 };

/** One sandbox's kernel counts (zero for a sandbox the sets do not hold). */
export function countsOf(c: KernelCounters, ip: string): { out: Traffic; in: Traffic; blocked: Traffic } {
  return { out: c.out.get(ip) ?? ZERO, in: c.in.get(ip) ?? ZERO, blocked: c.blocked.get(ip) ?? ZERO };
}

/** The table's quotas, by object name: their size and what was used. */
export function readQuotas(nft: Nft, table: string): Map<string, { bytes: number; used: number }> {
  const out = new Map<string, { bytes: number; used: number }>();
  for (const q of nft.listObjects('quota', 'inet', table)) out.set(String(q.name), { bytes: Number(q.bytes ?? 0), used: Number(q.used ?? 0) });
  return out;
}

/**
 * Connections let in through published ports, by sandbox address: the counters of its
 * `published` elements (sandbox . protocol . port), which count each flow's first packet.
 */
function readPublished(nft: Nft, table: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const [key, c] of nft.listCounters('inet', table, 'published')) {
    const ip = key.split(' . ')[0];
    out.set(ip, (out.get(ip) ?? 0) + c.packets);
  }
  return out;
}

/** Reads the kernel's counters and quotas once and builds each sandbox's figures. */
export function readStats(nft: Nft, table: string, store: Store, sandboxes: AccountedSandbox[]): SandboxStats[] {
  const counters = readCounters(nft, table);
  const published = sandboxes.some((s) => s.publishes) ? readPublished(nft, table) : new Map<string, number>();
  const quotas = readQuotas(nft, table);
  const logged = loggedByReason(store.db);
  return sandboxes.map((s) => {
    const carried = store.carriedUsage(s.id);
    const { out: o, in: i, blocked: b } = countsOf(counters, s.ip);
    const q = quotaNames(s.ip);
    return {
      name: s.name,
      ip: s.ip,
      sent: { packets: carried.outPackets + o.packets, bytes: carried.outBytes + o.bytes },
      received: { packets: carried.inPackets + i.packets, bytes: carried.inBytes + i.bytes },
      blocked: { packets: carried.blockedPackets + b.packets, logged: logged(s.name, s.createdAt) },
      quota: {
        ...(quotas.has(q.egress) && s.limits.egressBytes ? { egress: quotas.get(q.egress)! } : {}),
        ...(quotas.has(q.ingress) && s.limits.ingressBytes ? { ingress: quotas.get(q.ingress)! } : {}),
      },
      limits: s.limits,
      ...(s.publishes ? { published: { connections: published.get(s.ip) ?? 0 } } : {}),
      ...(s.attachment ? { attachment: s.attachment } : {}),
    };
  });
}

/** Logged denials per reason for a sandbox since it was created (a name can be reused). */
function loggedByReason(db: Database.Database): (sandbox: string, since: number) => Record<string, number> {
  const exists = db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events'").get();
  if (!exists) return () => ({});
  const q = db.prepare<[string, number], { reason: string; n: number }>('SELECT reason, count(*) AS n FROM events WHERE sandbox = ? AND time >= ? GROUP BY reason ORDER BY reason');
  return (sandbox, since) => Object.fromEntries(q.all(sandbox, since).map((r) => [r.reason, r.n]));
}

/**
 * Exact counts by deny reason, instance-wide since the table was last built: packets each
 * deny_<reason> chain blocked, and let through in report mode, from its rules' counters
 * (a terse listing of the table: rules, no set elements). Pure over the listing.
 */
export function denialCountsOf(items: Record<string, unknown>[]): Record<string, { blocked: number; reported: number }> {
  const out: Record<string, { blocked: number; reported: number }> = {};
  for (const item of items) {
    const r = item.rule as { chain?: string; comment?: string; expr?: { counter?: { packets: number } }[] } | undefined;
    const m = r?.chain ? /^deny_([a-z_]+)$/.exec(r.chain) : null;
    if (!r || !m) continue;
    const packets = Number(r.expr?.find((e) => e.counter)?.counter?.packets ?? 0);
    const c = (out[m[1]] ??= { blocked: 0, reported: 0 });
    if (r.comment === BLOCKED_COUNT_COMMENT) c.blocked += packets;
    else if (r.comment === REPORTED_COUNT_COMMENT) c.reported += packets;
  }
  return out;
}

export function readDenialCounts(nft: Nft, table: string): Record<string, { blocked: number; reported: number }> {
  return denialCountsOf(nft.listTable('inet', table, { terse: true }) ?? []);
}

