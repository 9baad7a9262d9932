// A worker thread that reads denial logs from NFLOG. recv() blocks, so it runs off the
// main thread; the worker is started by the daemon outside any namespace switch and so
// reads the daemon's (the host's) namespace. Posts batches of LoggedPacket.
import { parentPort, workerData } from 'node:worker_threads';
import { NetlinkSocket } from './rtnetlink.js';
import { NETLINK_NETFILTER } from './libc.js';
import { bindRequests, parseLogged, LoggedPacket } from './nflog-codec.js';

const { group } = workerData as { group: number };

const sock = new NetlinkSocket(NETLINK_NETFILTER, 1);
try {
  sock.exec(bindRequests(group), ['bind NFLOG group', 'set NFLOG copy mode']);
  parentPort!.postMessage({ ready: true });
} catch (err) {
  parentPort!.postMessage({ error: (err as Error).message });
  process.exit(1);
}
for (;;) {
  const batch: LoggedPacket[] = [];
  for (const m of sock.receive()) {
    const p = parseLogged(m);
    if (p) batch.push(p);
  }
  if (batch.length > 0) parentPort!.postMessage({ packets: batch });
}
