// nftables through libnftables in-process, with its JSON API: one persistent context (one
// netlink socket) for the life of the process. Spawning `nft` costs ~5 ms per call and up
// to 16 ms on deletes; a transaction here costs ~0.4 ms. Each call is one atomic
// transaction: the kernel applies all of it or none of it.
//
// Transactions that only add or delete set elements of known sets (a sandbox's create,
// delete, acquire, a DNS admission) skip libnftables: they go to the kernel as one
// nfnetlink batch (nft-set-codec.ts), ~0.1 ms instead of ~0.4 ms.
import type { NftCommand } from '../core/nft-schema.js';
import koffi from 'koffi';
import { ToastnetError } from '../errors.js';
import { NETLINK_NETFILTER, lib } from './libc.js';
import { SetSchemas, encodeElementBatch } from './nft-set-codec.js';
import { NetlinkError, NetlinkSocket } from './rtnetlink.js';
import { compatTargetRequest, queueRuleBatch } from './nfqueue-codec.js';


const NFT_CTX_OUTPUT_HANDLE = 1 << 3;
const NFT_CTX_OUTPUT_JSON = 1 << 4;
/** Listings without set contents (and libnftables then does not fetch them either). */
const NFT_CTX_OUTPUT_TERSE = 1 << 11;

interface LibNftables {
  ctxNew(flags: number): unknown;
  ctxFree(ctx: unknown): void;
  setOutputFlags(ctx: unknown, flags: number): void;
  bufferOutput(ctx: unknown): number;
  bufferError(ctx: unknown): number;
  run(ctx: unknown, cmd: string): number;
  output(ctx: unknown): string;
  error(ctx: unknown): string;
}

let nftlib: LibNftables | undefined;

function load(): LibNftables {
  if (nftlib) return nftlib;
  let l: ReturnType<typeof koffi.load>;
  try {
    l = koffi.load('libnftables.so.1');
  } catch {
    throw new ToastnetError('not_ready', 'libnftables.so.1 not found: install the Debian package libnftables1 (apt-get install libnftables1 nftables)');
  }
  const ctxPtr = koffi.pointer('nft_ctx', koffi.opaque());
  nftlib = {
    ctxNew: l.func('nft_ctx_new', ctxPtr, ['uint32_t']),
    ctxFree: l.func('nft_ctx_free', 'void', [ctxPtr]),
    setOutputFlags: l.func('nft_ctx_output_set_flags', 'void', [ctxPtr, 'uint32_t']),
    bufferOutput: l.func('nft_ctx_buffer_output', 'int', [ctxPtr]),
    bufferError: l.func('nft_ctx_buffer_error', 'int', [ctxPtr]),
    run: l.func('nft_run_cmd_from_buffer', 'int', [ctxPtr, 'const char *']),
    output: l.func('nft_ctx_get_output_buffer', 'const char *', [ctxPtr]),
    error: l.func('nft_ctx_get_error_buffer', 'const char *', [ctxPtr]),
  };
  return nftlib;
}

/** An nftables JSON command list, as libnftables takes it: {"nftables":[{add:{...}}, ...]}. */
export type { NftCommand };

export class Nft {
  private ctx: unknown;
  private readonly l: LibNftables;
  /** Where element-only transactions go (with `elementSets`); closed by free(). */
  private elementSock: NetlinkSocket | undefined;
  /** Transactions applied by each path (tests check which one a change took). */
  readonly applied = { elementBatches: 0, libnftables: 0 };

  /** `elementSets`: the sets whose element changes may bypass libnftables. */
  constructor(private readonly elementSets?: SetSchemas) {
    this.l = load();
    this.ctx = this.open();
    // In the namespace the libnftables context works in: the one this process works in.
    if (elementSets) this.elementSock = new NetlinkSocket(NETLINK_NETFILTER);
  }

  private open(): unknown {
    const ctx = this.l.ctxNew(0);
    this.l.setOutputFlags(ctx, NFT_CTX_OUTPUT_JSON | NFT_CTX_OUTPUT_HANDLE);
    this.l.bufferOutput(ctx);
    this.l.bufferError(ctx);
    return ctx;
  }

