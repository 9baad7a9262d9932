// The instance's host network: the gateway link and macvlan parent, forwarding, the
// nftables table (built whole, with every live sandbox's elements), and what gc removes
// from the kernel that no live sandbox owns. Its sandboxes are the lifecycle's business.
import fs from 'node:fs';
import path from 'node:path';
import { kernelConfigHash } from '../config/load.js';
import { ToastnetError } from '../errors.js';
import { toastnetVersion } from '../version.js';
import { parseCidr } from '../core/ipv4.js';
import { NAME_GATE, nameCheckQueue } from '../core/name-check.js';
import { sandboxIdFromLink } from '../core/names.js';
import { deleteNetns, listNetns, netnsInode } from '../kernel/netns.js';
import { NFQ_FLAG_BYPASS, QUEUE_TARGET } from '../kernel/nfqueue-codec.js';
import { isNoSuchObject } from '../kernel/nft.js';
import { pidsInNetnses } from '../kernel/procs.js';
import { NETNS_ETC_DIR, NetnsEtc } from '../kernel/netns-etc.js';
import { parseLink } from '../kernel/rtnetlink-codec.js';
import * as rq from '../kernel/rtnl-requests.js';
import {
  checkSubnetFree, enableConntrackAccounting, getLinkOrUndefined, otherInstancesPresent, readForwarding, setupHostNet, teardownHostNet, writeForwarding,
} from '../kernel/host-net.js';
import type { GcReport, Status } from '../api/types.js';
import type { InstanceState } from './instance-state.js';
import { persistFiles, removePersisted } from './persist.js';
import type { UnjudgedCounters } from './unjudged.js';

export class HostNetwork {
  constructor(private readonly s: InstanceState) {}

  /**
   * The name gate's counts of packets dropped without a verdict, by source, as the kernel
   * keeps them (the daemon reports them: service/unjudged.ts); none while there is no gate
   * table, or one from before the count.
   */
  readonly unjudgedCounters: UnjudgedCounters = {
    bySource: () => {
      try {
        return new Map([...this.s.nft.listCounters('ip', this.s.names.table, NAME_GATE.unjudged.set)].map(([ip, c]) => [ip, c.packets]));
      } catch (err) {
        if (isNoSuchObject(err)) return undefined;
        throw err;
      }
    },
  };

  isUp(): boolean {
    return getLinkOrUndefined(this.s.rtnl, this.s.names.gatewayLink) !== undefined
      && this.s.nft.hasTable('inet', this.s.names.table)
      && this.s.nft.hasTable('ip', this.s.names.table); // the name gate (an instance made before it gets it at the next up)
  }

  /** Sets up the host side; idempotent. Rebuilds the table with every live sandbox's elements. */
  up(o: { persist?: boolean; persistRoot?: string } = {}): void {
    const hash = kernelConfigHash(this.s.config);
    const previous = this.s.store.getMeta('config_hash');
    if (previous && previous !== hash && this.s.store.count() > 0) {
      throw new ToastnetError('invalid_argument', 'subnet or gateway changed while sandboxes exist: remove them (or `toastnet down`) first');
    }
    checkSubnetFree(this.s.rtnl, this.s.names, parseCidr(this.s.config.subnet));
    // The name gate's queue rule needs xt_NFQUEUE through nft_compat: asked before anything
    // is made, so a kernel without it is refused with nothing to undo.
    if (!this.s.nft.hasXtTarget(QUEUE_TARGET.name, QUEUE_TARGET.rev)) {
      throw new ToastnetError('kernel', `this kernel has no xtables ${QUEUE_TARGET.name} target (modules nft_compat and xt_NFQUEUE), which name checks need`);
    }
    if (this.s.store.getMeta('forwarding_before') === undefined) this.s.store.setMeta('forwarding_before', readForwarding() ? '1' : '0');
    const host = setupHostNet(this.s.rtnl, this.s.names, this.s.config.gateway, this.s.prefixLength);
    this.s.parentIndex = host.parentIndex;
    writeForwarding(true);
    // Counters and quotas start again in a rebuilt table: carry what they hold.
    this.s.rebuildKeepingUsage((used) => this.s.rules.fullTable(this.s.live.elements(), this.s.live.objects(used)), 'install ruleset');
    // The name gate, with its queue rule (a transaction of its own, after the chain's); the
    // counts of packets it dropped unjudged are kept (service/unjudged.ts reports them).
    const keepUnjudged = this.s.nft.listSetElements('ip', this.s.names.table, NAME_GATE.unjudged.set) !== undefined;
    this.s.nft.apply(this.s.rules.nameGateTable({ keepUnjudged }), 'install the name gate');
    this.s.nft.appendQueueRule('ip', this.s.names.table, NAME_GATE.chain, nameCheckQueue(this.s.config.logGroup), NFQ_FLAG_BYPASS);
    this.s.nft.compact();
    // Counters and times per flow for the flow log (kernel/host-net.ts): best effort, a
    // flow log without them still records who opened what.
    enableConntrackAccounting();
    this.s.knownTiers.clear();
    this.s.noteTiers(this.s.live.objects());
    this.s.admissions.clear(); // the new table starts with an empty dns_allowed
    this.s.shapers.reconcile(this.s.live.specs());
    this.s.store.setMeta('config_hash', hash);
    if (o.persist) persistFiles(this.s.config, o.persistRoot ?? '/');
  }

