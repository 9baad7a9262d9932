// `toastnet doctor`: checks, in a throwaway network namespace, every kernel feature and tool
// toastnet relies on, and says how to fix what is missing. Touches nothing of the host's.
import fs from 'node:fs';
import { execFileSync } from 'node:child_process';
import { Nft } from '../kernel/nft.js';
import { Conntrack } from '../kernel/conntrack.js';
import { NETNS_RUN_DIR, createNetns, deleteNetns, netnsPath, withNetns } from '../kernel/netns.js';
import { RtnetlinkSocket } from '../kernel/rtnetlink.js';
import { parseLink } from '../kernel/rtnetlink-codec.js';
import { createTap, openTun } from '../kernel/tun.js';
import { addClsact, redirectIngress } from '../kernel/tc-redirect.js';
import { resolveTapOptions } from '../core/tap.js';
import * as rq from '../kernel/rtnl-requests.js';
import { applyShaping, ensureShaperDevices, shapingPlan } from '../kernel/shaper.js';
import { parseCidr } from '../core/ipv4.js';
import type { InstanceNames } from '../core/names.js';
import { resolvePolicy } from '../core/policy.js';
import { sandboxShaping } from '../core/shaping.js';
import { QUEUE_TARGET } from '../kernel/nfqueue-codec.js';

export interface Check {
  name: string;
  ok: boolean;
  detail?: string;
  fix?: string;
  /** Works, but could be faster: what to change. */
  advice?: string;
}

const TMPFS_MAGIC = 0x01021994;

function probe(name: string, fix: string, fn: () => string | void): Check {
  try {
    const detail = fn();
    return { name, ok: true, ...(detail ? { detail } : {}) };
  } catch (err) {
    return { name, ok: false, detail: (err as Error).message, fix };
  }
}

/**
 * Not a failure when it is not tmpfs: everything works, but each create and delete pays a
 * disk filesystem's price for the name's directory entry and inode.
 */
function runDirCheck(): Check {
  const name = `${NETNS_RUN_DIR} filesystem (tmpfs is fastest)`;
  try {
    // Not there yet: it will be made in /run.
    if (fs.statfsSync(fs.existsSync(NETNS_RUN_DIR) ? NETNS_RUN_DIR : '/run').type === TMPFS_MAGIC) return { name, ok: true };
    return {
      name,
      ok: true,
      advice: 'not tmpfs: every create and delete makes and removes an entry there, 0.05-0.3 ms each on a disk filesystem (ext4 without a journal is the worst, and a directory that once held thousands of entries stays slow); mount /run as tmpfs, as most hosts do',
    };
  } catch (err) {
    return { name, ok: false, detail: (err as Error).message, fix: 'toastnet keeps namespace names in /run/netns: /run must exist' };
  }
}

