// TypeScript client for the daemon's API over its Unix socket. Errors come back as
// ToastnetError with the daemon's code and message.
import http from 'node:http';
import { ToastnetError, isCode } from '../errors.js';
import type { PolicyInput } from '../core/policy.js';
import type {
  CreateSandboxBody, DenialEvent, DnsQueryRecord, DownReport, EventQuery, FlowList, GcReport, PolicyView, SandboxInfo, SandboxInspection, SandboxStats, Status,
} from './types.js';

/** Idle connections are closed by the client before the server would (serveApi: 10 s). */
const IDLE_MS = 4_000;

export class ToastnetClient {
  /**
   * Connections are kept and reused: a new connection per request costs the daemon ~0.2 ms
   * (accept, a socket object, HTTP parser setup). Free sockets are unref'd, so an idle
   * client never keeps its process alive.
   */
  private readonly agent = new http.Agent({ keepAlive: true, timeout: IDLE_MS });

  constructor(readonly socketPath: string, private readonly timeoutMs = 30_000) {}

  /** Closes the kept connections. */
  close(): void {
    this.agent.destroy();
  }

  request<T>(method: string, path: string, body?: unknown): Promise<T> {
    return this.send<T>(method, path, body).catch((err: NodeJS.ErrnoException & { reusedSocket?: boolean }) => {
      // A kept connection the daemon closed (idle, or a restart) as we wrote on it: sent
      // again on a new connection. Not a create (POST): a daemon that ran it and died at
      // that moment would make it twice.
      if (err.reusedSocket && method !== 'POST' && (err.code === 'ECONNRESET' || err.code === 'EPIPE')) return this.send<T>(method, path, body);
      throw err;
    });
  }

  private send<T>(method: string, path: string, body?: unknown): Promise<T> {
    return new Promise((resolve, reject) => {
      const data = body === undefined ? undefined : JSON.stringify(body);
      const req = http.request(
        { socketPath: this.socketPath, agent: this.agent, method, path, headers: data ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) } : {} },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            let parsed: unknown;
            try {
              parsed = text ? JSON.parse(text) : undefined;
            } catch {
              parsed = undefined;
            }
            if ((res.statusCode ?? 500) >= 400) {
              const e = (parsed as { error?: { code?: string; message?: string } } | undefined)?.error;
              reject(new ToastnetError(e?.code && isCode(e.code) ? e.code : 'internal', e?.message ?? `HTTP ${res.statusCode}`));
            } else resolve(parsed as T);
          });
        },
      );
      req.setTimeout(this.timeoutMs, () => req.destroy(new Error(`no answer from ${this.socketPath} in ${this.timeoutMs} ms`)));
      req.on('error', (err: NodeJS.ErrnoException & { reusedSocket?: boolean }) => {
        err.reusedSocket = req.reusedSocket;
        reject(err);
      });
      req.end(data);
    });
  }

  /** Whether a daemon answers on the socket. */
  async ping(): Promise<boolean> {
    try {
      await this.status();
      return true;
    } catch {
      return false;
    }
  }

  status(): Promise<Status> {
    return this.request('GET', '/v1/status');
  }
  list(): Promise<SandboxInfo[]> {
    return this.request<{ sandboxes: SandboxInfo[] }>('GET', '/v1/sandboxes').then((r) => r.sandboxes);
  }
  get(name: string): Promise<SandboxInfo> {
    return this.request('GET', `/v1/sandboxes/${encodeURIComponent(name)}`);
  }
  inspect(name: string): Promise<SandboxInspection> {
    return this.request('GET', `/v1/sandboxes/${encodeURIComponent(name)}/inspect`);
  }
  create(body: CreateSandboxBody = {}): Promise<SandboxInfo> {
    return this.request('POST', '/v1/sandboxes', body);
  }
  remove(name: string): Promise<void> {
    return this.request('DELETE', `/v1/sandboxes/${encodeURIComponent(name)}`);
  }
  policyGet(name: string): Promise<PolicyView> {
    return this.request('GET', `/v1/sandboxes/${encodeURIComponent(name)}/policy`);
  }
  /** Replaces the sandbox's policy (the daemon checks it too, and answers invalid_argument naming the field). */
  policySet(name: string, policy: PolicyInput): Promise<PolicyView> {
    return this.request('PUT', `/v1/sandboxes/${encodeURIComponent(name)}/policy`, policy);
  }
  stats(name: string): Promise<SandboxStats> {
    return this.request('GET', `/v1/sandboxes/${encodeURIComponent(name)}/stats`);
  }
  statsAll(): Promise<SandboxStats[]> {
    return this.request<{ sandboxes: SandboxStats[] }>('GET', '/v1/stats').then((r) => r.sandboxes);
  }
  dnsQueries(q: EventQuery = {}): Promise<DnsQueryRecord[]> {
    return this.request<{ queries: DnsQueryRecord[] }>('GET', `/v1/dns-queries?${queryString(q)}`).then((r) => r.queries);
  }
  events(q: EventQuery = {}): Promise<DenialEvent[]> {
    return this.request<{ events: DenialEvent[] }>('GET', `/v1/events?${queryString(q)}`).then((r) => r.events);
  }
  /** The flow audit log (waitMs: long polling). */
  flows(q: EventQuery = {}): Promise<FlowList> {
    return this.request('GET', `/v1/flows?${queryString(q)}`);
  }
  gc(): Promise<GcReport> {
    return this.request('POST', '/v1/gc');
  }
  up(): Promise<Status> {
    return this.request('POST', '/v1/up');
  }
  down(): Promise<DownReport> {
    return this.request('POST', '/v1/down');
  }
}

function queryString(q: EventQuery): string {
  const p = new URLSearchParams();
  if (q.sandbox) p.set('sandbox', q.sandbox);
  if (q.since !== undefined) p.set('since', String(q.since));
  if (q.limit !== undefined) p.set('limit', String(q.limit));
  if (q.waitMs !== undefined) p.set('wait', String(q.waitMs));
  return p.toString();
}
