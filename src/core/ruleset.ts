// The instance's nftables table as data (libnftables JSON), built from config and the list
// of live sandboxes. Pure: no kernel access, golden-tested. The table is one artifact, read
// top to bottom in the order the kernel evaluates it, so its chains stay together here;
// what they are built from lives beside it: the denial reasons (deny-reasons.ts), the
// address space never reached (denied-ranges.ts), what the resolver and the filter agree on
// (resolver-contract.ts), and the expression builders (nft-expr.ts).
//
// Per-sandbox state lives only in set and map elements (sandbox-elements.ts), never in
// rules, so the rule count and the per-packet cost stay flat however many sandboxes exist.
//
// Every denial goes through a chain named for its reason (deny_private, deny_host, ...),
// which logs it to NFLOG (rate-limited) with the reason as prefix, lets it pass for
// sandboxes in report mode, and otherwise rejects (rate-limited) or drops it.
import type { FilterConfig } from './filter-config.js';
import { EgressRule, parseEgressRule } from './egress-rule.js';
import { parseCidr } from './ipv4.js';
import { Expr, ctAddr, ctState, egressRuleMatch, firstPacket, match, meta, payload, prefixValue } from './nft-expr.js';
import { DENY_REASONS, DenyReason, HARD_REASONS, INBOUND_REASONS, LIMIT_REASONS } from './deny-reasons.js';
import { DENIED_RANGES, METADATA_ADDRESS } from './denied-ranges.js';
import { MAX_DNS_QUERY_BYTES, RESOLVER_SOCKET_MARK } from './resolver-contract.js';
import { CT_MARK_NAME_DENIED, CT_MARK_NAME_PENDING, NAME_GATE, SKB_MARK_NAME_DENIED, SKB_MARK_NAME_QUEUED } from './name-check.js';
import { InstanceNames, instanceNames } from './names.js';
import { DNS_ALLOWED_SET, Element, SANDBOX_SETS, bySet } from './sandbox-elements.js';
import { SandboxObject, objectElement, objectKey, tierSet } from './sandbox-limits.js';

/** Enough of an object to delete it. */
export type ObjectRef = Pick<SandboxObject, 'kind' | 'name'>;
import { KeyType, NftCommand, SetSchema, SetSchemas, schemaKey } from './nft-schema.js';

/** One element: the number of the latest rebuild of the per-sandbox counters (RulesetBuilder.usageEpoch). */
export const USAGE_EPOCH_SET = 'usage_epoch';

/** Per-sandbox sets mirrored into the instance's ARP table. */
const ARP_SETS: string[] = ['veth_src', 'macvlan_src'];

export type { SandboxMode, SandboxSpec } from './sandbox-elements.js';

/** Jump to the chain that logs, counts and denies for `reason`. */
/** The comments of the rules in each deny_<reason> chain that count what it blocked and what it let through (report mode): accounting.ts reads them. */
export const BLOCKED_COUNT_COMMENT = 'the sandbox\'s blocked count';
export const REPORTED_COUNT_COMMENT = 'report mode: log only';

const deny = (reason: DenyReason): Expr => ({ jump: { target: `deny_${reason}` } });
/**
 * An instance's ceiling per sandbox (dnsPacketsPerSecond, newConnsPerSecond): a token bucket
 * per sender, `rate` a second with one second's worth of burst, kept by the kernel in the
 * dynamic set named as the reason; what is over it goes to that reason's deny chain.
 */
const perSenderCeiling = (sender: unknown, reason: 'dns_flood' | 'conn_flood', rate: number): Expr[] => [
  { set: { op: 'update', elem: sender, set: `@${reason}`, stmt: [{ limit: { rate, burst: rate, per: 'second', inv: true } }] } },
  deny(reason),
];

export class RulesetBuilder {
  readonly names: InstanceNames;
  private readonly allow: EgressRule[];
  private readonly deny: EgressRule[];

  constructor(private readonly config: FilterConfig) {
    this.names = instanceNames(config.instance);
    this.allow = config.allowCidrs.map((s) => parseEgressRule(s, 'allowCidrs'));
    this.deny = config.denyCidrs.map((s) => parseEgressRule(s, 'denyCidrs'));
  }

  private get t() {
    return { family: 'inet', table: this.names.table };
  }

  private chain(name: string, hook?: { type: string; hook: string; prio: number }): NftCommand {
    return { add: { chain: { ...this.t, name, ...(hook ? { ...hook, policy: 'accept' } : {}) } } };
  }

  private rule(chain: string, expr: Expr[], comment?: string): NftCommand {
    return { add: { rule: { ...this.t, chain, expr, ...(comment ? { comment } : {}) } } };
  }

  private elementCommands(op: 'add' | 'delete', elements: Element[]): NftCommand[] {
    const out: NftCommand[] = [];
    for (const [name, elem] of bySet(elements)) {
      out.push({ [op]: { element: { ...this.t, name, elem } } });
      // The ARP table checks senders against the same admission pairs.
      if (ARP_SETS.includes(name)) out.push({ [op]: { element: { ...this.arp, name, elem } } });
    }
    return out;
  }

  private get arp() {
    return { family: 'arp', table: this.names.table };
  }

