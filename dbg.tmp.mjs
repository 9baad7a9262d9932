import { Testbed } from './dist/test/testbed/testbed.js';
const tb = await Testbed.create({ hostService: false });
const I='dbg4';
try {
  const r = tb.toastnet(I, ['create','g1']); console.log(r.code, r.stderr);
  const ns = tb.hostNs;
  const link = tb.sh(ns, ['ip', '-o', 'link']).split('\n').find((l) => /tn[0-9a-f]{4}s/.test(l)).split(':')[1].trim().split('@')[0];
  console.log(link, tb.sh(ns, ['cat', `/proc/sys/net/ipv4/neigh/${link}/proxy_delay`]), tb.sh(ns, ['sh', '-c', 'cat /proc/sys/net/ipv4/neigh/tn*g/proxy_delay']));
} finally { tb.toastnet(I, ['down']); await tb.destroy(); }