  /**
   * Drops the context's cache and buffers, and gives freed heap back to the system: after a
   * transaction with every sandbox's elements (a table rebuild), libnftables and the JSON
   * parser leave tens of MB allocated at 4,000 sandboxes.
   */
  compact(): void {
    this.l.ctxFree(this.ctx);
    this.ctx = this.open();
    lib().mallocTrim(0);
  }

  /** Frees the context and its netlink sockets. */
  free(): void {
    this.l.ctxFree(this.ctx);
    this.elementSock?.close();
    this.elementSock = undefined;
  }

  /** Runs commands as one atomic transaction; throws with the kernel's or libnftables' message on failure. */
  apply(commands: NftCommand[], what = 'nftables transaction'): void {
    if (commands.length === 0) return;
    const batch = this.elementSets && encodeElementBatch(commands, this.elementSets);
    if (batch && this.elementSock) {
      this.elementSock.execBatch(batch.begin, batch.messages, batch.end, what);
      this.applied.elementBatches++;
      return;
    }
    this.runRaw(JSON.stringify({ nftables: commands }), what);
    this.applied.libnftables++;
  }

  /**
   * Appends `queue num <num>` to a chain (what libnftables cannot create on kernels without
   * nft_queue: see nfqueue-codec.ts). Its own transaction, after the one that made the chain.
   */
  appendQueueRule(family: string, table: string, chain: string, num: number, flags = 0): void {
    const b = queueRuleBatch(family, table, chain, num, flags);
    const sock = this.elementSock ?? new NetlinkSocket(NETLINK_NETFILTER);
    try {
      sock.execBatch(b.begin, [b.rule], b.end, `queue rule in ${family} ${table} ${chain}`);
    } finally {
      if (sock !== this.elementSock) sock.close();
    }
  }

  /**
   * Whether the kernel has xtables target `name` at revision `rev` through nft_compat (asked,
   * nothing made). False for ENOENT (no such target), EPROTONOSUPPORT (the target without
   * that revision) and EINVAL (no nft_compat: nfnetlink has no such subsystem).
   */
  hasXtTarget(name: string, rev: number): boolean {
    const sock = this.elementSock ?? new NetlinkSocket(NETLINK_NETFILTER);
    try {
      sock.get(compatTargetRequest(name, rev), `xtables target ${name}`);
      return true;
    } catch (err) {
      if (err instanceof NetlinkError && [2 /* ENOENT */, 93 /* EPROTONOSUPPORT */, 22 /* EINVAL */].includes(err.errno)) return false;
      throw err;
    } finally {
      if (sock !== this.elementSock) sock.close();
    }
  }

  /**
   * Lists one table as parsed JSON items, or undefined if it does not exist. `terse`: without
   * the sets' elements, which with thousands of sandboxes are most of the table.
   */
  listTable(family: string, name: string, o: { terse?: boolean } = {}): Record<string, unknown>[] | undefined {
    if (o.terse) this.l.setOutputFlags(this.ctx, NFT_CTX_OUTPUT_JSON | NFT_CTX_OUTPUT_HANDLE | NFT_CTX_OUTPUT_TERSE);
    try {
      const out = this.runRaw(JSON.stringify({ nftables: [{ list: { table: { family, name } } }] }), 'list table');
      return (JSON.parse(out) as { nftables: Record<string, unknown>[] }).nftables;
    } catch (err) {
      if (isNoSuchObject(err)) return undefined;
      throw err;
    } finally {
      if (o.terse) this.l.setOutputFlags(this.ctx, NFT_CTX_OUTPUT_JSON | NFT_CTX_OUTPUT_HANDLE);
    }
  }

  /** Whether a table exists (cheap: no contents listed). */
  hasTable(family: string, name: string): boolean {
    return this.listTables().some((t) => t.family === family && t.name === name);
  }

  /**
   * The table's named objects of one kind with their state (counter packets/bytes, quota
   * used). nft 1.0.6 ignores the table filter for some kinds: filtered here again. Not for
   * limits: libnftables 1.0.6 crashes (SIGSEGV) listing limits with a table filter; they
   * come with listTable.
   */
  listObjects(kind: 'quota', family: string, table: string): Record<string, unknown>[] {
    const out = this.runRaw(JSON.stringify({ nftables: [{ list: { [`${kind}s`]: { family, table } } }] }), `list ${kind}s`);
    return (JSON.parse(out) as { nftables: Record<string, Record<string, unknown>>[] }).nftables
      .map((o) => o[kind])
      .filter((o) => o !== undefined && o.table === table && o.family === family);
  }