  /**
   * The sets whose elements change per sandbox or per DNS answer, with their key types: what
   * the kernel layer needs to send element changes without libnftables.
   */
  elementSets(): SetSchemas {
    const schema = (def: { type: string | readonly string[]; map?: string; flags?: readonly string[] }): SetSchema => ({
      key: (typeof def.type === 'string' ? [def.type] : [...def.type]) as KeyType[],
      data: def.map === undefined ? undefined : def.map === 'verdict' ? 'verdict' : def.map === 'limit' || def.map === 'quota' ? 'objref' : { value: def.map as KeyType },
      interval: def.flags?.includes('interval') ?? false,
    });
    const out = new Map<string, SetSchema>();
    for (const [name, def] of Object.entries(SANDBOX_SETS)) out.set(schemaKey('inet', this.names.table, name), schema(def));
    for (const name of ARP_SETS) out.set(schemaKey('arp', this.names.table, name), schema(SANDBOX_SETS[name as keyof typeof SANDBOX_SETS]));
    out.set(schemaKey('inet', this.names.table, DNS_ALLOWED_SET.name), schema(DNS_ALLOWED_SET));
    return out;
  }

  /**
   * Adds a sandbox's elements and objects (see sandbox-elements.ts, sandbox-limits.ts): one
   * transaction with the rest of a create. Objects first: map elements point at them.
   */
  add(elements: Element[], objects: SandboxObject[] = []): NftCommand[] {
    return [...this.objectCommands(objects, []).before, ...this.elementCommands('add', [...elements, ...objects.map(objectElement)])];
  }

  /** Removes a sandbox's elements, then the objects they pointed at. */
  remove(elements: Element[], objects: SandboxObject[] = []): NftCommand[] {
    return [...this.elementCommands('delete', [...elements, ...objects.map(objectElement)]), ...this.objectCommands([], objects).after];
  }

  /**
   * Replaces one sandbox's elements and objects in one atomic transaction: old elements
   * out, changed objects in, new elements in, objects no longer used out. Unchanged
   * elements and objects are not touched (counters keep counting), and a quota whose
   * amount changed is updated in place (it keeps what was used).
   */
  replace(old: Element[], next: Element[], oldObjects: SandboxObject[] = [], nextObjects: SandboxObject[] = []): NftCommand[] {
    const oldKeys = new Set(oldObjects.map(objectKey));
    const nextIds = new Set(nextObjects.map((o) => `${o.kind}:${o.name}`));
    const { before, after } = this.objectCommands(
      nextObjects.filter((o) => !oldKeys.has(objectKey(o))),
      oldObjects.filter((o) => !nextIds.has(`${o.kind}:${o.name}`)),
    );
    // Elements in both lists stay as they are: deleting and adding one again would zero its
    // counter (the accounting sets) and is work for nothing.
    const key = (e: Element | ReturnType<typeof objectElement>) => `${e.set}\u0000${JSON.stringify(e.elem)}`;
    const oldEls = [...old, ...oldObjects.map(objectElement)];
    const nextEls = [...next, ...nextObjects.map(objectElement)];
    const kept = new Set(oldEls.map(key));
    const wanted = new Set(nextEls.map(key));
    return [
      ...this.elementCommands('delete', oldEls.filter((e) => !wanted.has(key(e)))),
      ...before,
      ...this.elementCommands('add', nextEls.filter((e) => !kept.has(key(e)))),
      ...after,
    ];
  }

  /**
   * Replaces every per-sandbox set's contents with exactly these elements and objects (gc,
   * reconcile); `stale` are objects in the kernel that no live sandbox owns.
   */
  resetSandboxes(elements: Element[], objects: SandboxObject[] = [], stale: ObjectRef[] = []): NftCommand[] {
    const flush: NftCommand[] = Object.entries(SANDBOX_SETS).map(([name, def]) => ({ flush: { ['map' in def ? 'map' : 'set']: { ...this.t, name } } }));
    for (const name of ARP_SETS) flush.push({ flush: { set: { ...this.arp, name } } });
    flush.push({ flush: { set: { ...this.t, name: DNS_ALLOWED_SET.name } } });
    const { before, after } = this.objectCommands(objects, stale);
    return [...flush, ...after, ...before, ...this.elementCommands('add', [...elements, ...objects.map(objectElement)])];
  }

  /**
   * Admits `sandbox` to `addresses` for `ttlSeconds`: what the DNS forwarder writes before it
   * passes an allowed answer on, so the first connection never races the kernel.
   */
  allowResolved(sandbox: string, addresses: string[], ttlSeconds: number): NftCommand[] {
    if (addresses.length === 0) return [];
    const elem = addresses.map((a) => ({ elem: { val: { concat: [sandbox, a] }, timeout: ttlSeconds } }));
    return [{ add: { element: { ...this.t, name: DNS_ALLOWED_SET.name, elem } } }];
  }

  /** Forgets what a sandbox's DNS answers admitted (removal, policy change). */
  forgetResolved(sandbox: string, addresses: string[]): NftCommand[] {
    if (addresses.length === 0) return [];
    return [{ delete: { element: { ...this.t, name: DNS_ALLOWED_SET.name, elem: addresses.map((a) => ({ concat: [sandbox, a] })) } } }];
  }

  /** Removes the instance's tables if present (down). */
  deleteTable(): NftCommand[] {
    const table = { family: 'inet', name: this.names.table };
    const arp = { family: 'arp', name: this.names.table };
    const gate = { family: 'ip', name: this.names.table };
    return [{ add: { table } }, { delete: { table } }, { add: { table: arp } }, { delete: { table: arp } }, { add: { table: gate } }, { delete: { table: gate } }];
  }

