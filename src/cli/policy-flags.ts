// Policy from the command line: --policy FILE|- for a whole document, and flags for the
// common fields, which override the document's.
import fs from 'node:fs';
import { Command, Option } from 'commander';
import { ToastnetError } from '../errors.js';
import type { PolicyInput } from '../core/policy.js';

export interface PolicyFlags {
  policy?: string;
  allow?: string[];
  deny?: string[];
  internet?: boolean;
  group?: string;
  reportOnly?: boolean;
  inbound?: boolean;
  inboundPort?: string[];
  domain?: string[];
  verifyNames?: boolean;
  unnamedPort?: string[];
  limit?: string[];
}

/** Limit fields that take whole numbers (the others take rates or sizes as strings). */
const COUNT_LIMITS = new Set(['newConnsPerSecond', 'newConnsBurst', 'maxConnections', 'packetsPerSecond', 'packetsBurst']);
const LIMIT_FIELDS = ['egressRate', 'egressBurst', 'ingressRate', 'ingressBurst', 'newConnsPerSecond', 'newConnsBurst', 'maxConnections', 'packetsPerSecond', 'packetsBurst', 'egressBytes', 'ingressBytes'];

/** "egressRate=10mbit" -> ["egressRate", "10mbit"]; numbers for count fields and plain digits. */
function parseLimitFlag(s: string): [string, string | number] {
  const m = /^([A-Za-z]+)=(.+)$/.exec(s);
  if (!m || !LIMIT_FIELDS.includes(m[1])) throw new ToastnetError('invalid_argument', `--limit ${s}: want FIELD=VALUE with FIELD one of ${LIMIT_FIELDS.join(', ')}`);
  const v = m[2];
  return [m[1], COUNT_LIMITS.has(m[1]) || /^\d+$/.test(v) ? Number(v) : v];
}

const collect = (v: string, prev: string[] = []) => [...prev, v];

export function addPolicyOptions(cmd: Command): Command {
  return cmd
    .option('--policy <file>', 'policy document (JSON), or - for standard input')
    .option('--allow <entry>', 'open CIDR[:port[-port]][/tcp|udp|icmp] (repeatable)', collect)
    .option('--deny <entry>', 'close CIDR[:port[-port]][/tcp|udp|icmp] (repeatable)', collect)
    .option('--no-internet', 'no public internet (allow entries still apply)')
    .option('--domain <name>', 'internet only at addresses DNS gave for these names, e.g. pypi.org, *.githubusercontent.com (repeatable)', collect)
    .option('--verify-names', 'without --domain: a connection to the internet must name (TLS SNI, HTTP Host) what the sandbox\'s DNS answered with its address')
    .option('--no-verify-names', 'with --domain: do not check the name a connection sends first (TLS SNI, HTTP Host)')
    .addOption(new Option('--unnamed-port <port>', 'with name checks: a port where a connection may name nothing, e.g. 22 or 123/udp (repeatable)').argParser(collect))
    .option('--group <name>', 'sandboxes of one group may reach each other')
    .option('--report-only', 'block nothing; log what would have been blocked')
    .option('--no-inbound', 'the host may not connect into the sandbox')
    .addOption(new Option('--inbound-port <port>', 'the host may connect only to these ports: PORT[-PORT][/tcp|udp] (repeatable)').argParser(collect))
    .option('--limit <field=value>', 'a limit, e.g. egressRate=10mbit, ingressRate=5MB/s, maxConnections=100, egressBytes=1GB (repeatable)', collect);
}

function readDoc(file: string): PolicyInput {
  let text: string;
  try {
    text = file === '-' ? fs.readFileSync(0, 'utf8') : fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new ToastnetError('invalid_argument', `policy ${file}: ${(err as Error).message}`);
  }
  try {
    return JSON.parse(text) as PolicyInput;
  } catch (err) {
    throw new ToastnetError('invalid_argument', `policy ${file}: not valid JSON (${(err as Error).message})`);
  }
}

/** The policy document the flags describe, or undefined when none was given. */
export function policyFromFlags(o: PolicyFlags): PolicyInput | undefined {
  const given = o.policy !== undefined || o.allow || o.deny || o.domain || o.internet === false || o.verifyNames !== undefined || o.unnamedPort || o.group !== undefined || o.reportOnly || o.inbound === false || o.inboundPort || o.limit;
  if (!given) return undefined;
  const doc: PolicyInput = o.policy !== undefined ? readDoc(o.policy) : {};
  const egress = { ...(doc.egress ?? {}) };
  if (o.allow) egress.allow = o.allow;
  if (o.deny) egress.deny = o.deny;
  if (o.internet === false) egress.internet = false;
  if (o.domain) egress.domains = o.domain;
  if (o.verifyNames !== undefined) egress.verifyNames = o.verifyNames;
  if (o.unnamedPort) egress.unnamedPorts = o.unnamedPort;
  if (Object.keys(egress).length > 0) doc.egress = egress;
  if (o.group !== undefined) doc.group = o.group;
  if (o.reportOnly) doc.mode = 'report';
  if (o.inbound === false) doc.inbound = { ...(doc.inbound ?? {}), enabled: false };
  if (o.inboundPort) doc.inbound = { ...(doc.inbound ?? {}), ports: o.inboundPort };
  if (o.limit) doc.limits = { ...(doc.limits ?? {}), ...Object.fromEntries(o.limit.map(parseLimitFlag)) };
  return doc;
}
