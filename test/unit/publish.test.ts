// Unit tests for published ports: --publish parsing, the API/CNI entry check, overlaps and
// conflicts (other sandboxes, host listeners, /proc/net parsing), and the elements a
// publishing becomes.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ToastnetError } from '../../src/errors.js';
import {
  checkPortMappings, formatPortMapping, instanceConflict, listenerConflict, publishedInMap, overlaps, parsePublish, portMappingsFromCni, publishConflict, type PortMapping,
} from '../../src/core/publish.js';
import { publishElements } from '../../src/core/publish-elements.js';
import { SANDBOX_SETS } from '../../src/core/sandbox-elements.js';
import { parseProcNet } from '../../src/kernel/listeners.js';

const invalid = (fn: () => unknown, pattern: RegExp) => assert.throws(fn, (e: unknown) => e instanceof ToastnetError && e.code === 'invalid_argument' && pattern.test(e.message));

describe('parsePublish (--publish [HOSTIP:]HOSTPORT:SANDBOXPORT[/tcp|udp])', () => {
  it('reads each form; tcp by default; 0.0.0.0 is every address', () => {
    assert.deepEqual(parsePublish('8080:80'), { hostPort: 8080, containerPort: 80, protocol: 'tcp' });
    assert.deepEqual(parsePublish('5353:53/udp'), { hostPort: 5353, containerPort: 53, protocol: 'udp' });
    assert.deepEqual(parsePublish('203.0.113.1:443:8443/TCP'), { hostPort: 443, containerPort: 8443, protocol: 'tcp', hostIP: '203.0.113.1' });
    assert.deepEqual(parsePublish('0.0.0.0:1:65535'), { hostPort: 1, containerPort: 65535, protocol: 'tcp' });
  });

  it('refuses ports 0 and 65536, other protocols, bad and loopback addresses, each naming the flag', () => {
    for (const [spec, why] of [
      ['0:80', /hostPort 0 is not a port/], ['65536:80', /hostPort 65536 is not a port/], ['80:0', /containerPort 0/], ['80:65536', /containerPort 65536/],
      ['80:80/sctp', /protocol "sctp": want tcp or udp/], ['80:80/', /want \[HOSTIP:\]HOSTPORT/],
      ['300.1.2.3:80:80', /"300.1.2.3" is not an IPv4 address/], ['1.2.3:80:80', /not an IPv4 address/], ['010.0.0.1:80:80', /not an IPv4 address/],
      ['127.0.0.1:80:80', /loopback.*route_localnet/], ['127.9.9.9:80:80', /loopback/], ['224.0.0.1:80:80', /not a unicast/], ['255.255.255.255:80:80', /not a unicast/],
      [':80:80', /empty HOSTIP/], ['80', /want/], ['a:b', /want/], ['80:80:80:80', /want/], ['-1:80', /want/], ['123456:80', /want/],
    ] as const) {
      invalid(() => parsePublish(spec), new RegExp(`^--publish ${spec.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: .*${why.source}`));
    }
  });

  it('formats as ls shows it', () => {
    assert.equal(formatPortMapping(parsePublish('8080:80')), '8080->80/tcp');
    assert.equal(formatPortMapping(parsePublish('192.0.2.2:53:5353/udp')), '192.0.2.2:53->5353/udp');
  });
});

