// The thread that makes warm-pool members' kernel part (PoolBuilder): the namespace, the
// veth pair, addresses, routes and the /etc/netns entry, all-or-nothing, on its own
// rtnetlink socket. Namespace switches here move this thread only (netns.ts uses
// /proc/thread-self), and every one of them is restored before the next message.
import { parentPort, workerData } from 'node:worker_threads';
import { asToastnetError } from '../errors.js';
import { NetnsEtc } from '../kernel/netns-etc.js';
import { RtnetlinkSocket } from '../kernel/rtnetlink.js';
import { BuildReply, BuildRequest, buildMember } from './pool-builder.js';

const { instance } = workerData as { instance: string };
// Only link() is used here: the shared resolv.conf is the main thread's to write.
const etc = new NetnsEtc(instance, '');
const host = new RtnetlinkSocket();

parentPort!.on('message', (m: BuildRequest) => {
  let reply: BuildReply;
  try {
    buildMember(host, etc, m.net);
    reply = { id: m.id };
  } catch (err) {
    const e = asToastnetError(err);
    reply = { id: m.id, error: { code: e.code, message: e.message } };
  }
  parentPort!.postMessage(reply);
});
