// One egress decision order, written twice: as the from_sandbox chain (ruleset.ts, with
// per-sandbox elements from sandbox-elements.ts and policy-compile.ts) and as FlowJudge
// (flow-decision.ts), which cuts the flows a new policy forbids and names the rule behind a
// denial. This drives a generated matrix of policies x destinations through both and wants,
// case by case, the same verdict, the same deny reason and the same deciding rule.
//
// The kernel side is the real thing: two instances' tables (RulesetBuilder.fullTable, with
// their sandboxes' elements and DNS admissions) in a throwaway namespace that forwards, one
// veth per sandbox whose host end carries the sandbox's link name, and one SYN, datagram,
// echo request or bare IP packet per case sent from the sandbox's end with its own address
// and MAC. nftables' trace says which rule decided each one (see helpers/packet-trace.ts).
//
// The matrix: every address at the edges of every CIDR any entry names (below, first, last,
// above), the private and reserved ranges, metadata, every sandbox of the instance, times
// the ports at the edges of every entry covering that address (and of the group ports of a
// peer there), DNS ports 53 and 853, a neutral port, ICMP, a protocol without ports (also
// as a bare IP header), and seeded random flows on top. Destinations a host never forwards (0/8, loopback, multicast, limited broadcast) and the
// gateway (the host itself) never reach from_sandbox and are left out.
//
// Run alone: node --test dist/test/integration/egress-matrix.test.js (root; ~25,000 cases, a few seconds).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { resolve } from '../../src/config/load.js';
import { Config, ConfigSchema } from '../../src/config/schema.js';
import { parseEgressRule } from '../../src/core/egress-rule.js';
import { FlowDecision, FlowJudge } from '../../src/core/flow-decision.js';
import { cidrContains, cidrLast, formatIPv4, parseCidr, parseIPv4 } from '../../src/core/ipv4.js';
import { sandboxLinkName, sandboxMac } from '../../src/core/names.js';
import { resolvePolicy, type PolicyInput } from '../../src/core/policy.js';
import { HARD_REASONS, type DenyReason } from '../../src/core/deny-reasons.js';
import { RulesetBuilder } from '../../src/core/ruleset.js';
import { groupPeers, portRanges, sandboxElements, type Element, type SandboxSpec } from '../../src/core/sandbox-elements.js';
import { Conntrack } from '../../src/kernel/conntrack.js';
import { Nft, type NftCommand } from '../../src/kernel/nft.js';
import { withNetns } from '../../src/kernel/netns.js';
import { intIn, prng } from '../unit/prng.js';
import { Judgement, PacketJudge, Probe } from './helpers/packet-trace.js';

interface SandboxCase {
  id: number;
  policy: PolicyInput;
  macvlan?: boolean;
  /** Addresses its DNS answers admitted (dns_allowed), for a sandbox with egress.domains. */
  resolved?: string[];
}

interface InstanceCase {
  key: string;
  config: Record<string, unknown>;
  sandboxes: SandboxCase[];
}