describe('checkPortMappings (the API field) and portMappingsFromCni (runtimeConfig.portMappings)', () => {
  it('takes CNI\'s entries field for field: hostIP "" is every address, protocol in any case, tcp when absent', () => {
    const cni = [
      { hostPort: 8080, containerPort: 80, protocol: 'tcp' },
      { hostPort: 5353, containerPort: 53, protocol: 'UDP', hostIP: '' },
      { hostPort: 9000, containerPort: 9000, hostIP: '192.0.2.2' },
    ];
    assert.deepEqual(portMappingsFromCni(cni), [
      { hostPort: 8080, containerPort: 80, protocol: 'tcp' },
      { hostPort: 5353, containerPort: 53, protocol: 'udp' },
      { hostPort: 9000, containerPort: 9000, protocol: 'tcp', hostIP: '192.0.2.2' },
    ]);
    assert.deepEqual(portMappingsFromCni(undefined), []);
    assert.deepEqual(checkPortMappings([]), []);
  });

  it('refuses bad entries naming the entry; IPv6 host addresses; unknown fields; two entries claiming one host port', () => {
    invalid(() => checkPortMappings([{ hostPort: 1, containerPort: 1 }, { hostPort: '80', containerPort: 80 }]), /^publish\[1\]: hostPort "80" is not a port/);
    invalid(() => checkPortMappings([{ hostPort: 80.5, containerPort: 80 }]), /hostPort 80.5/);
    invalid(() => checkPortMappings([{ hostPort: 80, containerPort: 80, hostIP: '::' }]), /only IPv4/);
    invalid(() => checkPortMappings([{ hostPort: 80, containerPort: 80, hostPortt: 1 }]), /unknown field "hostPortt"/);
    invalid(() => checkPortMappings({ hostPort: 80 }), /want a list/);
    invalid(() => checkPortMappings(['8080:80']), /want \{hostPort/);
    invalid(() => portMappingsFromCni([{ hostPort: 80, containerPort: 80, protocol: 'sctp' }]), /^runtimeConfig\.portMappings\[0\]: protocol "sctp"/);
    invalid(() => checkPortMappings([{ hostPort: 80, containerPort: 1 }, { hostPort: 80, containerPort: 2, hostIP: '192.0.2.2' }]), /claim the same host port/);
    // Same port, other protocol or other specific address: no overlap.
    assert.equal(checkPortMappings([{ hostPort: 80, containerPort: 1 }, { hostPort: 80, containerPort: 1, protocol: 'udp' }]).length, 2);
    assert.equal(checkPortMappings([{ hostPort: 80, containerPort: 1, hostIP: '192.0.2.2' }, { hostPort: 80, containerPort: 1, hostIP: '192.0.2.3' }]).length, 2);
  });
});

describe('conflicts', () => {
  const m = (s: string): PortMapping => parsePublish(s);

  it('overlap: same protocol and port, and every address or the same one', () => {
    assert.ok(overlaps(m('80:1'), m('80:2')));
    assert.ok(overlaps(m('80:1'), m('192.0.2.2:80:2')));
    assert.ok(overlaps(m('192.0.2.2:80:1'), m('192.0.2.2:80:2')));
    assert.ok(!overlaps(m('192.0.2.2:80:1'), m('192.0.2.3:80:1')));
    assert.ok(!overlaps(m('80:1'), m('80:1/udp')));
    assert.ok(!overlaps(m('80:1'), m('81:1')));
  });

  it('another sandbox\'s publishing: named, with both sides', () => {
    const others = [{ name: 'a' }, { name: 'b', publish: [m('5353:53/udp'), m('192.0.2.2:8080:80')] }];
    assert.equal(publishConflict([m('8081:80')], others), undefined);
    assert.equal(publishConflict([m('8081:80'), m('8080:81')], others), 'publish 8080->81/tcp: host port 8080/tcp is already published by sandbox "b" (192.0.2.2:8080->80/tcp)');
    assert.equal(publishConflict([m('192.0.2.3:8080:80')], others), undefined);
  });

  it('a host listener on the port, on every address or the one published', () => {
    const ls = [{ protocol: 'tcp' as const, port: 22 }, { protocol: 'udp' as const, port: 53, address: '127.0.0.53' }, { protocol: 'tcp' as const, port: 443, address: '192.0.2.2' }];
    assert.equal(listenerConflict([m('22:22')], ls), 'publish 22->22/tcp: a host socket listens on *:22/tcp');
    assert.equal(listenerConflict([m('192.0.2.9:22:22')], ls), 'publish 192.0.2.9:22->22/tcp: a host socket listens on *:22/tcp');
    assert.equal(listenerConflict([m('22:22/udp')], ls), undefined);
    assert.equal(listenerConflict([m('53:53/udp')], ls), 'publish 53->53/udp: a host socket listens on 127.0.0.53:53/udp');
    assert.equal(listenerConflict([m('192.0.2.2:53:53/udp')], ls), undefined);
    assert.equal(listenerConflict([m('192.0.2.2:443:443')], ls), 'publish 192.0.2.2:443->443/tcp: a host socket listens on 192.0.2.2:443/tcp');
    assert.equal(listenerConflict([m('192.0.2.3:443:443')], ls), undefined);
  });

  it('another instance\'s publish_addr map, as libnftables lists it', () => {
    const listed = [
      [{ concat: [{ prefix: { addr: '0.0.0.0', len: 0 } }, 'tcp', 8080] }, '10.167.0.2'],
      [{ concat: ['192.0.2.2', 'udp', 53] }, '10.167.0.3'],
      [{ concat: ['192.0.2.2', 'sctp', 9] }, '10.167.0.3'], 'junk', [{}, 1],
    ];
    const theirs = publishedInMap(listed);
    assert.deepEqual(theirs, [{ protocol: 'tcp', port: 8080 }, { protocol: 'udp', port: 53, address: '192.0.2.2' }]);
    assert.equal(instanceConflict([m('192.0.2.9:8080:80')], 'other', theirs), 'publish 192.0.2.9:8080->80/tcp: host port 8080/tcp is already published by toastnet instance "other" (*:8080)');
    assert.equal(instanceConflict([m('53:53/udp')], 'other', theirs), 'publish 53->53/udp: host port 53/udp is already published by toastnet instance "other" (192.0.2.2:53)');
    assert.equal(instanceConflict([m('192.0.2.3:53:53/udp'), m('8081:80')], 'other', theirs), undefined);
  });

  it('/proc/net: TCP in LISTEN, UDP unconnected; IPv6 any and v4-mapped count, IPv6-only addresses do not', () => {
    const tcp = [
      '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode',
      '   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0',
      '   1: 0100007F:0277 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0',
      '   2: 020200C0:A1B2 0A0000CB:0050 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0 100 0 0 10 0',
    ].join('\n');
    assert.deepEqual(parseProcNet(tcp, 'tcp', false, true), [{ protocol: 'tcp', port: 8080 }, { protocol: 'tcp', port: 631, address: '127.0.0.1' }]);
    const udp = [
      '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops',
      '   0: 3500007F:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1 2 0 0',
      '   1: 020200C0:D431 0A0071CB:0035 01 00000000:00000000 00:00000000 00000000     0        0 2 2 0 0',
    ].join('\n');
    assert.deepEqual(parseProcNet(udp, 'udp', false, true), [{ protocol: 'udp', port: 53, address: '127.0.0.53' }]);
    const tcp6 = [
      '  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode',
      '   0: 00000000000000000000000000000000:1F91 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0',
      '   1: 0000000000000000FFFF0000020200C0:01BB 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0',
      '   2: 000080FE00000000FF005450B6AD1DFE:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3 1 0 100 0 0 10 0',
    ].join('\n');
    assert.deepEqual(parseProcNet(tcp6, 'tcp', true, true), [{ protocol: 'tcp', port: 8081 }, { protocol: 'tcp', port: 443, address: '192.0.2.2' }]);
  });
});

describe('publishElements', () => {
  const every = { range: ['0.0.0.0', '255.255.255.255'] };

  it('none without publishings', () => {
    assert.deepEqual(publishElements({ ip: '10.166.0.2' }), []);
    assert.deepEqual(publishElements({ ip: '10.166.0.2', publish: [] }), []);
  });

  it('each publishing: the host key to the address and to the port; one published element per sandbox port and protocol', () => {
    const publish = checkPortMappings([
      { hostPort: 8080, containerPort: 80 }, { hostPort: 8081, containerPort: 80 },
      { hostPort: 5353, containerPort: 53, protocol: 'udp', hostIP: '192.0.2.2' },
    ]);
    assert.deepEqual(publishElements({ ip: '10.166.0.2', publish }), [
      { set: 'publish_addr', elem: [{ concat: [every, 6, 8080] }, '10.166.0.2'] },
      { set: 'publish_port', elem: [{ concat: [every, 6, 8080] }, 80] },
      { set: 'published', elem: { concat: ['10.166.0.2', 6, 80] } },
      { set: 'publish_addr', elem: [{ concat: [every, 6, 8081] }, '10.166.0.2'] },
      { set: 'publish_port', elem: [{ concat: [every, 6, 8081] }, 80] },
      { set: 'publish_addr', elem: [{ concat: ['192.0.2.2', 17, 5353] }, '10.166.0.2'] },
      { set: 'publish_port', elem: [{ concat: ['192.0.2.2', 17, 5353] }, 53] },
      { set: 'published', elem: { concat: ['10.166.0.2', 17, 53] } },
    ]);
  });

  it('its sets are per-sandbox sets of the table (flushed by a reset, in the golden ruleset)', () => {
    for (const name of ['publish_addr', 'publish_port', 'published']) assert.ok(name in SANDBOX_SETS, name);
  });
});
