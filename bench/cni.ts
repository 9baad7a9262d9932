// The CNI reference plugins (Debian package containernetworking-plugins), driven the way a
// runtime (containerd, podman) drives a chained network: CNI_COMMAND, CNI_NETNS, ...
// environment, the network config on stdin, each plugin's result passed to the next as
// prevResult, DEL in reverse order.
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';

export const CNI_BIN = '/usr/lib/cni';

export function cniAvailable(plugins: string[]): boolean {
  return plugins.every((p) => fs.existsSync(path.join(CNI_BIN, p)));
}

export class CniChain {
  private readonly results = new Map<string, unknown>();

  constructor(private readonly name: string, private readonly plugins: Record<string, unknown>[]) {}

  private invoke(cmd: 'ADD' | 'DEL', id: string, netns: string, plugin: Record<string, unknown>, prev?: unknown): unknown {
    const conf = { cniVersion: '1.0.0', name: this.name, ...plugin, ...(prev ? { prevResult: prev } : {}) };
    const r = spawnSync(path.join(CNI_BIN, plugin.type as string), {
      input: JSON.stringify(conf),
      env: { ...process.env, CNI_COMMAND: cmd, CNI_CONTAINERID: id, CNI_NETNS: netns, CNI_IFNAME: 'eth0', CNI_PATH: CNI_BIN },
      encoding: 'utf8',
    });
    if (r.status !== 0) throw new Error(`${plugin.type} ${cmd}: ${r.stdout || r.stderr}`);
    return r.stdout ? JSON.parse(r.stdout) : undefined;
  }

  add(id: string, netns: string): void {
    let prev: unknown;
    for (const p of this.plugins) prev = this.invoke('ADD', id, netns, p, prev);
    this.results.set(id, prev);
  }

  del(id: string, netns: string): void {
    for (const p of [...this.plugins].reverse()) this.invoke('DEL', id, netns, p, this.results.get(id));
    this.results.delete(id);
  }
}