const INSTANCES: InstanceCase[] = [
  {
    key: 'a',
    config: {
      subnet: '10.166.0.0/16',
      // Overlapping entries: which one names a denial is part of the contract.
      allowCidrs: ['172.16.5.0/24:5432/tcp', '192.168.7.0/24', '100.64.1.1/udp', '10.166.9.0/24', '169.254.169.0/24:80-81/tcp', '198.18.0.0/15/icmp'],
      denyCidrs: ['203.0.113.66', '198.51.100.0/25:1000-2000', '192.168.7.128/25/tcp', '10.166.0.9', '8.8.8.0/24:443/tcp', '8.8.8.8:400-500'],
    },
    sandboxes: [
      { id: 2, policy: {} },
      {
        id: 3,
        policy: {
          egress: {
            internet: false,
            allow: ['10.20.0.0/16:80-90/tcp', '10.20.5.0/24:85', '192.0.2.7:53/udp', '198.51.100.0/24', '10.166.0.4', '8.8.8.8/icmp', '172.16.0.0/12:5000-5999/udp'],
            deny: ['10.20.3.0/24:88/tcp', '198.51.100.128/25/udp', '10.20.5.5'],
          },
        },
      },
      {
        id: 4,
        policy: {
          egress: { deny: ['203.0.113.0/24:1-1023/tcp', '203.0.113.200', '1.1.1.0/24', '10.166.0.5:8080/tcp'], allow: ['203.0.113.200:443/tcp', '1.1.1.1/icmp'] },
          group: { name: 'g', ports: ['8000-8100/tcp', '5353/udp'] },
        },
      },
      { id: 5, policy: { group: 'g' } },
      {
        id: 6,
        policy: { group: { name: 'g', ports: ['22/tcp', '60000-65535'] }, egress: { domains: ['example.com'], allow: ['198.51.100.7'] } },
        resolved: ['203.0.113.10', '10.99.0.5', '203.0.113.66', '169.254.169.254', '10.166.0.7', '192.168.7.200'],
      },
      { id: 7, policy: { egress: { domains: ['example.org'], internet: false } }, resolved: ['203.0.113.11', '192.168.7.9'] },
      { id: 8, policy: { mode: 'report', egress: { internet: false, deny: ['203.0.113.0/24', '192.168.7.0/25'] } } },
      { id: 9, macvlan: true, policy: { egress: { allow: ['0.0.0.0/0'], deny: ['10.0.0.0/8:22/tcp', '0.0.0.0/0:25'] } } },
      { id: 10, policy: { group: { name: 'h', ports: ['9000/udp'] } } },
      { id: 11, policy: { group: 'h', egress: { allow: ['0.0.0.0/0:1-65535/tcp'], deny: ['0.0.0.0/0/udp', '203.0.113.0/25/icmp'] } } },
      { id: 12, policy: { group: 'g', egress: { internet: false } } },
      // Name checks without an allow-list: TCP to the internet opens pending its name, UDP and
      // every other protocol there are refused but on unnamedPorts; allows are not checked.
      { id: 13, policy: { egress: { verifyNames: true, unnamedPorts: ['123/udp'], allow: ['198.51.100.7'] } } },
    ],
  },
  {
    key: 'b',
    config: {
      subnet: '10.77.0.0/16',
      allowMetadata: true,
      denyAction: 'drop',
      allowCidrs: ['169.254.0.0/16:80/tcp', '10.0.0.0/8', '0.0.0.0/0:25/tcp'],
      denyCidrs: ['8.8.4.4/udp', '10.77.3.0/24'],
    },
    sandboxes: [
      { id: 2, policy: {} },
      { id: 3, policy: { egress: { allow: ['169.254.169.254', '10.77.0.2'] } } },
      { id: 4, policy: { egress: { internet: false, allow: ['192.168.0.0/16:443/tcp'] }, group: { name: 'k', ports: ['443/tcp'] } } },
      { id: 5, policy: { group: 'k', egress: { deny: ['10.77.0.4'] } } },
      { id: 6, macvlan: true, policy: { egress: { domains: ['*.example.net'] } }, resolved: ['198.51.100.99', '169.254.169.254'] },
      { id: 7, policy: { egress: { verifyNames: true } } },
    ],
  },
];

/** Addresses every matrix tries, beyond the edges of the entries: the special ranges and their neighbours. */
const FIXED_DESTINATIONS = [
  '8.8.8.8', '8.8.4.4', '1.1.1.1', '203.0.113.10', '203.0.113.11', '198.51.100.7', '198.51.100.99', '192.0.2.7', '10.99.0.5',
  '169.254.169.254', '169.254.169.253', '169.254.169.255', '169.254.0.1',
  '9.255.255.255', '10.0.0.1', '10.255.255.255', '11.0.0.0', '172.15.255.255', '172.16.0.0', '172.31.255.255', '172.32.0.0',
  '192.167.255.255', '192.168.0.1', '192.168.255.255', '192.169.0.0', '100.63.255.255', '100.64.0.0', '100.127.255.255', '100.128.0.0',
  '191.255.255.255', '192.0.0.1', '192.0.0.255', '192.0.1.0', '198.17.255.255', '198.18.0.0', '198.19.255.255', '198.20.0.0',
  '223.255.255.255', '240.0.0.1', '255.255.255.254',
];

/** Never forwarded by a host (martian, local or multicast): no packet there meets from_sandbox. */
const NOT_FORWARDED = ['0.0.0.0/8', '127.0.0.0/8', '224.0.0.0/4', '255.255.255.255/32'].map((c) => parseCidr(c));

/** Rules no packet can reach on purpose: an allowCidrs entry inside the instance subnet ("other sandboxes" comes first). */
const SHADOWED = ['allowCidrs 10.166.9.0/24'];

/** Random cases per sandbox, beyond the edges (seeded: the same every run). */
const RANDOM_PER_SANDBOX = 400;