  /**
   * The name gate: a table of its own (family ip, the instance's table name), after the
   * filter on the forward hook, that sends the packets of connections whose names are
   * pending to the daemon's queue (NAME_GATE.queue; the rule itself is appended by the
   * kernel layer, see kernel/nfqueue-codec.ts) and resets those judged against. It holds no
   * per-sandbox rules, so the filter's rebuilds never touch it. Its policy is drop: a
   * pending packet that finds no queue rule is dropped, never let through unjudged; one
   * that finds no reader on the queue (a daemon that is down) or no room in it goes on,
   * still marked, to the next chain, which drops and counts it (fail closed, and said).
   * `keepUnjudged`: the set of those counts exists already, and is kept with them.
   */
  nameGateTable(o: { keepUnjudged?: boolean } = {}): NftCommand[] {
    const table = { family: 'ip', name: this.names.table };
    const t = { family: 'ip', table: this.names.table };
    const g = { ...t, chain: NAME_GATE.chain };
    const u = NAME_GATE.unjudged;
    const rule = (expr: Expr[], comment: string): NftCommand => ({ add: { rule: { ...g, expr, comment } } });
    const ctMark = { ct: { key: 'mark' } };
    const bits = (mask: number) => ({ '&': [ctMark, mask] });
    const chains = [
      { ...t, name: NAME_GATE.chain, type: 'filter', hook: 'forward', prio: NAME_GATE.priority, policy: 'drop' },
      { ...t, name: u.chain, type: 'filter', hook: 'forward', prio: u.priority, policy: 'accept' },
    ];
    // Rebuilt whole, but for the set counting what was dropped unjudged: when it exists, the
    // chains go (their rules with them) and the set stays with its counts (service/unjudged.ts).
    // It is not "added" again: the kernel marks it dynamic once a rule updates it, and the
    // JSON parser of nft 1.0.6 has no such flag, so an add of the same set fails (EEXIST).
    const start: NftCommand[] = o.keepUnjudged
      ? [{ add: { table } }, ...chains.flatMap((c): NftCommand[] => [
        { add: { chain: c } }, { flush: { chain: { ...t, name: c.name } } }, { delete: { chain: { ...t, name: c.name } } },
      ])]
      : [
        { add: { table } }, { delete: { table } }, { add: { table } },
        { add: { set: { ...t, name: u.set, type: 'ipv4_addr', flags: ['timeout'], timeout: 86_400, stmt: [{ counter: null }] } } },
      ];
    return [
      ...start,
      ...chains.map((c): NftCommand => ({ add: { chain: c } })),
      rule([match(meta('iifname'), `${this.names.linkPrefix}*`, '!='), { accept: null }], 'not from this instance\'s sandboxes'),
      rule([match(bits(CT_MARK_NAME_PENDING | CT_MARK_NAME_DENIED), 0), { accept: null }], 'not waiting for a name'),
      rule([match({ '&': [meta('mark'), SKB_MARK_NAME_DENIED] }, SKB_MARK_NAME_DENIED), { counter: null }, { reject: { type: 'tcp reset' } }], 'judged against just now'),
      rule([match(bits(CT_MARK_NAME_DENIED), CT_MARK_NAME_DENIED), { counter: null }, { reject: { type: 'tcp reset' } }], 'judged against: named what it may not, or nothing'),
      // A segment without data (the SYN, the handshake's last ACK, a bare ACK) has nothing to
      // judge: its IP length is exactly the headers' (IP options never get here: source_check
      // drops them, so the IP header is 20 bytes). A queue round trip saved per packet. A SYN
      // with data (TCP Fast Open) goes to the reader like any first flight, and so does data
      // on a connection conntrack picked up in the middle: neither is let past unjudged.
      ...Array.from({ length: 11 }, (_, i) => rule([
        match(payload('ip', 'length'), 20 + 4 * (i + 5)), match(payload('tcp', 'doff'), i + 5), { accept: null },
      ], 'no data')),
      // What goes on to the queue carries SKB_MARK_NAME_QUEUED until a reader's verdict clears
      // it. The queue rule follows this one (appended by the kernel layer, with `bypass`, and
      // the queue is fail-open): without a reader, or with the queue full, the packet comes
      // out still marked and the next chain drops and counts it.
      rule([{ mangle: { key: meta('mark'), value: { '|': [meta('mark'), SKB_MARK_NAME_QUEUED] } } }], 'to the reader'),
      // The chain after the gate: drops what the queue gave back without a verdict (the daemon
      // down, or its queue full), counted by source in the set (an element with a counter per
      // sandbox that had such a drop, forgotten after a day without one). The daemon reports
      // these counts as events (service/unjudged.ts); the drop itself needs no daemon.
      { add: { rule: { ...t, chain: u.chain, comment: 'no verdict: the daemon down or its queue full (fail closed)', expr: [
        match(meta('iifname'), `${this.names.linkPrefix}*`),
        match({ '&': [meta('mark'), SKB_MARK_NAME_QUEUED] }, SKB_MARK_NAME_QUEUED),
        { set: { op: 'update', elem: payload('ip', 'saddr'), set: `@${u.set}` } },
        { drop: null },
      ] } } },
    ];
  }

