// One sandbox's network in the kernel: a namespace with lo and eth0, joined to the host by
// its mode's link driver (links/), which also configures the inside (eth0's address and
// default route via the gateway; for tap, the TAP joined to eth0). Create is
// all-or-nothing: on any failure the host side and the namespace (and with it every link
// inside) are removed again.
import fs from 'node:fs';
import { createNetns, deleteNetns, netnsPath, withNetns } from './netns.js';
import { RtnetlinkSocket, isNoSuchLink } from './rtnetlink.js';
import { SandboxNetSpec, linkDriver } from './links/index.js';
import { LINK_MODES } from '../core/link-modes.js';
import { ToastnetError } from '../errors.js';
import { withUndo } from '../undo.js';
import { getLinkOrUndefined } from './host-net.js';
import {
  AddrInfo, LinkInfo, RouteInfo, RT_TABLE_MAIN, parseAddr, parseLink, parseRoute,
} from './rtnetlink-codec.js';
import * as rq from './rtnl-requests.js';

/** ifindex of eth0 in a fresh namespace: lo is always 1, so we can name 2 up front. */
const SANDBOX_IFINDEX = 2;

export type { SandboxNetSpec };

export function createSandboxNet(host: RtnetlinkSocket, s: SandboxNetSpec): void {
  const driver = linkDriver(s.mode);
  let inside: RtnetlinkSocket | undefined;
  let opened: number | undefined;
  createNetns(s.netns, () => {
    inside = new RtnetlinkSocket();
    opened = driver.openInside?.(s);
  });
  try {
    const nsFd = fs.openSync(netnsPath(s.netns), 'r');
    const end = { name: 'eth0', index: SANDBOX_IFINDEX, nsFd, mac: s.mac };
    try {
      driver.make(host, s, end);
    } finally {
      fs.closeSync(nsFd);
    }
    const handed = opened;
    opened = undefined; // configureInside closes it
    driver.configureInside(inside!, s, end, handed);
  } catch (err) {
    removeSandboxNet(host, s);
    throw err;
  } finally {
    inside?.close();
    if (opened !== undefined) fs.closeSync(opened);
  }
}

/**
 * Removes the host side and the namespace; the kernel reaps the links inside once no
 * process holds the namespace (deleting a veth explicitly costs 25-35 ms). Idempotent.
 */
export function removeSandboxNet(host: RtnetlinkSocket, s: Pick<SandboxNetSpec, 'netns' | 'mode' | 'ip' | 'hostLink'>): void {
  linkDriver(s.mode).removeHostSide(host, s);
  deleteNetns(s.netns);
}

/** A namespace a container runtime made (CNI_NETNS), and the interface it wants in it (CNI_IFNAME). */
export interface AdoptedEnd {
  netnsPath: string;
  ifname: string;
}

/**
 * Attaches a namespace someone else made and owns: the mode's link with its end named
 * `end.ifname` inside it, configured as in one of ours. All-or-nothing: on failure the link
 * is removed again; the namespace is never touched beyond it. Returns the namespace's inode.
 */