  /**
   * Removes the host side and the instance's files and state, once its sandboxes are gone
   * (the engine's down removes them first): table, links, forwarding as it was, persisted
   * files, the state database and directory.
   */
  tearDown(o: { persistRoot?: string } = {}): void {
    this.gcKernel(new Set());
    this.s.nft.apply(this.s.rules.deleteTable(), 'delete table');
    const others = otherInstancesPresent(this.s.rtnl, this.s.names);
    this.s.shapers.tearDown();
    teardownHostNet(this.s.rtnl, this.s.names);
    if (this.s.store.getMeta('forwarding_before') === '0' && !others) writeForwarding(false);
    removePersisted(this.s.config, o.persistRoot ?? '/');
    this.s.store.close();
    for (const f of ['state.db', 'state.db-wal', 'state.db-shm']) fs.rmSync(path.join(this.s.config.stateDir, f), { force: true });
    this.s.etc.removeShared();
    try {
      fs.rmdirSync(this.s.config.stateDir); // only if nothing else lives there
    } catch {
      // not empty, or already gone
    }
  }

  /** Removes the instance's namespaces, links and files not owned by the given sandboxes. */
  gcKernel(liveNames: Set<string>, liveIds = new Set<number>()): Omit<GcReport, 'sandboxes'> {
    const out = { namespaces: [] as string[], links: [] as string[], files: [] as string[] };
    const p = this.s.names.netnsPrefix;
    const unknown = new Set<number>();
    const mine = listNetns().filter((ns) => ns.startsWith(p));
    for (const ns of mine) {
      if (liveNames.has(ns.slice(p.length))) continue;
      const ino = netnsInode(ns);
      deleteNetns(ns);
      if (ino !== undefined) unknown.add(ino);
      out.namespaces.push(ns);
    }
    if (unknown.size > 0) {
      // A second name of a live sandbox's namespace (a pool member's old name, left by a
      // crash right after an acquisition) is dropped, but what runs inside belongs to the
      // sandbox.
      for (const ns of mine) {
        const ino = liveNames.has(ns.slice(p.length)) ? netnsInode(ns) : undefined;
        if (ino !== undefined) unknown.delete(ino);
      }
      for (const pids of pidsInNetnses(unknown).values()) for (const pid of pids) process.kill(pid, 'SIGKILL');
    }
    for (const l of this.s.rtnl.dump(rq.dumpLinks()).map(parseLink)) {
      const id = sandboxIdFromLink(this.s.names, l.name);
      if (id === undefined || liveIds.has(id)) continue;
      try {
        this.s.rtnl.exec([rq.delLink(l.name)], [`delete ${l.name}`]);
        out.links.push(l.name);
      } catch {
        // being reaped by the kernel already
      }
    }
    for (const d of NetnsEtc.list()) {
      if (d.startsWith(p) && !liveNames.has(d.slice(p.length))) {
        this.s.etc.unlink(d);
        out.files.push(path.join(NETNS_ETC_DIR, d));
      }
    }
    return out;
  }

  status(building: number, daemonPid?: number): Status {
    const sandboxes = this.s.store.count();
    const pooled = this.s.store.countPool();
    // Leased: live sandboxes, pool members, and removed sandboxes whose processes are being ended.
    const used = this.s.ipam.capacity - this.s.ipam.free;
    return {
      version: toastnetVersion(),
      instance: this.s.config.instance,
      up: this.isUp(),
      subnet: this.s.config.subnet,
      gateway: this.s.config.gateway,
      table: `inet ${this.s.names.table}`,
      gatewayLink: this.s.names.gatewayLink,
      forwarding: readForwarding(),
      sandboxes: sandboxes - pooled,
      pool: { idle: pooled - building }, // ready to be acquired, not those being built
      addresses: { capacity: this.s.ipam.capacity, used, free: this.s.ipam.free, releasing: used - sandboxes },
      dnsUpstreams: this.s.config.dnsUpstreams,
      stateFile: this.s.store.file,
      socket: path.join(this.s.config.runDir, 'toastnet.sock'),
      daemon: daemonPid ? { pid: daemonPid } : null,
    };
  }
}