  /**
   * The instance's ARP table: a sandbox may only ask for addresses of its subnet (the
   * gateway, and peers the host answers for), never learn the host's other addresses; and
   * its ARP must come from its own MAC and address, so that it cannot poison the host's
   * neighbour cache for another sandbox (which would steal that sandbox's traffic).
   */
  private arpTable(): NftCommand[] {
    const n = this.names;
    const table = { family: 'arp', name: n.table };
    const rule = (expr: Expr[], comment: string): NftCommand => ({ add: { rule: { ...this.arp, chain: 'from_sandbox', expr, comment } } });
    const arpField = (field: string) => ({ payload: { protocol: 'arp', field } });
    return [
      { add: { table } }, { delete: { table } }, { add: { table } },
      { add: { set: { ...this.arp, name: 'veth_src', type: [...SANDBOX_SETS.veth_src.type] } } },
      { add: { set: { ...this.arp, name: 'macvlan_src', type: [...SANDBOX_SETS.macvlan_src.type] } } },
      { add: { chain: { ...this.arp, name: 'input', type: 'filter', hook: 'input', prio: 0, policy: 'accept' } } },
      { add: { chain: { ...this.arp, name: 'from_sandbox' } } },
      { add: { rule: { ...this.arp, chain: 'input', expr: [match(meta('iifname'), `${n.linkPrefix}*`), { jump: { target: 'from_sandbox' } }] } } },
      rule([match(arpField('operation'), 'request'), match(arpField('daddr ip'), prefixValue(this.config.subnet), '!='), { counter: null }, { drop: null }], 'asks only for subnet addresses'),
      rule([
        match(meta('iifname'), `${n.sandboxLinkPrefix}*`),
        match({ concat: [meta('iifname'), arpField('saddr ether'), arpField('saddr ip')] }, '@veth_src', '!='),
        { counter: null }, { drop: null },
      ], 'spoofed sender (veth)'),
      rule([
        match(meta('iifname'), n.gatewayLink),
        match({ concat: [arpField('saddr ether'), arpField('saddr ip')] }, '@macvlan_src', '!='),
        { counter: null }, { drop: null },
      ], 'spoofed sender (macvlan)'),
    ];
  }

  private denyChain(reason: DenyReason): NftCommand[] {
    const chain = `deny_${reason}`;
    const cmds: NftCommand[] = [this.chain(chain)];
    // Log (at most 20/s, bursts of 50) for `toastnet events`; the limit protects the host from floods.
    cmds.push(this.rule(chain, [{ limit: { rate: 20, per: 'second', burst: 50 } }, { counter: null }, { log: { prefix: `tn:${reason} `, group: this.config.logGroup } }]));
    const sandboxAddr = payload('ip', INBOUND_REASONS.includes(reason) ? 'daddr' : 'saddr');
    // Report mode lets through what the sandbox's own policy and the defaults would block,
    // never the instance's hard limits (metadata, denyCidrs, host services, limits).
    if (!HARD_REASONS.includes(reason)) {
      cmds.push(this.rule(chain, [match(sandboxAddr, '@report_mode'), { counter: null }, { accept: null }], REPORTED_COUNT_COMMENT));
    }
    // Its own counter too: every packet this reason blocks, exactly (the log above is a sample).
    cmds.push(this.rule(chain, [match(sandboxAddr, '@acct_blocked'), { counter: null }], BLOCKED_COUNT_COMMENT));
    if (LIMIT_REASONS.includes(reason)) {
      cmds.push(this.rule(chain, [{ drop: null }]));
    } else if (this.config.denyAction === 'reject') {
      // Rejections are rate-limited too: past the limit, drop.
      cmds.push(this.rule(chain, [{ limit: { rate: 1000, per: 'second', burst: 1000, inv: true } }, { drop: null }]));
      cmds.push(this.rule(chain, [match(meta('l4proto'), 'tcp'), { reject: { type: 'tcp reset' } }]));
      cmds.push(this.rule(chain, [{ reject: { type: 'icmpx', expr: 'admin-prohibited' } }]));
    } else {
      cmds.push(this.rule(chain, [{ drop: null }]));
    }
    return cmds;
  }

  /**
   * The whole table, replacing any previous version atomically (add + delete + add in one
   * transaction): `up` twice gives the same ruleset, and live sandboxes keep their elements.
   */
  /**
   * Records, in the same transaction as a rebuild that resets the per-sandbox counters, which
   * rebuild it is: after a crash, the store can tell whether counts it wrote ahead were reset
   * (fold them into the carried totals) or are still in the kernel (drop them).
   */
  usageEpoch(epoch: number): NftCommand[] {
    return [{ flush: { set: { ...this.t, name: USAGE_EPOCH_SET } } }, { add: { element: { ...this.t, name: USAGE_EPOCH_SET, elem: [epoch] } } }];
  }