  /** A set's elements with their counters, by element value, a concatenation's parts joined by " . " (sets with a counter template). */
  listCounters(family: string, table: string, set: string): Map<string, { packets: number; bytes: number }> {
    const out = new Map<string, { packets: number; bytes: number }>();
    const raw = this.runRaw(JSON.stringify({ nftables: [{ list: { set: { family, table, name: set } } }] }), `list set ${set}`);
    for (const o of (JSON.parse(raw) as { nftables: { set?: { elem?: unknown[] } }[] }).nftables) {
      for (const e of o.set?.elem ?? []) {
        const el = (e as { elem?: { val: unknown; counter?: { packets: number; bytes: number } } }).elem;
        const parts = (el?.val as { concat?: unknown[] } | undefined)?.concat;
        if (el?.counter) out.set(Array.isArray(parts) ? parts.join(' . ') : String(el.val), { packets: Number(el.counter.packets), bytes: Number(el.counter.bytes) });
      }
    }
    return out;
  }

  /** A set's elements as libnftables lists them, or undefined when the table or set does not exist. */
  listSetElements(family: string, table: string, set: string): unknown[] | undefined {
    try {
      const raw = this.runRaw(JSON.stringify({ nftables: [{ list: { set: { family, table, name: set } } }] }), `list set ${set}`);
      return (JSON.parse(raw) as { nftables: { set?: { elem?: unknown[] } }[] }).nftables.flatMap((o) => o.set?.elem ?? []);
    } catch (err) {
      if (isNoSuchObject(err)) return undefined;
      throw err;
    }
  }

  /** A map's elements as libnftables lists them, or undefined when the table or map does not exist. */
  listMapElements(family: string, table: string, map: string): unknown[] | undefined {
    try {
      const raw = this.runRaw(JSON.stringify({ nftables: [{ list: { map: { family, table, name: map } } }] }), `list map ${map}`);
      return (JSON.parse(raw) as { nftables: { map?: { elem?: unknown[] } }[] }).nftables.flatMap((o) => o.map?.elem ?? []);
    } catch (err) {
      if (isNoSuchObject(err)) return undefined;
      throw err;
    }
  }

  /** Whether a chain exists in the table. */
  hasChain(family: string, table: string, name: string): boolean {
    try {
      this.runRaw(JSON.stringify({ nftables: [{ list: { chain: { family, table, name } } }] }), 'list chain');
      return true;
    } catch (err) {
      if (isNoSuchObject(err)) return false;
      throw err;
    }
  }

  /** Names of all tables of a family in this namespace. */
  listTables(): { family: string; name: string }[] {
    const out = this.runRaw(JSON.stringify({ nftables: [{ list: { tables: {} } }] }), 'list tables');
    return (JSON.parse(out) as { nftables: Record<string, { family: string; name: string }>[] }).nftables
      .filter((o) => o.table)
      .map((o) => ({ family: o.table.family, name: o.table.name }));
  }

  private runRaw(cmd: string, what: string): string {
    const rc = this.l.run(this.ctx, cmd);
    const out = this.l.output(this.ctx) ?? '';
    const err = this.l.error(this.ctx) ?? '';
    if (rc !== 0) {
      const first = err.split('\n').find((line) => line.trim() !== '') ?? `rc ${rc}`;
      throw new NftError(`${what}: ${first.trim()}`, /No such file or directory/.test(err));
    }
    return out;
  }
}

/**
 * A command libnftables refused. It reports errors only as text: whether the object named
 * was missing (the kernel's ENOENT, as libnftables words it) is read from that text here,
 * once, and nowhere else.
 */
export class NftError extends ToastnetError {
  constructor(message: string, readonly missing: boolean) {
    super('kernel', message);
  }
}

/** The table, chain, set or element a command named does not exist. */
export function isNoSuchObject(err: unknown): boolean {
  return err instanceof NftError && err.missing;
}
