// `--publish [HOSTIP:]HOSTPORT:SANDBOXPORT[/tcp|udp]` on create and run: parsed here, so a
// bad entry is refused before a daemon is asked for anything.
import { Command } from 'commander';
import { PortMapping, formatPortMapping, parsePublish } from '../core/publish.js';

export interface PublishFlags {
  publish?: string[];
}

const collect = (v: string, prev: string[] = []) => [...prev, v];

export function addPublishOption(cmd: Command): Command {
  return cmd.option(
    '--publish <spec>',
    '[HOSTIP:]HOSTPORT:SANDBOXPORT[/tcp|udp]: the host port, on every host address or HOSTIP (not loopback), reaches the sandbox\'s port from outside (repeatable)',
    collect,
  );
}

/** The create body's `publish` field for the flags given, or nothing. */
export function publishFromFlags(o: PublishFlags): { publish?: PortMapping[] } {
  return o.publish?.length ? { publish: o.publish.map((s) => parsePublish(s)) } : {};
}

/** What `ls` shows: "8080->80/tcp,203.0.113.1:53->53/udp", or "" without. */
export const publishColumn = (list: PortMapping[] | undefined): string => (list ?? []).map(formatPortMapping).join(',');
