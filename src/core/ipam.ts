// Address management for one subnet. Never two live sandboxes on one address; addresses
// never used come first, then released ones least-recently-released first, so that a late
// packet or request meant for a dead sandbox is unlikely to reach a new one.
import { ToastnetError } from '../errors.js';
import { Cidr, cidrContains, cidrLast, formatIPv4, parseIPv4 } from './ipv4.js';

export interface IpamState {
  /** Next never-used address (uint32). */
  nextFresh: number;
  /** Released addresses, oldest release first. */
  released: number[];
  /** Addresses held by live sandboxes. */
  leased: Iterable<number>;
}

export class Ipam {
  private nextFresh: number;
  private readonly queue: number[];
  private head = 0;
  private readonly leased: Set<number>;
  private readonly first: number;
  private readonly last: number;

  constructor(readonly subnet: Cidr, private readonly reserved: Set<number>, state?: Partial<IpamState>) {
    // Network and broadcast addresses are never handed out.
    this.first = subnet.network + 1;
    this.last = cidrLast(subnet) - 1;
    this.nextFresh = state?.nextFresh ?? this.first;
    this.leased = new Set(state?.leased ?? []);
    this.queue = [...(state?.released ?? [])].filter((ip) => !this.leased.has(ip));
  }

  /** Addresses a sandbox could ever get. */
  get capacity(): number {
    let n = this.last - this.first + 1;
    for (const r of this.reserved) if (r >= this.first && r <= this.last) n--;
    return n;
  }

  get free(): number {
    return this.capacity - this.leased.size;
  }

  get freshCursor(): number {
    return this.nextFresh;
  }

  /** Picks an address without taking it; commit with take(). */
  peek(): number {
    let fresh = this.nextFresh;
    while (fresh <= this.last && (this.reserved.has(fresh) || this.leased.has(fresh))) fresh++;
    if (fresh <= this.last) return fresh;
    for (let i = this.head; i < this.queue.length; i++) {
      const ip = this.queue[i];
      if (!this.leased.has(ip)) return ip;
    }
    throw new ToastnetError('exhausted', `subnet ${formatIPv4(this.subnet.network)}/${this.subnet.prefix} is exhausted: all ${this.capacity} addresses are in use`);
  }

  take(ip: number): void {
    if (this.leased.has(ip)) throw new ToastnetError('internal', `address ${formatIPv4(ip)} is already leased`);
    this.leased.add(ip);
    if (ip >= this.nextFresh) this.nextFresh = ip + 1;
    else if (this.queue[this.head] === ip) this.head++;
    else {
      const i = this.queue.indexOf(ip, this.head);
      if (i >= 0) this.queue.splice(i, 1);
    }
    if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue.splice(0, this.head);
      this.head = 0;
    }
  }

  allocate(): number {
    const ip = this.peek();
    this.take(ip);
    return ip;
  }

  /** Undoes take(ip) of a create that failed: the address goes back where it came from. */
  untake(ip: number, wasFresh: boolean): void {
    if (!this.leased.delete(ip)) return;
    if (wasFresh) this.nextFresh = Math.min(this.nextFresh, ip);
    else if (this.head > 0 && this.queue[this.head - 1] === ip) this.head--;
    else this.queue.splice(this.head, 0, ip);
  }

  /** Whether peek() returned a never-used address (vs a released one). */
  isFresh(ip: number): boolean {
    return ip >= this.nextFresh;
  }

  release(ip: number): void {
    if (!this.leased.delete(ip)) return;
    this.queue.push(ip);
  }

  isLeased(ip: number): boolean {
    return this.leased.has(ip);
  }

  contains(ip: string): boolean {
    return cidrContains(this.subnet, parseIPv4(ip));
  }

  /** Released addresses in reuse order (for persistence and tests). */
  releasedInOrder(): number[] {
    return this.queue.slice(this.head);
  }
}