const PROTO_NAME: Record<number, string> = { 1: 'icmp', 6: 'tcp', 17: 'udp', 253: 'proto 253' };

interface Sandbox {
  spec: SandboxSpec;
  resolved: Set<string>;
  /** Link in the judging namespace (the host end) and its peer in the sender namespace. */
  hostLink: string;
  hostMac: string;
  peerLink: string;
}

interface Instance {
  key: string;
  config: Config;
  builder: RulesetBuilder;
  judge: FlowJudge;
  sandboxes: Sandbox[];
}

interface Case {
  probe: Probe;
  instance: Instance;
  sandbox: Sandbox;
  expected: FlowDecision;
}

/** The from_sandbox rule (by its comment) that FlowJudge's `by` stands for. */
function kernelRuleOf(by: string): string {
  if (/^egress\.(allow|deny) /.test(by)) return 'per-sandbox egress policy';
  if (by.startsWith('group ')) return 'same group';
  if (by === 'egress.domains') return 'domain allow-list';
  if (by === 'egress.internet false') return 'internet switched off';
  return by; // denyCidrs/allowCidrs entries, metadata, DNS, other sandboxes, private, answered, internet
}

/**
 * What the kernel should do, by FlowJudge: report mode lets through all but the hard
 * denials. A bare IP header is no flow FlowJudge could judge: the kernel drops it before
 * the policy (the lookups would have no port to read, and skipped the sandbox's denials).
 */
function expectedJudgement(c: Case): Judgement {
  if (c.probe.short) return { verdict: 'drop', chain: 'source_check', rule: 'no room for ports' };
  const d = c.expected;
  if (d.verdict === 'allow') return { verdict: 'accept', chain: 'from_sandbox', rule: kernelRuleOf(d.by) };
  const reported = c.sandbox.spec.policy.mode === 'report' && !HARD_REASONS.includes(d.reason);
  return { verdict: reported ? 'accept' : 'drop', chain: 'from_sandbox', rule: kernelRuleOf(d.by), reason: d.reason };
}

const inDomain = (ip: number, inst: Instance) =>
  !NOT_FORWARDED.some((c) => cidrContains(c, ip)) && formatIPv4(ip) !== inst.config.gateway;

const configRules = (inst: Instance) => [...inst.config.allowCidrs, ...inst.config.denyCidrs].map((x) => parseEgressRule(x));

/** Every entry the instance or one of its sandboxes names. */
const entriesOf = (inst: Instance) => [...configRules(inst), ...inst.sandboxes.flatMap((s) => [...s.spec.policy.allow, ...s.spec.policy.deny])];

/** Where sandboxes send: the edges of every entry of the instance (another's are controls), admissions, every sandbox. */
function destinations(inst: Instance): number[] {
  const out = new Set<number>(FIXED_DESTINATIONS.map((d) => parseIPv4(d)));
  const edges = (network: number, last: number) => {
    for (const x of [network - 1, network, last, last + 1]) if (x >= 0 && x <= 0xffffffff) out.add(x >>> 0);
  };
  for (const r of entriesOf(inst)) edges(r.cidr.network, cidrLast(r.cidr));
  for (const s of inst.sandboxes) for (const a of s.resolved) out.add(parseIPv4(a));
  const subnet = parseCidr(inst.config.subnet);
  edges(subnet.network, cidrLast(subnet));
  for (const s of inst.sandboxes) out.add(parseIPv4(s.spec.ip));
  out.add(subnet.network + 200); // an address of the subnet no sandbox holds
  return [...out].filter((ip) => inDomain(ip, inst)).sort((a, b) => a - b);
}

const PROTO_OF = { tcp: 6, udp: 17, icmp: 1 } as const;

/** Ports worth trying from `s` to `d` over `proto`: DNS, a neutral one, the edges of every range that could decide there. */
function portsFor(inst: Instance, s: Sandbox, d: number, proto: number): number[] {
  const out = new Set<number>([53, 853, 1234]);
  const edges = (from: number, to: number) => {
    for (const p of [from - 1, from, to, to + 1]) if (p >= 0 && p <= 65535) out.add(p);
  };
  for (const r of [...configRules(inst), ...s.spec.policy.allow, ...s.spec.policy.deny]) {
    if (r.ports && cidrContains(r.cidr, d) && (!r.proto || PROTO_OF[r.proto] === proto)) edges(r.ports.from, r.ports.to);
  }
  const peer = groupPeers(s.spec, inst.sandboxes.map((x) => x.spec)).find((p) => parseIPv4(p.ip) === d);
  for (const r of peer ? portRanges(peer.policy.group?.ports) : []) if (r.proto < 0 || r.proto === proto) edges(r.from, r.to);
  return [...out];
}

