// The warm pool: sandbox networks made ahead of demand, so that a create is only the
// acquisition (rename, resolv.conf, one nftables transaction) instead of the namespace,
// links and routes. Members are veth (or, with defaultMode tap, TAP) networks that carry no policy (no set element: the
// filter drops whatever they might send) and are never reused: a removed sandbox is
// destroyed, and the pool refills with new networks.
import type { CreateOptions, Engine, SandboxInfo } from './engine.js';
import type { SandboxNetSpec } from '../kernel/sandbox-net.js';
import type { SandboxMode } from '../core/link-modes.js';

/** What the pool needs of the engine. */
export type PoolEngine = Pick<Engine, 'acquire' | 'create' | 'poolIdle' | 'reservePoolMember' | 'finishPoolMember' | 'dropPoolMember'>;

/** What builds members' kernel part (PoolBuilder: a worker thread). */
export interface MemberBuilder {
  build(net: SandboxNetSpec): Promise<void>;
  /** Unusable from now on: the pool starts another. */
  readonly dead: boolean;
  close(): Promise<void>;
}

export interface PoolOptions {
  /** Idle members to keep; 0 turns the pool off. */
  size: number;
  /** Refill (up to size) when fewer idle members than this remain. */
  refillBelow: number;
  /** The mode of a create that names none, and the mode the members are (default veth both). */
  defaultMode?: SandboxMode;
  holds?: SandboxMode;
}

/** Members queued on the builder at once (each holds a row and an address meanwhile). */
const QUEUED = 4;

export class WarmPool {
  private filling = false;
  private stopped = false;
  /** The refill under way (stop waits for it). */
  private fill: Promise<void> = Promise.resolve();
  /** Started with the first refill: a pool of size 0 runs no thread. */
  private builder: MemberBuilder | undefined;
  /** Acquisitions served by the pool, and creates of its mode it could not serve (status shows both). */
  readonly counts = { acquired: 0, missed: 0 };

  constructor(
    private readonly engine: PoolEngine,
    private readonly o: PoolOptions,
    private readonly log: (m: string) => void,
    private readonly makeBuilder: () => MemberBuilder,
  ) {}

  /** A sandbox from the pool when it has one, otherwise made now; then refills in the background. */
  create(req: CreateOptions): SandboxInfo {
    const got = this.o.size > 0 ? this.engine.acquire(req) : undefined;
    if (got) this.counts.acquired++;
    else if (this.o.size > 0 && (req.mode ?? this.o.defaultMode ?? 'veth') === (this.o.holds ?? 'veth')) this.counts.missed++;
    const s = got ?? this.engine.create(req);
    this.refill();
    return s;
  }

  /**
   * Tops the pool up to its size when it is below the refill mark. Members are built on the
   * builder's thread; this thread only takes each one's row and address before and marks it
   * ready after, so API requests go on meanwhile.
   */
  refill(): void {
    if (this.filling || this.stopped || this.o.size === 0 || this.engine.poolIdle() >= this.o.refillBelow) return;
    this.filling = true;
    this.fill = this.fillUp()
      .catch((err: Error) => {
        // Out of addresses, or the kernel refused: try again on the next create.
        this.log(`pool: refill stopped: ${err.message}`);
      })
      .finally(() => {
        this.filling = false;
      });
  }

  /**
   * Keeps up to QUEUED members on the builder at once. With one at a time, the builder sat
   * idle from each reply until this thread got to it between API requests: under eight
   * callers it made ~50 members a second and served 20 % of creates. Returns only once every
   * queued member is finished, whatever fails.
   */
  private async fillUp(): Promise<void> {
    if (this.builder?.dead) await this.dropBuilder(this.builder);
    const builder = (this.builder ??= this.makeBuilder());
    const queued = new Set<Promise<void>>();
    let failure: { err: unknown } | undefined;
    const fail = (err: unknown) => {
      failure ??= { err };
    };
    try {
      while (!this.stopped && !failure) {
        while (queued.size < QUEUED && !this.stopped && !failure && !builder.dead && this.engine.poolIdle() < this.o.size) {
          const r = this.engine.reservePoolMember(); // throws when no address is left: what is queued still finishes
          const done: Promise<void> = Promise.resolve()
            .then(() => builder.build(r.net))
            .then(() => undefined, (err: unknown) => err ?? new Error('build failed'))
            .then((err) => {
              queued.delete(done);
              try {
                this.engine.finishPoolMember(r, err);
              } catch (finishErr) {
                fail(finishErr);
              }
              if (err !== undefined) fail(err);
            });
          queued.add(done);
        }
        if (queued.size === 0) break;
        await Promise.race(queued);
      }
    } catch (err) {
      fail(err);
    } finally {
      await Promise.all(queued); // never rejects: each one catches its own failure
    }
    if (builder.dead) await this.dropBuilder(builder); // the next refill starts a new thread
    if (failure) throw failure.err;
  }

  private async dropBuilder(b: MemberBuilder): Promise<void> {
    if (this.builder === b) this.builder = undefined;
    await b.close();
  }

  /**
   * Removes the idle members beyond the size, as after a restart with a smaller poolSize (or
   * 0): they would hold addresses, and rows that keep `up` from changing the subnet, for
   * nothing. Returns how many went.
   */
  trim(): number {
    let n = 0;
    while (this.engine.poolIdle() > this.o.size && this.engine.dropPoolMember()) n++;
    return n;
  }

  /** Stops refilling; resolves once the members queued on the builder are finished and its thread has ended. */
  async stop(): Promise<void> {
    this.stopped = true;
    await this.fill;
    await this.builder?.close();
    this.builder = undefined;
  }
}