  fullTable(elements: Element[], objects: SandboxObject[] = []): NftCommand[] {
    const n = this.names;
    const table = { family: 'inet', name: n.table };
    const all = `${n.linkPrefix}*`;
    const subnet = prefixValue(this.config.subnet);
    const cmds: NftCommand[] = [{ add: { table } }, { delete: { table } }, { add: { table } }, ...this.arpTable()];

    for (const [name, def] of Object.entries(SANDBOX_SETS)) {
      const { map, ...rest } = def as typeof def & { map?: string };
      cmds.push(map ? { add: { map: { ...this.t, name, ...rest, map } } } : { add: { set: { ...this.t, name, ...rest } } });
    }

    cmds.push({ add: { set: { ...this.t, ...DNS_ALLOWED_SET, type: [...DNS_ALLOWED_SET.type], flags: [...DNS_ALLOWED_SET.flags] } } });
    cmds.push({ add: { set: { ...this.t, name: USAGE_EPOCH_SET, type: 'mark', comment: 'which rebuild of the counters this is (the state store carries what earlier ones counted)' } } });
    // The per-sandbox ceilings' meters (perSenderCeiling): filled by the kernel, one token bucket per
    // sender; nft adds the dynamic flag itself (libnftables 1.0.6's JSON parser does not know
    // it). Room for every address of the subnet: an update on a full set fails, and the rule
    // would then let that sender through unmetered.
    const senders = Math.max(65536, 2 ** (32 - parseCidr(this.config.subnet).prefix));
    for (const [name, comment] of [['dns_flood', 'sandbox -> its DNS packets to the gateway, metered'], ['conn_flood', 'sandbox -> its new connections through the host, metered']]) {
      cmds.push({ add: { set: { ...this.t, name, type: 'ipv4_addr', flags: ['timeout'], timeout: 60, size: senders, comment } } });
    }
    cmds.push(this.chain('forward', { type: 'filter', hook: 'forward', prio: 0 }));
    cmds.push(this.chain('input', { type: 'filter', hook: 'input', prio: 0 }));
    cmds.push(this.chain('output', { type: 'filter', hook: 'output', prio: 0 }));
    cmds.push(this.chain('postrouting', { type: 'nat', hook: 'postrouting', prio: 100 }));
    // What reaches a sandbox is counted (and limited) after the filter let it through, by
    // any path: a packet accepted for its sender (a group peer, an allow entry) never gets
    // to to_sandbox, but every base chain of the hook sees it.
    cmds.push(this.chain('forward_delivered', { type: 'filter', hook: 'forward', prio: 10 }));
    // Published ports: destination NAT (dstnat priority) of new flows to the host's addresses.
    cmds.push(this.chain('publish_in', { type: 'nat', hook: 'prerouting', prio: -100 }));
    cmds.push(this.chain('publish_local', { type: 'nat', hook: 'output', prio: -100 }));
    for (const c of ['from_sandbox', 'to_sandbox', 'sandbox_ingress', 'sandbox_to_host', 'host_to_sandbox', 'source_check']) cmds.push(this.chain(c));
    for (const r of Object.keys(DENY_REASONS) as DenyReason[]) cmds.push(...this.denyChain(r));

    // Sandbox addresses come only from sandbox links (and the host's own loopback): a packet
    // from the uplink carrying one would reach the resolver or a sandbox as if a sandbox sent
    // it, whatever the host's rp_filter says.
    for (const chain of ['forward', 'input']) {
      cmds.push(this.rule(chain, [match(meta('iifname'), 'lo', '!='), match(meta('iifname'), all, '!='), match(payload('ip', 'saddr'), subnet), { counter: null }, { drop: null }], 'sandbox address from elsewhere'));
    }
    // Dispatch: only traffic on this instance's links is judged; everything else passes untouched.
    cmds.push(this.rule('forward', [match(meta('iifname'), all), { jump: { target: 'from_sandbox' } }]));
    cmds.push(this.rule('forward', [match(meta('oifname'), all), { jump: { target: 'to_sandbox' } }]));
    cmds.push(this.rule('forward_delivered', [match(meta('oifname'), all), { jump: { target: 'sandbox_ingress' } }]));
    cmds.push(this.rule('input', [match(meta('iifname'), all), { jump: { target: 'sandbox_to_host' } }]));
    cmds.push(this.rule('output', [match(meta('oifname'), all), { jump: { target: 'host_to_sandbox' } }]));

    // A packet from a sandbox must carry that sandbox's own address, on its own link and
    // from its own MAC (veth) or from its own MAC (macvlan), whatever the sandbox did to its interfaces.
    cmds.push(this.rule('source_check', [match(meta('nfproto'), 'ipv6'), { counter: null }, { drop: null }], 'no IPv6 from sandboxes'));
    cmds.push(this.rule('source_check', [
      match(meta('iifname'), `${n.sandboxLinkPrefix}*`),
      match({ concat: [meta('iifname'), payload('ether', 'saddr'), payload('ip', 'saddr')] }, '@veth_src', '!='),
      { counter: null }, { drop: null },
    ], 'spoofed source (veth)'));
    cmds.push(this.rule('source_check', [
      match(meta('iifname'), n.gatewayLink),
      match({ concat: [payload('ether', 'saddr'), payload('ip', 'saddr')] }, '@macvlan_src', '!='),
      { counter: null }, { drop: null },
    ], 'spoofed source (macvlan)'));
    // IP options: a source route would carry an established flow's packet to another
    // destination on a host that honours it (accept_source_route), after the filter let it
    // through as that flow. No sandbox needs options; none depends on the host's sysctls.
    cmds.push(this.rule('source_check', [match(payload('ip', 'hdrlength'), 5, '!='), { counter: null }, { drop: null }], 'IP options'));
    // Fewer than 4 bytes after the (20-byte) header: `th dport`, a key of the egress_policy and
    // group_pairs lookups, cannot be loaded, and a rule whose load fails does not match. A
    // bare IP header of a protocol conntrack does not parse (253, say) skipped the sandbox's
    // own deny entries (egress matrix test). TCP, UDP and ICMP that short are invalid already.
    cmds.push(this.rule('source_check', [match(payload('ip', 'length'), 24, '<'), { counter: null }, { drop: null }], 'no room for ports'));
    cmds.push(this.rule('source_check', [ctState(['invalid']), { counter: null }, { drop: null }], 'invalid conntrack state'));

    // Sandbox -> anywhere but the host. Order: hard denials, the sandbox's own policy,
    // its group, instance allows, then the defaults.
    const saddr = payload('ip', 'saddr');
    const daddr = payload('ip', 'daddr');
    cmds.push(this.rule('from_sandbox', [{ jump: { target: 'source_check' } }]));
    // Accounting and limits come before the established shortcut: they apply to every packet.
    cmds.push(this.rule('from_sandbox', [match(saddr, '@acct_out')], 'what the sandbox sent'));
    cmds.push(...this.limitRules('from_sandbox', saddr, 'egress'));
    cmds.push(...this.ownFlowRules('from_sandbox'));
    for (const r of this.deny) cmds.push(this.rule('from_sandbox', [...egressRuleMatch(r), { counter: null }, deny('config')], `denyCidrs ${r.text}`));
    if (!this.config.allowMetadata) cmds.push(this.rule('from_sandbox', [match(payload('ip', 'daddr'), METADATA_ADDRESS), { counter: null }, deny('metadata')], 'cloud metadata'));
    // The gateway's resolver is the only one: DNS and DNS-over-TLS elsewhere would bypass it.
    cmds.push(this.rule('from_sandbox', [match(meta('l4proto'), { set: ['tcp', 'udp'] }), match(payload('th', 'dport'), { set: [53, 853] }), { counter: null }, deny('dns')], 'DNS elsewhere than the gateway'));
    cmds.push(this.rule('from_sandbox', [{
      vmap: { key: { concat: [payload('ip', 'saddr'), payload('ip', 'daddr'), meta('l4proto'), payload('th', 'dport')] }, data: '@egress_policy' },
    }], 'per-sandbox egress policy'));
    cmds.push(this.rule('from_sandbox', [match({ concat: [payload('ip', 'saddr'), payload('ip', 'daddr'), meta('l4proto'), payload('th', 'dport')] }, '@group_pairs'), { counter: null }, { accept: null }], 'same group'));
    // Only groups open other sandboxes: neither a sandbox's allows (compiled without the
    // subnet) nor the instance's allowCidrs, which come after this.
    cmds.push(this.rule('from_sandbox', [match(payload('ip', 'daddr'), subnet), { counter: null }, deny('sandbox')], 'other sandboxes'));
    for (const r of this.allow) cmds.push(this.rule('from_sandbox', [...egressRuleMatch(r), { counter: null }, { accept: null }], `allowCidrs ${r.text}`));
    cmds.push(this.rule('from_sandbox', [match(payload('ip', 'daddr'), { set: DENIED_RANGES.map(prefixValue) }), { counter: null }, deny('private')], 'private, metadata, multicast, reserved'));
    // Name checks (core/name-check.ts): for a sandbox in name_check, UDP to an admitted
    // address names nothing (QUIC is refused, so clients fall back to TCP), and a TCP
    // connection is let open with its mark saying "pending": its first flight goes to the
    // daemon through the name gate (nameGateTable) before anything else of it passes.
    const admitted = match({ concat: [payload('ip', 'saddr'), payload('ip', 'daddr')] }, '@dns_allowed');
    cmds.push(this.rule('from_sandbox', [
      admitted, match(payload('ip', 'saddr'), '@name_check'), match(meta('l4proto'), 'udp'),
      match({ concat: [payload('ip', 'saddr'), meta('l4proto'), payload('th', 'dport')] }, '@unnamed_ports', '!='),
      { counter: null }, deny('unnamed_udp'),
    ], 'UDP to an admitted address names nothing'));
    cmds.push(this.rule('from_sandbox', [
      admitted, match(payload('ip', 'saddr'), '@name_check'), match(meta('l4proto'), 'tcp'),
      { mangle: { key: { ct: { key: 'mark' } }, value: { '|': [{ ct: { key: 'mark' } }, CT_MARK_NAME_PENDING] } } },
      { counter: null }, { accept: null },
    ], 'name pending: answered for an allowed name, to be named on the first flight'));
    cmds.push(this.rule('from_sandbox', [admitted, { counter: null }, { accept: null }], 'answered for an allowed name'));
    cmds.push(this.rule('from_sandbox', [match(payload('ip', 'saddr'), '@domain_mode'), { counter: null }, deny('domain')], 'domain allow-list'));
    cmds.push(this.rule('from_sandbox', [match(payload('ip', 'saddr'), '@no_internet'), { counter: null }, deny('internet')], 'internet switched off'));
    // Name checks without an allow-list (only such sandboxes get here: the others went above):
    // the same two rules for every address of the internet, the judge asking what the
    // sandbox's DNS answered instead of what its list allows.
    cmds.push(this.rule('from_sandbox', [
      match(payload('ip', 'saddr'), '@name_check'), match(meta('l4proto'), 'udp'),
      match({ concat: [payload('ip', 'saddr'), meta('l4proto'), payload('th', 'dport')] }, '@unnamed_ports', '!='),
      { counter: null }, deny('unnamed_udp'),
    ], 'UDP to the internet names nothing'));
    cmds.push(this.rule('from_sandbox', [
      match(payload('ip', 'saddr'), '@name_check'), match(meta('l4proto'), { set: ['tcp', 'udp'] }, '!='),
      { counter: null }, deny('unnamed_proto'),
    ], 'another protocol to the internet names nothing'));
    cmds.push(this.rule('from_sandbox', [
      match(payload('ip', 'saddr'), '@name_check'), match(meta('l4proto'), 'tcp'),
      { mangle: { key: { ct: { key: 'mark' } }, value: { '|': [{ ct: { key: 'mark' } }, CT_MARK_NAME_PENDING] } } },
      { counter: null }, { accept: null },
    ], 'name pending: to be named on the first flight as the sandbox\'s DNS answered'));
    cmds.push(this.rule('from_sandbox', [{ counter: null }, { accept: null }], 'internet'));

    // Anywhere -> sandbox (forwarded): only replies. The host's own connections into a
    // sandbox are locally generated (output), so the orchestrator can still reach it.
    cmds.push(this.rule('sandbox_ingress', [match(daddr, '@acct_in')], 'what the sandbox received'));
    cmds.push(...this.limitRules('sandbox_ingress', daddr, 'ingress'));
    cmds.push(this.rule('to_sandbox', [ctState(['established', 'related']), { accept: null }]));
    // A published port: a flow conntrack translated to a port the sandbox published (its
    // element counts the connections). Sent to the sandbox's address untranslated, the same
    // packet is dropped below.
    cmds.push(this.rule('to_sandbox', [
      match({ ct: { key: 'status' } }, 'dnat', 'in'),
      match({ concat: [daddr, meta('l4proto'), payload('th', 'dport')] }, '@published'), { accept: null },
    ], 'a published port'));
    cmds.push(this.rule('to_sandbox', [{ counter: null }, { drop: null }], 'no new connections into sandboxes from elsewhere'));

    // Sandbox -> host: DNS on the gateway, replies to the host's own connections, nothing else.
    cmds.push(this.rule('sandbox_to_host', [{ jump: { target: 'source_check' } }]));
    cmds.push(this.rule('sandbox_to_host', [match(saddr, '@acct_out')], 'what the sandbox sent'));
    cmds.push(this.rule('sandbox_to_host', [{ limit: { map: { key: saddr, data: '@limit_packets' } } }, deny('packets')], 'limits.packetsPerSecond'));
    // The resolver's sockets are shared by every sandbox: a sandbox flooding them would fill
    // their receive buffers and other sandboxes' queries would be dropped with its own (seen:
    // 14,000 overflows and lost neighbour queries under a fuzzing sandbox). So each sandbox's
    // DNS packets are metered here, before any socket, above what any DNS policy lets through,
    // and before the established shortcut: a flood on one UDP socket is one established flow.
    const dnsToGateway = [match(payload('ip', 'daddr'), this.config.gateway), match(meta('l4proto'), { set: ['udp', 'tcp'] }), match(payload('th', 'dport'), 53)];
    const pps = this.config.dnsPacketsPerSecond;
    cmds.push(this.rule('sandbox_to_host', [...dnsToGateway, ...perSenderCeiling(saddr, 'dns_flood', pps)], 'dnsPacketsPerSecond'));
    // Nor do datagrams the resolver would not read take room in its buffer (IP and UDP headers: 28 bytes).
    cmds.push(this.rule('sandbox_to_host', [
      ...dnsToGateway, match(meta('l4proto'), 'udp'), match(meta('length'), MAX_DNS_QUERY_BYTES + 28, '>'), { counter: null }, { drop: null },
    ], 'DNS datagram larger than any query'));
    cmds.push(...this.ownFlowRules('sandbox_to_host'));
    cmds.push(this.rule('sandbox_to_host', [
      ...dnsToGateway,
      match({ socket: { key: 'mark' } }, RESOLVER_SOCKET_MARK), { accept: null },
    ], 'DNS on the gateway, to toastnet\'s resolver'));
    cmds.push(this.rule('sandbox_to_host', [{ counter: null }, deny('host')], 'host services'));

    // Host -> sandbox: allowed unless the sandbox's policy closes or narrows it. No ICMP
    // redirects: the host routes between macvlan sandboxes on one link (hairpin), and a
    // redirect would tell them to talk directly, which private mode forbids anyway.
    cmds.push(this.rule('host_to_sandbox', [match(payload('icmp', 'type'), 'redirect'), { counter: null }, { drop: null }], 'no ICMP redirects'));
    cmds.push(this.rule('host_to_sandbox', [match(daddr, '@acct_in')], 'what the sandbox received'));
    cmds.push(this.rule('host_to_sandbox', [ctState(['established', 'related']), { accept: null }]));
    cmds.push(this.rule('host_to_sandbox', [match(payload('ip', 'daddr'), '@inbound_closed'), { counter: null }, deny('inbound')], 'inbound closed'));
    cmds.push(this.rule('host_to_sandbox', [
      match(payload('ip', 'daddr'), '@inbound_only'),
      match({ concat: [payload('ip', 'daddr'), meta('l4proto'), payload('th', 'dport')] }, '@inbound_ports', '!='),
      { counter: null }, deny('inbound'),
    ], 'inbound port not listed'));

    cmds.push(...this.publishRules());

    // NAT to the internet; never between sandboxes or towards them.
    cmds.push(this.rule('postrouting', [
      match(payload('ip', 'saddr'), subnet), match(payload('ip', 'daddr'), subnet, '!='), match(meta('oifname'), all, '!='), { masquerade: null },
    ], 'sandboxes to the internet'));

    // A new table has no tiers yet: every one is made.
    return cmds.concat(this.add(elements, objects.map((o) => (o.kind === 'tier' ? { ...o, create: true } : o))));
  }