interface Flow {
  daddr: number;
  proto: number;
  dport: number;
  /** A bare IP header (see Probe.short). */
  short?: boolean;
}

/** Random flows from `s` on top of the edges: anywhere, or inside a random entry, on any port. */
function randomFlows(inst: Instance, rnd: () => number, n: number): Flow[] {
  const entries = entriesOf(inst);
  const out: Flow[] = [];
  while (out.length < n) {
    const r = entries[intIn(rnd, 0, entries.length - 1)];
    const daddr = rnd() < 0.5 ? intIn(rnd, 0, 0xffffffff) : r.cidr.network + intIn(rnd, 0, cidrLast(r.cidr) - r.cidr.network);
    if (!inDomain(daddr, inst)) continue;
    const proto = [6, 6, 17, 17, 1, 253][intIn(rnd, 0, 5)];
    out.push({ daddr, proto, dport: proto === 6 || proto === 17 ? intIn(rnd, 0, 65535) : 0 });
  }
  return out;
}

/** The matrix for one sandbox: every destination with its edge ports per protocol, ICMP, a protocol without ports (also bare). */
function flowsOf(inst: Instance, s: Sandbox, rnd: () => number): Flow[] {
  const out: Flow[] = [];
  for (const daddr of destinations(inst)) {
    out.push({ daddr, proto: 1, dport: 0 }, { daddr, proto: 253, dport: 0 }, { daddr, proto: 253, dport: 0, short: true });
    for (const proto of [6, 17]) for (const dport of portsFor(inst, s, daddr, proto)) out.push({ daddr, proto, dport });
  }
  out.push(...randomFlows(inst, rnd, RANDOM_PER_SANDBOX));
  // Its own address never leaves its namespace.
  return out.filter((f) => formatIPv4(f.daddr) !== s.spec.ip);
}

