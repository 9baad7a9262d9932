// `up --persist`: what brings the setup back after a reboot (the note's iptables-save and
// sysctl.conf): a systemd unit running the daemon (which runs `up` and reconciles), a
// sysctl drop-in for forwarding, and the config the unit starts with: what the operator
// configured, not the resolved config (defaults such as the host's DNS servers are
// resolved again at each start, and the file passes the strict schema it is read with).
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Config } from '../config/schema.js';
import { DAEMON_NODE_FLAGS } from '../daemon/node-flags.js';

export function persistPaths(c: Config, root: string) {
  return {
    unit: path.join(root, 'etc/systemd/system', `toastnet-${c.instance}.service`),
    sysctl: path.join(root, 'etc/sysctl.d', `90-toastnet-${c.instance}.conf`),
    config: path.join(root, 'etc/toastnet', `${c.instance}.json`),
  };
}

function mainScript(): string {
  return path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../cli/main.js');
}

export function unitText(c: Config, configFile: string): string {
  return `# written by toastnet up --persist
[Unit]
Description=toastnet sandbox networking (instance ${c.instance})
After=network-online.target
Wants=network-online.target

[Service]
# Started means serving: the daemon sends READY=1 once its API answers (sd-notify.ts).
Type=notify
NotifyAccess=main
ExecStart=${process.execPath} ${DAEMON_NODE_FLAGS.join(' ')} ${mainScript()} daemon --config ${configFile}
# The daemon is the sandboxes' resolver: bring it back whatever ended it.
Restart=always
RestartSec=1
TimeoutStartSec=60
# /run/netns and /etc/netns must stay the host's: no directive that gives the unit its own
# mount namespace (PrivateMounts, PrivateTmp, ProtectSystem, ProtectHome, ReadOnlyPaths...),
# or namespaces it makes would be invisible to everyone else. What is left:
PrivateMounts=no
NoNewPrivileges=yes
LockPersonality=yes
RestrictRealtime=yes
SystemCallArchitectures=native

[Install]
WantedBy=multi-user.target
`;
}

export function persistFiles(c: Config, root: string): void {
  const p = persistPaths(c, root);
  for (const f of Object.values(p)) fs.mkdirSync(path.dirname(f), { recursive: true });
  // The instance is always named: the unit must start this one whatever its default.
  fs.writeFileSync(p.config, JSON.stringify({ ...(c.given ?? {}), instance: c.instance }, null, 2) + '\n');
  fs.writeFileSync(p.unit, unitText(c, path.join('/', path.relative(root, p.config))));
  fs.writeFileSync(p.sysctl, '# written by toastnet up --persist\nnet.ipv4.ip_forward = 1\n');
  if (path.resolve(root) === '/' && hasSystemd()) {
    execFileSync('systemctl', ['daemon-reload'], { stdio: 'ignore' });
    execFileSync('systemctl', ['enable', `toastnet-${c.instance}.service`], { stdio: 'ignore' });
  }
}

export function removePersisted(c: Config, root: string): void {
  const p = persistPaths(c, root);
  if (!fs.existsSync(p.unit) && !fs.existsSync(p.sysctl)) return;
  if (path.resolve(root) === '/' && hasSystemd()) {
    try {
      execFileSync('systemctl', ['disable', `toastnet-${c.instance}.service`], { stdio: 'ignore' });
    } catch {
      // not enabled
    }
  }
  for (const f of Object.values(p)) fs.rmSync(f, { force: true });
}

function hasSystemd(): boolean {
  return fs.existsSync('/run/systemd/system');
}
