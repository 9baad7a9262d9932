// The daemon's resolver for its sandboxes: the DNS gate (per-sandbox limits, allow-lists,
// rebinding, admissions through the engine) in front of the forwarder on the gateway, the
// query log, and per-sandbox counts for stats. Per-sandbox state is keyed by sandbox id:
// names and addresses are reused, ids never.
import { Config, parseUpstream } from '../config/schema.js';
import { parseCidr } from '../core/ipv4.js';
import { RESOLVER_SOCKET_MARK } from '../core/resolver-contract.js';

/**
 * The resolver's UDP receive buffer. The system default (208 KiB) holds ~250 small queries
 * or a dozen large datagrams: a pause of the event loop under a flood from one sandbox
 * dropped other sandboxes' queries (4,000 overflows in the hostile-input test). 8 MiB (16
 * with the kernel's overhead doubling) is seconds of the per-sandbox ceiling
 * (dnsPacketsPerSecond), and only taken while queries wait.
 */
const RESOLVER_RECEIVE_BUFFER = 8 * 1024 * 1024;
import { DnsCache } from '../dns/cache.js';
import { DnsForwarder } from '../dns/forwarder.js';
import { DnsGate, GateHooks, GateSandbox, QueryLogEntry } from '../dns/gate.js';
import { QUERY_OUTCOMES } from '../dns/query-outcomes.js';
import type { ResolverCounters } from '../api/types.js';
import type { Engine } from '../service/engine.js';
import { DnsLog, LogLimiter } from '../service/events.js';

/** Where the resolver reports trouble (socket errors): one line each. */
export type Log = (msg: string) => void;

export interface DnsCounts {
  queries: number;
  refused: number;
  limited: number;
  stripped: number;
}

/** Who else hears of the resolver's answers and refusals. */
export interface ResolverHooks {
  /** The refusals that pass the per-sandbox log limit (denial events). */
  refused: (e: QueryLogEntry) => void;
  /** Each answered query with its sandbox (the flow log names flows by it). */
  answered?: (s: GateSandbox, e: QueryLogEntry) => void;
  /** A name and the addresses it gave, for name checks without an allow-list (DnsGate's hook of that name). */
  answeredName?: GateHooks['answeredName'];
}

export class SandboxResolver {
  readonly forwarder: DnsForwarder;
  readonly queries: DnsLog;
  private readonly gate: DnsGate;
  /** Every query of each sandbox counted (not only the logged ones). */
  private readonly counts = new Map<number, DnsCounts>();
  private readonly refusalLog = new LogLimiter<number>();

  constructor(config: Config, private readonly engine: Engine, log: Log, hooks: ResolverHooks) {
    const { refused, answered } = hooks;
    this.queries = new DnsLog(engine.store.db);
    this.gate = new DnsGate({
      sandbox: (ip) => engine.sandboxByIp(ip),
      sandboxById: (id) => engine.sandboxById(id),
      admit: (s, addresses, ttl) => engine.admitResolved(s, addresses, ttl),
      answeredName: hooks.answeredName,
      log: (e, s) => {
        let c = this.counts.get(s.id);
        if (!c) this.counts.set(s.id, (c = { queries: 0, refused: 0, limited: 0, stripped: 0 }));
        c.queries++;
        if (e.verdict !== 'answered') c[e.verdict]++;
        // Answered queries are logged (in batches); refusals only at a limited rate per
        // sandbox, like the kernel's denial log, so a flood cannot fill the disk.
        if (e.verdict === 'answered' || e.verdict === 'stripped') {
          this.queries.record(e);
          answered?.(s, e);
        }
        else if (this.refusalLog.allow(s.id)) {
          this.queries.record(e);
          refused(e);
        }
      },
    }, { minTtl: config.dnsMinTtl, maxTtl: config.dnsMaxTtl, refuseWith: config.dnsRefuseWith, subnet: config.subnet });
    this.forwarder = new DnsForwarder({
      listenHost: config.gateway,
      upstreams: config.dnsUpstreams.map(parseUpstream),
      timeoutMs: config.dnsTimeoutMs,
      clients: parseCidr(config.subnet),
      socketMark: RESOLVER_SOCKET_MARK,
      receiveBufferBytes: RESOLVER_RECEIVE_BUFFER,
      gate: this.gate,
      cache: config.dnsCacheSize > 0 ? new DnsCache({ maxEntries: config.dnsCacheSize, maxTtl: config.dnsMaxTtl }) : undefined,
      log,
    });
  }

  countsOf(id: number): DnsCounts | undefined {
    return this.counts.get(id);
  }

  /** The resolver counters and cache size, for status and metrics. */
  get stats(): ResolverCounters {
    const { outcomes, upstreamTimeouts } = this.forwarder.stats;
    const queries = QUERY_OUTCOMES.reduce((n, o) => n + outcomes[o], 0);
    return { queries, ...outcomes, upstreamTimeouts, cacheEntries: this.forwarder.cacheEntries };
  }

  /** Drops a removed sandbox's resolver state (only memory is at stake: ids are never reused). */
  forget(id: number): void {
    this.gate.forget(id);
    this.counts.delete(id);
    this.refusalLog.forget(id);
  }

  /** Drops the state of every sandbox that is gone (after gc). */
  forgetGone(): void {
    this.gate.forgetGone();
    for (const id of [...this.counts.keys()]) if (!this.engine.sandboxById(id)) this.forget(id);
  }

  async stop(): Promise<void> {
    await this.forwarder.stop();
    this.queries.flush();
  }
}