  /**
   * Published ports (publish-elements.ts): a new flow to one of the host's own addresses on
   * a published port is translated to the sandbox. Coming in (prerouting) from anywhere but
   * a sandbox: a sandbox's packet to the host's address stays a packet to a host port, which
   * the host filter denies, so a publishing never opens one sandbox to another (they reach
   * each other only at their own addresses, through their groups). From the host itself
   * (output): its own connections to its non-loopback addresses, which then meet the
   * sandbox's inbound policy like any host connection into it. Never loopback: 127.0.0.0/8
   * translated to a sandbox needs route_localnet, which would let packets to loopback
   * addresses in from other links.
   */
  private publishRules(): NftCommand[] {
    const daddr = payload('ip', 'daddr');
    const key = { concat: [daddr, meta('l4proto'), payload('th', 'dport')] };
    const translate: Expr[] = [
      match(meta('l4proto'), { set: ['tcp', 'udp'] }),
      match(daddr, prefixValue('127.0.0.0/8'), '!='),
      match({ fib: { result: 'type', flags: ['daddr'] } }, 'local'),
      { dnat: { family: 'ip', addr: { map: { key, data: '@publish_addr' } }, port: { map: { key, data: '@publish_port' } } } },
    ];
    return [
      this.rule('publish_in', [match(meta('iifname'), `${this.names.linkPrefix}*`), { return: null }], 'from sandboxes: a host port like any other'),
      this.rule('publish_in', translate, 'published ports'),
      this.rule('publish_local', translate, 'published ports, for the host\'s own connections'),
    ];
  }

