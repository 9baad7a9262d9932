// An in-memory API backend for router and server tests: no kernel, no socket.
import { ToastnetError } from '../../src/errors.js';
import { checkPortMapping } from '../../src/core/publish.js';
import { validateLabels } from '../../src/core/labels.js';
import type { ApiBackend, ApiResponse, CreateSandboxBody, EventQuery } from '../../src/api/routes.js';
import type { GcReport, PolicyView, SandboxInfo, Status } from '../../src/service/engine.js';
import type { DenialEvent, DnsQueryRecord } from '../../src/service/events.js';
import type { SandboxStats } from '../../src/service/accounting.js';
import type { FlowList } from '../../src/api/types.js';

/** An in-memory backend: no kernel, no socket. Records the calls it receives. */
export class FakeBackend implements ApiBackend {
  sandboxes = new Map<string, SandboxInfo>();
  /** Each sandbox's own policy document, as the backend received it. */
  policies = new Map<string, unknown>();
  calls: string[] = [];
  nextId = 1;
  /** When set, every method throws it. */
  fail: unknown;

  private check(call: string): void {
    this.calls.push(call);
    if (this.fail !== undefined) throw this.fail;
  }
  status(): Status {
    this.check('status');
    return {
      version: '1.2.3', instance: 'toastnet', up: true, subnet: '10.166.0.0/16', gateway: '10.166.0.1', table: 'toastnet', gatewayLink: 'tn727bg',
      forwarding: true, sandboxes: this.sandboxes.size, addresses: { capacity: 65533, used: this.sandboxes.size, free: 65533 - this.sandboxes.size, releasing: 0 },
      dnsUpstreams: ['192.0.2.53'], stateFile: '/tmp/state.db', socket: '/tmp/toastnet.sock', daemon: { pid: 1 }, pool: { idle: 0 },
    };
  }
  stats(name?: string): SandboxStats[] {
    this.check(name === undefined ? 'stats' : `stats ${name}`);
    const names = name === undefined ? [...this.sandboxes.keys()] : [this.get(name).name];
    return names.map((n) => ({ name: n, ip: this.sandboxes.get(n)!.ip, sent: { packets: 1, bytes: 100 }, received: { packets: 2, bytes: 200 }, blocked: { packets: 0, logged: {} }, quota: {}, limits: {} }));
  }
  list(): SandboxInfo[] {
    this.check('list');
    return [...this.sandboxes.values()];
  }
  get(name: string): SandboxInfo {
    this.check(`get ${name}`);
    const s = this.sandboxes.get(name);
    if (!s) throw new ToastnetError('not_found', `no sandbox "${name}"`);
    return s;
  }
  inspect(name: string): unknown {
    this.check(`inspect ${name}`);
    return { ...this.get(name), kernel: { links: [] } };
  }
  create(body: CreateSandboxBody): SandboxInfo {
    this.check(`create ${JSON.stringify(body)}`);
    const id = this.nextId++;
    const name = body.name ?? `sbx-${id}`;
    if (this.sandboxes.has(name)) throw new ToastnetError('conflict', `sandbox "${name}" exists`);
    const ip = `10.166.0.${id + 1}`;
    const s: SandboxInfo = {
      name, id, ip, gateway: '10.166.0.1', prefixLength: 16, netns: `toastnet-${name}`, mac: '02:74:0a:a6:00:02',
      mode: body.mode ?? 'veth', resolvConf: '/etc/netns/x/resolv.conf', createdAt: '2024-01-01T00:00:00.000Z', state: 'ready',
      ...(Array.isArray(body.publish) ? { publish: body.publish.map((e, i) => checkPortMapping(e, `publish[${i}]`)) } : {}),
      labels: validateLabels(body.labels),
    };
    this.sandboxes.set(name, s);
    this.policies.set(name, body.policy ?? {});
    return s;
  }
  async remove(name: string): Promise<void> {
    this.check(`remove ${name}`);
    if (!this.sandboxes.delete(name)) throw new ToastnetError('not_found', `no sandbox "${name}"`);
  }
  policyGet(name: string): PolicyView {
    this.check(`policyGet ${name}`);
    if (!this.sandboxes.has(name)) throw new ToastnetError('not_found', `no sandbox named "${name}"`);
    return this.view(name);
  }
  policySet(name: string, policy: unknown): PolicyView {
    this.check(`policySet ${name} ${JSON.stringify(policy)}`);
    if (!this.sandboxes.has(name)) throw new ToastnetError('not_found', `no sandbox named "${name}"`);
    this.policies.set(name, policy);
    return this.view(name);
  }
  /** Effective = own over a fixed default, so a test can tell the two apart. */
  private view(name: string): PolicyView {
    const policy = this.policies.get(name) as PolicyView['policy'];
    return { name, policy, effective: { mode: 'enforce', ...policy } };
  }
  async events(q: EventQuery): Promise<DenialEvent[]> {
    this.check(`events ${JSON.stringify(q)}`);
    return [{ id: 1, time: '2024-01-01T00:00:00.000Z', sandbox: 'x', reason: 'private', rule: 'private', action: 'blocked', src: '10.166.0.2', dst: '10.0.0.1', proto: 'tcp', dport: 22 }];
  }
  async flows(q: EventQuery): Promise<FlowList> {
    this.check(`flows ${JSON.stringify(q)}`);
    return { flows: [{ id: 3, time: '2024-01-01T00:00:00.000Z', sandbox: 'x', state: 'closed', start: '2024-01-01T00:00:00.000Z', end: '2024-01-01T00:00:01.000Z', proto: 'tcp', src: '10.166.0.2', sport: 40000, dst: '203.0.113.10', dport: 80, sent: { packets: 6, bytes: 400 }, received: { packets: 5, bytes: 900 }, name: 'example.test', conntrackId: 77 }], counts: { recorded: 1, dropped: { kernel: 0, daemon: 0 }, unattributed: 0 } };
  }
  async dnsQueries(q: EventQuery): Promise<DnsQueryRecord[]> {
    this.check(`dnsQueries ${JSON.stringify(q)}`);
    return [{ id: 7, time: '2024-01-01T00:00:00.000Z', sandbox: 'x', name: 'example.test', type: 'A', verdict: 'refused', answer: [], reason: 'not in egress.domains' }];
  }
  /** A CNI call: ADD answers a result, the others nothing; a call without a command the spec's error object. */
  async cni(body: unknown): Promise<ApiResponse> {
    this.check(`cni ${JSON.stringify(body)}`);
    const command = (body as { command?: unknown } | undefined)?.command;
    if (typeof command !== 'string') return { status: 400, body: { cniVersion: '1.0.0', code: 6, msg: 'POST /v1/cni wants {command, config, ...}' } };
    if (command !== 'ADD') return { status: 204 };
    return { status: 200, body: { cniVersion: '1.0.0', interfaces: [{ name: 'eth0', sandbox: '/proc/1/ns/net' }], ips: [{ address: '10.166.0.9/16', gateway: '10.166.0.1', interface: 0 }] } };
  }
  gc(): GcReport {
    this.check('gc');
    return { sandboxes: [], namespaces: ['toastnet-stale'], links: [], files: [] };
  }
  up(): Status {
    this.check('up');
    return this.status();
  }
  async down(): Promise<{ sandboxes: number }> {
    this.check('down');
    const n = this.sandboxes.size;
    this.sandboxes.clear();
    return { sandboxes: n };
  }
}
