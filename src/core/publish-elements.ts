// A sandbox's published ports as elements of the instance's table (see publish.ts for what
// a publishing is, ruleset.ts for the rules that read these sets). Three per-sandbox sets,
// so that the rules stay the same however many sandboxes publish:
//   publish_addr, publish_port  host address . protocol . host port -> sandbox address, its
//                               port: the destination translation (nat prerouting, output).
//                               Two maps because nft 1.0.6's JSON cannot declare a map to a
//                               concatenation (address . port). Interval keys: a port
//                               published on every host address is the whole address range
//                               (the rules check the address is the host's own, fib local).
//   published                   sandbox . protocol . sandbox port: what the forward filter
//                               lets in when conntrack says the flow was translated; its
//                               per-element counter counts connections in.
import type { PortMapping } from './publish.js';
import type { SandboxSpec } from './sandbox-spec.js';

export const PUBLISH_SETS = {
  publish_addr: { type: ['ipv4_addr', 'inet_proto', 'inet_service'], map: 'ipv4_addr', flags: ['interval'], comment: 'host address . protocol . published host port -> sandbox' },
  publish_port: { type: ['ipv4_addr', 'inet_proto', 'inet_service'], map: 'inet_service', flags: ['interval'], comment: 'host address . protocol . published host port -> sandbox port' },
  published: { type: ['ipv4_addr', 'inet_proto', 'inet_service'], stmt: [{ counter: null }], comment: 'sandbox . protocol . port reached through a published host port; counts connections' },
} as const;

export type PublishSet = keyof typeof PUBLISH_SETS;

const PROTO = { tcp: 6, udp: 17 } as const;
const EVERY_ADDRESS = { range: ['0.0.0.0', '255.255.255.255'] };

/** The key of one publishing in publish_addr and publish_port. */
export const publishKey = (m: PortMapping): unknown => ({ concat: [m.hostIP ?? EVERY_ADDRESS, PROTO[m.protocol], m.hostPort] });

/** The elements of `s`'s publishings (none without). Two host ports to one sandbox port share its `published` element. */
export function publishElements(s: Pick<SandboxSpec, 'ip' | 'publish'>): { set: PublishSet; elem: unknown }[] {
  const out: { set: PublishSet; elem: unknown }[] = [];
  const opened = new Set<string>();
  for (const m of s.publish ?? []) {
    out.push({ set: 'publish_addr', elem: [publishKey(m), s.ip] }, { set: 'publish_port', elem: [publishKey(m), m.containerPort] });
    const key = `${m.protocol}/${m.containerPort}`;
    if (opened.has(key)) continue;
    opened.add(key);
    out.push({ set: 'published', elem: { concat: [s.ip, PROTO[m.protocol], m.containerPort] } });
  }
  return out;
}