  /**
   * What a packet from a sandbox may ride without being judged as a new flow: flows that
   * sandbox is an endpoint of. An established packet is one (the source check proved its
   * address, and conntrack matched it as that flow's sender). A related one need not be:
   * conntrack relates an ICMP error to whatever flow its quoted header names, whoever sent
   * it, so a sandbox could deliver data to another sandbox, or past its own policy to an
   * internet host, by quoting their flows. It passes only if the sandbox opened that flow
   * or the flow was opened towards it.
   */
  private ownFlowRules(chain: string): NftCommand[] {
    const saddr = payload('ip', 'saddr');
    return [
      this.rule(chain, [ctState(['established']), { accept: null }]),
      this.rule(chain, [ctState(['related']), match({ concat: [saddr, ctAddr('original', 'saddr')] }, '@sandbox_self'), { accept: null }], 'related to a flow it opened'),
      this.rule(chain, [ctState(['related']), match({ concat: [saddr, ctAddr('reply', 'saddr')] }, '@sandbox_self'), { accept: null }], 'related to a flow opened towards it'),
      this.rule(chain, [ctState(['related']), { counter: null }, { drop: null }], 'related to a flow of others'),
    ];
  }

  /**
   * Per-sandbox limits in one direction, each a map lookup of the sandbox's address: a
   * limit object "over" its rate matches, and the packet goes to the limit's deny chain.
   * Bandwidth is not here: it is shaped by qdiscs (core/shaping.ts), since nftables' byte
   * limit keeps a bucket of a whole second of the rate and can only drop.
   */
  private limitRules(chain: string, addr: unknown, dir: 'egress' | 'ingress'): NftCommand[] {
    if (dir === 'ingress') {
      return [
        this.rule(chain, [{ quota: { map: { key: addr, data: '@quota_ingress' } } }, deny('quota_in')], 'limits.ingressBytes'),
      ];
    }
    return [
      this.rule(chain, [{ limit: { map: { key: addr, data: '@limit_packets' } } }, deny('packets')], 'limits.packetsPerSecond'),
      this.rule(chain, [{ quota: { map: { key: addr, data: '@quota_egress' } } }, deny('quota_out')], 'limits.egressBytes'),
      this.rule(chain, [...firstPacket(), { limit: { map: { key: addr, data: '@limit_newconns' } } }, deny('connrate')], 'limits.newConnsPerSecond'),
      // The instance's ceiling, for every sandbox whatever its policy: one bucket per sender,
      // made by the kernel on its first new connection. A flood of new connections costs the
      // machine (its client processes, the forwarding, the NAT's ports, the name gate) for
      // every sandbox; under the ceiling a flooding neighbour costs the others nothing
      // measurable (docs/performance.md, name checks).
      this.rule(chain, [...firstPacket(), ...perSenderCeiling(addr, 'conn_flood', this.config.newConnsPerSecond)], 'newConnsPerSecond'),
      this.rule(chain, [ctState(['new']), { vmap: { key: addr, data: '@conn_tier' } }], 'limits.maxConnections'),
    ];
  }