export async function runDoctor(): Promise<Check[]> {
  const checks: Check[] = [];
  checks.push(probe('running as root', 'run toastnet as root (it creates namespaces, links and nftables rules)', () => {
    if (process.getuid?.() !== 0) throw new Error(`uid ${process.getuid?.()}`);
  }));
  checks.push(probe('node >= 20', 'install Node.js 20 or newer', () => {
    if (Number(process.versions.node.split('.')[0]) < 20) throw new Error(process.versions.node);
  }));
  checks.push(probe('iproute2 (ip) for exec/run', 'apt-get install iproute2', () => {
    execFileSync('ip', ['-V'], { stdio: 'ignore' });
  }));
  checks.push(probe('libnftables', 'apt-get install libnftables1 nftables', () => {
    new Nft().free();
  }));
  checks.push(probe('IPv4 forwarding sysctl', 'mount /proc/sys read-write (not in a restricted container)', () => {
    fs.accessSync('/proc/sys/net/ipv4/ip_forward', fs.constants.R_OK | fs.constants.W_OK);
  }));

  checks.push(runDirCheck());

  const ns = `toastnet-doctor-${process.pid}`;
  let inside: RtnetlinkSocket | undefined;
  const netns = probe('network namespaces (unshare + bind mount under /run/netns)', 'enable CONFIG_NET_NS and make /run writable', () => {
    createNetns(ns, () => {
      inside = new RtnetlinkSocket();
    });
  });
  checks.push(netns);
  if (netns.ok && inside) {
    const sock = inside;
    try {
      checks.push(probe('veth', 'enable CONFIG_VETH (modprobe veth)', () => {
        sock.exec([rq.newVeth({ name: 'dv0' }, { name: 'dv1' })], ['create veth']);
      }));
      checks.push(probe('macvlan', 'enable CONFIG_MACVLAN (modprobe macvlan)', () => {
        const parent = parseLink(sock.get(rq.getLink('dv1'), 'get dv1'));
        sock.exec([rq.newMacvlan(parent.index, { name: 'dm0' })], ['create macvlan']);
      }));
      checks.push(probe('tap (TAP sandboxes: TUNSETIFF, tc clsact + u32 + mirred)', 'enable CONFIG_TUN, CONFIG_NET_SCH_INGRESS, CONFIG_NET_CLS_U32, CONFIG_NET_ACT_MIRRED; /dev/net/tun must exist (modprobe tun)', () => {
        const fd = withNetns(netnsPath(ns), openTun);
        const tap = 100;
        try {
          createTap(fd, 'dt0', tap, resolveTapOptions(undefined));
        } finally {
          fs.closeSync(fd);
        }
        const veth = parseLink(sock.get(rq.getLink('dv0'), 'get dv0')).index;
        sock.exec([addClsact(tap), redirectIngress(tap, veth)], ['clsact', 'redirect']);
      }));
      checks.push(probe('bandwidth shaping (ifb, HTB, bfifo, clsact, u32, mirred)', 'enable CONFIG_IFB, NET_SCH_HTB, NET_SCH_FIFO, NET_SCH_INGRESS, NET_CLS_U32, NET_CLS_ACT, NET_ACT_MIRRED (modprobe ifb sch_htb sch_ingress cls_u32 act_mirred)', () => {
        // The whole of a limited sandbox's shaping, both ways of attaching, on throwaway links.
        const names = { shaperLink: 'dq0', gatewayLink: 'dv0', macvlanParent: 'dv1' } as InstanceNames;
        const subnet = parseCidr('10.166.0.0/16');
        const dev = ensureShaperDevices(sock, names, subnet);
        const sh = sandboxShaping({ ip: '10.166.0.2', policy: resolvePolicy({ limits: { egressRate: '10mbit', ingressRate: '10mbit' } }) }, subnet);
        const own = parseLink(sock.get(rq.getLink('dm0'), 'get dm0')).index;
        applyShaping(sock, shapingPlan(dev, { device: own }, undefined, sh));
        applyShaping(sock, shapingPlan(dev, { macvlan: '02:00:00:00:00:02' }, undefined, sh));
      }));
      checks.push(probe('nftables inet filter, conntrack, sets, NAT masquerade and DNAT, fib, reject, socket', 'enable nf_tables, nft_ct, nft_nat, nft_masq, nft_fib_inet, nft_reject_inet, nft_socket, nf_conntrack (modprobe them)', () => {
        withNetns(netnsPath(ns), () => {
          const nft = new Nft();
          try {
            const t = { family: 'inet', table: 'doctor' };
            const publishKey = { concat: [{ payload: { protocol: 'ip', field: 'daddr' } }, { meta: { key: 'l4proto' } }, { payload: { protocol: 'th', field: 'dport' } }] };
            nft.apply([
              { add: { table: { family: 'inet', name: 'doctor' } } },
              { add: { set: { ...t, name: 's', type: ['ifname', 'ipv4_addr'] } } },
              { add: { chain: { ...t, name: 'f', type: 'filter', hook: 'forward', prio: 0, policy: 'accept' } } },
              { add: { chain: { ...t, name: 'n', type: 'nat', hook: 'postrouting', prio: 100, policy: 'accept' } } },
              { add: { rule: { ...t, chain: 'f', expr: [{ match: { op: 'in', left: { ct: { key: 'state' } }, right: ['established'] } }, { accept: null }] } } },
              { add: { rule: { ...t, chain: 'f', expr: [{ match: { op: '!=', left: { concat: [{ meta: { key: 'iifname' } }, { payload: { protocol: 'ip', field: 'saddr' } }] }, right: '@s' } }, { reject: { type: 'icmpx', expr: 'admin-prohibited' } }] } } },
              { add: { rule: { ...t, chain: 'n', expr: [{ masquerade: null }] } } },
              // What isolation rests on: related packets checked against the flow's own addresses, DNS only to the resolver's socket.
              { add: { set: { ...t, name: 'p', type: ['ipv4_addr', 'ipv4_addr'] } } },
              { add: { rule: { ...t, chain: 'f', expr: [{ match: { op: '==', left: { concat: [{ payload: { protocol: 'ip', field: 'saddr' } }, { ct: { key: 'ip saddr', dir: 'original' } }] }, right: '@p' } }, { accept: null }] } } },
              { add: { chain: { ...t, name: 'i', type: 'filter', hook: 'input', prio: 0, policy: 'accept' } } },
              { add: { rule: { ...t, chain: 'i', expr: [{ match: { op: '==', left: { socket: { key: 'mark' } }, right: 1 } }, { accept: null }] } } },
              // Published ports: a new flow to one of the host's own addresses translated through two interval maps.
              { add: { map: { ...t, name: 'pa', type: ['ipv4_addr', 'inet_proto', 'inet_service'], map: 'ipv4_addr', flags: ['interval'] } } },
              { add: { map: { ...t, name: 'pp', type: ['ipv4_addr', 'inet_proto', 'inet_service'], map: 'inet_service', flags: ['interval'] } } },
              { add: { chain: { ...t, name: 'd', type: 'nat', hook: 'prerouting', prio: -100, policy: 'accept' } } },
              { add: { rule: { ...t, chain: 'd', expr: [
                { match: { op: '==', left: { meta: { key: 'l4proto' } }, right: { set: ['tcp', 'udp'] } } },
                { match: { op: '==', left: { fib: { result: 'type', flags: ['daddr'] } }, right: 'local' } },
                { dnat: { family: 'ip', addr: { map: { key: publishKey, data: '@pa' } }, port: { map: { key: publishKey, data: '@pp' } } } },
              ] } } },
            ]);
          } finally {
            nft.free();
          }
        });
      }));
      checks.push(probe('the name gate\'s queue (xtables NFQUEUE through nft_compat)', 'enable CONFIG_NFT_COMPAT and CONFIG_NETFILTER_XT_TARGET_NFQUEUE (modprobe nft_compat xt_NFQUEUE): `up` refuses without them', () => {
        withNetns(netnsPath(ns), () => {
          const nft = new Nft();
          try {
            if (!nft.hasXtTarget(QUEUE_TARGET.name, QUEUE_TARGET.rev)) throw new Error(`no xtables ${QUEUE_TARGET.name} target, revision ${QUEUE_TARGET.rev}`);
          } finally {
            nft.free();
          }
        });
      }));
      checks.push(probe('ctnetlink (conntrack over netlink: cutting flows, forgetting removed sandboxes\' flows)', 'enable nf_conntrack_netlink (modprobe nf_conntrack_netlink)', () => {
        withNetns(netnsPath(ns), () => {
          const ct = new Conntrack();
          try {
            ct.flows();
          } finally {
            ct.close();
          }
        });
      }));
      checks.push(probe('IPv6 (to switch it off on sandbox links)', 'none needed: without IPv6 there is no IPv6 side door', () => {
        if (!fs.existsSync('/proc/sys/net/ipv6')) return 'IPv6 not compiled in';
      }));
    } finally {
      sock.close();
      deleteNetns(ns);
    }
  }
  return checks;
}