describe('egress decision order: kernel from_sandbox vs FlowJudge', () => {
  const run = randomBytes(3).toString('hex');
  const judgeNs = `emx-j-${run}`;
  const senderNs = `emx-s-${run}`;
  const made: string[] = [];
  let nft: Nft | undefined;
  let ct: Conntrack | undefined;
  let packets: PacketJudge | undefined;
  const instances: Instance[] = [];
  const cases: Case[] = [];
  const inJudgeNs = <T>(f: () => T): T => withNetns(`/run/netns/${judgeNs}`, f);

  before(() => {
    let peerNo = 0;
    for (const ic of INSTANCES) {
      // The ceiling of new connections per sandbox raised out of reach: every case is a new
      // flow, sent as fast as the kernel takes them, and the ceiling is a rate, not a verdict
      // FlowJudge gives (limits.test.ts tests it with real connections).
      const config = resolve(ConfigSchema.parse({ instance: `emx${ic.key}${run}`, dnsUpstreams: ['192.0.2.53'], newConnsPerSecond: 10_000_000, ...ic.config }), []);
      const builder = new RulesetBuilder(config);
      const sandboxes = ic.sandboxes.map((sc): Sandbox => {
        const ip = formatIPv4(parseCidr(config.subnet).network + sc.id);
        const hostLink = sc.macvlan ? builder.names.gatewayLink : sandboxLinkName(builder.names, sc.id);
        const spec: SandboxSpec = { ip, mac: sandboxMac(`emx${run}`, sc.id), mode: sc.macvlan ? 'macvlan' : 'veth', hostLink, policy: resolvePolicy(sc.policy) };
        const hostMac = `02:ee:00:00:${ic.key === 'a' ? '0a' : '0b'}:${sc.id.toString(16).padStart(2, '0')}`;
        return { spec, resolved: new Set(sc.resolved ?? []), hostLink, hostMac, peerLink: `emxp${++peerNo}` };
      });
      instances.push({ key: ic.key, config, builder, judge: new FlowJudge(config), sandboxes });
    }
    assert.notEqual(instances[0].builder.names.linkPrefix, instances[1].builder.names.linkPrefix, 'the instances judge links of their own');

    // The matrix, judged by FlowJudge. The IP id names each case.
    let id = 0;
    const rnd = prng(14);
    for (const inst of instances) {
      const specs = inst.sandboxes.map((s) => s.spec);
      for (const s of inst.sandboxes) {
        const peers = groupPeers(s.spec, specs);
        for (const f of flowsOf(inst, s, rnd)) {
          id++;
          const daddr = formatIPv4(f.daddr);
          const probe: Probe = {
            id, link: s.peerLink, srcMac: s.spec.mac, dstMac: s.hostMac, saddr: s.spec.ip, daddr, proto: f.proto,
            sport: f.proto === 1 ? id : 1024 + (id % 60000), dport: f.dport, short: f.short,
          };
          const expected = inst.judge.decide(s.spec, peers, { daddr, proto: f.proto, dport: f.dport }, (a) => s.resolved.has(a));
          cases.push({ probe, instance: inst, sandbox: s, expected });
        }
      }
    }
    assert.ok(id <= 65535, `${id} cases: more than IP ids can name`);

    // The kernel side. Namespaces first, with their sysctls set inside them (never the host's).
    for (const ns of [judgeNs, senderNs]) {
      execFileSync('ip', ['netns', 'add', ns]);
      made.push(ns);
    }
    execFileSync('ip', ['netns', 'exec', judgeNs, 'sysctl', '-qw', 'net.ipv4.ip_forward=1', 'net.ipv4.conf.all.rp_filter=0', 'net.ipv4.conf.default.rp_filter=0',
      'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1']);
    execFileSync('ip', ['netns', 'exec', senderNs, 'sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1']);
    // Forwarded packets leave by a veth whose other end (also here) ignores them: the
    // default route goes to a neighbour that does not exist, no ARP asked. (The /32 is only
    // there because a gateway needs a local table to be checked against.)
    const links = instances.flatMap((i) => i.sandboxes.flatMap((s) => [
      `link add ${s.hostLink} address ${s.hostMac} type veth peer name ${s.peerLink} address ${s.spec.mac} netns ${senderNs}`,
      `link set ${s.hostLink} up`,
    ]));
    links.push(
      'link add emxw0 type veth peer name emxw1', 'link set emxw0 up', 'link set emxw1 up', 'addr add 192.0.2.1/32 dev emxw0',
      'neigh add 192.0.2.254 lladdr 02:00:00:00:00:fe dev emxw0 nud permanent', 'route add default via 192.0.2.254 dev emxw0 onlink',
    );
    execFileSync('ip', ['-n', judgeNs, '-batch', '-'], { input: `${links.join('\n')}\n` });
    const peers = instances.flatMap((i) => i.sandboxes.map((s) => `link set ${s.peerLink} up`));
    execFileSync('ip', ['-n', senderNs, '-batch', '-'], { input: `${peers.join('\n')}\n` });

    // The instances' tables, then every sandbox's elements (group pairs once) and what DNS
    // answers admitted, as creates and the resolver add them. (Not fullTable(elements): with
    // elements of a one-field set, no_internet say, libnftables 1.0.6 refuses that transaction,
    // "expected concatenation of (IPv4 address)".) A probe table marks IPv4 for tracing.
    const probeTable = `emxtrace${run}`;
    const t = { family: 'inet', table: probeTable };
    const cmds: NftCommand[] = [
      { add: { table: { family: 'inet', name: probeTable } } },
      { add: { chain: { ...t, name: 'trace', type: 'filter', hook: 'prerouting', prio: -300, policy: 'accept' } } },
      { add: { rule: { ...t, chain: 'trace', expr: [{ match: { op: '==', left: { meta: { key: 'nfproto' } }, right: 'ipv4' } }, { mangle: { key: { meta: { key: 'nftrace' } }, value: 1 } }] } } },
    ];
    const elementCmds: NftCommand[] = [];
    for (const inst of instances) {
      const subnet = parseCidr(inst.config.subnet);
      const seen: SandboxSpec[] = [];
      const elements: Element[] = [];
      for (const s of inst.sandboxes) {
        elements.push(...sandboxElements(s.spec, groupPeers(s.spec, seen), [subnet.network, cidrLast(subnet)]));
        seen.push(s.spec);
      }
      cmds.push(...inst.builder.fullTable([]));
      elementCmds.push(...inst.builder.add(elements));
      for (const s of inst.sandboxes) elementCmds.push(...inst.builder.allowResolved(s.spec.ip, [...s.resolved], 3600));
    }
    inJudgeNs(() => {
      nft = new Nft();
      ct = new Conntrack();
      nft.apply(cmds, 'egress matrix tables');
      nft.apply(elementCmds, 'egress matrix elements');
    });
    const ifindex = new Map((JSON.parse(execFileSync('ip', ['-n', senderNs, '-j', 'link', 'show'], { encoding: 'utf8' })) as { ifname: string; ifindex: number }[])
      .map((l) => [l.ifname, l.ifindex]));
    packets = new PacketJudge(`/run/netns/${senderNs}`, `/run/netns/${judgeNs}`, ifindex, nft!, instances.map((i) => i.builder.names.table));
  });

  after(() => {
    // Every step, whatever the others did; the namespaces take their links, tables and
    // conntrack entries with them.
    const failed: unknown[] = [];
    const step = (f: () => void) => {
      try {
        f();
      } catch (err) {
        failed.push(err);
      }
    };
    step(() => packets?.close());
    step(() => ct?.close());
    step(() => nft && inJudgeNs(() => nft!.free()));
    for (const ns of made) step(() => execFileSync('ip', ['netns', 'del', ns]));
    if (failed.length > 0) throw new AggregateError(failed, 'egress matrix teardown');
  });

  it('gives the same verdict, deny reason and deciding rule for every case', { timeout: 90_000 }, async () => {
    const t0 = Date.now();
    // One sender at a time, after forgetting the flows into sandboxes the ones before opened:
    // a packet without ports back along one of them would be its reply (established).
    const subnets = instances.map((i) => parseCidr(i.config.subnet));
    for (const s of instances.flatMap((i) => i.sandboxes)) {
      ct!.delete(ct!.flows().filter((f) => subnets.some((c) => cidrContains(c, parseIPv4(f.dst)))));
      await packets!.judge(cases.filter((c) => c.sandbox === s).map((c) => c.probe));
    }
    const judged = packets!.reader.judged;
    const ms = Date.now() - t0;

    const missing = cases.filter((c) => !judged.has(c.probe.id));
    assert.equal(missing.length, 0, `no trace for ${missing.length} packets, e.g. ${JSON.stringify(missing[0]?.probe)}`);

    const show = (c: Case, j: Judgement | undefined) =>
      `${c.instance.key}/${c.sandbox.spec.ip} -> ${c.probe.daddr} ${PROTO_NAME[c.probe.proto]}${c.probe.short ? ' (bare header)' : ''}${c.probe.proto === 6 || c.probe.proto === 17 ? `:${c.probe.dport}` : ''}: ` +
      `judge ${JSON.stringify(c.expected)}, kernel ${JSON.stringify(j)}`;
    const wrong = cases.filter((c) => {
      const got = judged.get(c.probe.id)!;
      const want = expectedJudgement(c);
      return got.verdict !== want.verdict || got.reason !== want.reason || got.rule !== want.rule || got.chain !== want.chain;
    });
    assert.equal(wrong.length, 0, `${wrong.length} of ${cases.length} cases disagree:\n${wrong.slice(0, 25).map((c) => show(c, judged.get(c.probe.id))).join('\n')}`);

    // The matrix reaches every rule of from_sandbox that decides a new flow, and every
    // reason a policy or the defaults can give (limits, the sandbox's and the instance's
    // ceiling of new connections, are rates: limits.test.ts).
    const decisive = new Set(cases.map((c) => `${c.instance.key} ${judged.get(c.probe.id)!.rule}`));
    for (const inst of instances) {
      for (const cmd of inst.builder.fullTable([])) {
        const r = (cmd.add as { rule?: { family: string; chain: string; comment?: string } } | undefined)?.rule;
        if (r?.family !== 'inet' || r.chain !== 'from_sandbox' || !r.comment || /^(limits\.|newConnsPerSecond$|related|what the sandbox)/.test(r.comment)) continue;
        if (SHADOWED.includes(r.comment)) continue;
        assert.ok(decisive.has(`${inst.key} ${r.comment}`), `no case decided by "${r.comment}" (${inst.key})`);
      }
    }
    const reasons = new Set(cases.map((c) => judged.get(c.probe.id)!.reason));
    for (const r of ['config', 'metadata', 'policy', 'sandbox', 'private', 'internet', 'dns', 'domain'] as DenyReason[]) assert.ok(reasons.has(r), `no case denied for ${r}`);
    const allowed = cases.filter((c) => c.expected.verdict === 'allow').length;
    console.log(`egress matrix: ${cases.length} cases (${allowed} allowed, ${cases.length - allowed} denied) judged by the kernel in ${ms} ms; ${packets!.events} trace events, ${packets!.resent} sent again`);
  });
});