export function adoptSandboxNet(host: RtnetlinkSocket, s: SandboxNetSpec, end: AdoptedEnd): number {
  let nsFd: number;
  try {
    nsFd = fs.openSync(end.netnsPath, 'r');
  } catch (err) {
    throw new ToastnetError('invalid_argument', `namespace ${end.netnsPath}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  try {
    const inode = fs.fstatSync(nsFd).ino;
    const inside = withNetns(`/proc/self/fd/${nsFd}`, () => new RtnetlinkSocket());
    try {
      withUndo((undo) => {
        if (getLinkOrUndefined(inside, end.ifname)) throw new ToastnetError('conflict', `${end.netnsPath} already has an interface ${end.ifname}`);
        linkDriver(s.mode).make(host, s, { name: end.ifname, index: 0, nsFd, mac: s.mac });
        undo.push('remove the link', () => removeAdoptedLink(host, s, end, inside));
        const index = parseLink(inside.get(rq.getLink(end.ifname), `get ${end.ifname}`)).index;
        // Only our interface: lo and the rest of the namespace are the runtime's (its loopback plugin).
        inside.exec(
          [
            rq.setUp(index, { noIpv6: true }),
            rq.addAddr(index, s.ip, s.prefixLength),
            rq.addRoute({ dst: '0.0.0.0', dstLen: 0, oif: index, gateway: s.gateway, onlink: true }),
          ],
          [`up ${end.ifname}`, `address ${s.ip}/${s.prefixLength}`, `default route via ${s.gateway}`],
        );
      });
    } finally {
      inside.close();
    }
    return inode;
  } finally {
    fs.closeSync(nsFd);
  }
}

/**
 * Takes an adopted namespace's link back out, leaving the namespace to its owner. A veth
 * goes with its host end (the peer with it), by `later` when given; a link without a host
 * end is deleted inside, if the namespace is still there. Idempotent.
 */
export function releaseAdoptedNet(
  host: RtnetlinkSocket,
  s: Pick<SandboxNetSpec, 'mode' | 'ip' | 'hostLink'>,
  end: Partial<AdoptedEnd>,
  later?: (hostLink: string) => void,
): void {
  // A link with a host end can be deleted by someone else later (background-unlink.ts): its
  // routes go with it, and so does its peer in the namespace.
  if (later && LINK_MODES[s.mode].hostLink) {
    later(s.hostLink);
    return;
  }
  // Both steps run whatever the first did; the first failure is reported after.
  let failed: unknown;
  try {
    linkDriver(s.mode).removeHostSide(host, s);
  } catch (err) {
    failed = err;
  }
  try {
    if (LINK_MODES[s.mode].hostLink || !end.netnsPath || !end.ifname || !fs.existsSync(end.netnsPath)) {
      removeAdoptedLink(host, s, end);
    } else {
      const inside = withNetns(end.netnsPath, () => new RtnetlinkSocket());
      try {
        removeAdoptedLink(host, s, end, inside);
      } finally {
        inside.close();
      }
    }
  } catch (err) {
    failed ??= err;
  }
  if (failed !== undefined) throw failed;
}

function removeAdoptedLink(host: RtnetlinkSocket, s: Pick<SandboxNetSpec, 'mode' | 'hostLink'>, end: Partial<AdoptedEnd>, inside?: RtnetlinkSocket): void {
  const [sock, name] = LINK_MODES[s.mode].hostLink ? [host, s.hostLink] : [inside, end.ifname];
  if (!sock || !name) return;
  try {
    sock.exec([rq.delLink(name)], [`delete ${name}`]);
  } catch (err) {
    if (!isNoSuchLink(err)) throw err;
  }
}

export interface SandboxNetView {
  host?: LinkInfo;
  sandbox?: { links: LinkInfo[]; addresses: AddrInfo[]; routes: RouteInfo[] };
  hostRoutes: RouteInfo[];
}

/** Both ends of a sandbox's link as the kernel sees them now (for inspect and check). */
export function inspectSandboxNet(host: RtnetlinkSocket, s: Pick<SandboxNetSpec, 'netns' | 'mode' | 'ip' | 'hostLink'>, path = netnsPath(s.netns)): SandboxNetView {
  const view: SandboxNetView = linkDriver(s.mode).describeHost(host, s);
  if (fs.existsSync(path)) {
    const sock = withNetns(path, () => new RtnetlinkSocket());
    try {
      view.sandbox = {
        links: sock.dump(rq.dumpLinks()).map(parseLink),
        addresses: sock.dump(rq.dumpAddrs()).map(parseAddr),
        routes: sock.dump(rq.dumpRoutes()).map(parseRoute).filter((r) => r.table === RT_TABLE_MAIN),
      };
    } finally {
      sock.close();
    }
  }
  return view;
}