  /** Commands creating (or updating, for quotas) one object; connection tiers are idempotent. */
  private objectAdd(o: SandboxObject): NftCommand[] {
    switch (o.kind) {
      case 'limit':
        return [{ add: { limit: { ...this.t, name: o.name, rate: o.rate, per: 'second', burst: o.burst, inv: true } } }];
      case 'quota':
        return [{ add: { quota: { ...this.t, name: o.name, bytes: o.bytes, inv: true, ...(o.used !== undefined ? { used: o.used } : {}) } } }];
      case 'tier': {
        // Shared by every sandbox with this maxConnections, made once and never deleted with
        // a sandbox (an unused tier costs nothing: no address jumps to it). The counting set
        // must be made in the same batch as the rule that adds to it: that is how nft marks
        // it dynamic (1.0.6's JSON has no flag for it), and a set cannot be re-added.
        if (!o.create) return [];
        const set = tierSet(o.max);
        return [
          { add: { set: { ...this.t, name: set, type: 'ipv4_addr', size: 65535 } } },
          this.chain(o.name),
          this.rule(o.name, [
            { set: { op: 'add', elem: payload('ip', 'saddr'), set: `@${set}`, stmt: [{ 'ct count': { val: o.max, inv: true } }] } },
            { jump: { target: 'deny_connections' } },
          ], `over ${o.max} connections`),
        ];
      }
    }
  }

  private objectDelete(o: ObjectRef): NftCommand[] {
    if (o.kind === 'tier') return [];
    return [{ delete: { [o.kind]: { ...this.t, name: o.name } } }];
  }

  private objectCommands(add: SandboxObject[], del: ObjectRef[]): { before: NftCommand[]; after: NftCommand[] } {
    const seen = new Set<string>();
    const before: NftCommand[] = [];
    for (const o of add) {
      // A tier shared by sandboxes added together is made once (by whichever asks to create it).
      const key = `${objectKey(o)}${o.kind === 'tier' && o.create ? ':create' : ''}`;
      if (seen.has(key)) continue;
      seen.add(key);
      before.push(...this.objectAdd(o));
    }
    return { before, after: del.flatMap((o) => this.objectDelete(o)) };
  }
}
