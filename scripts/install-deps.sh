#!/usr/bin/env bash
# Installs what toastnet needs on Debian/Ubuntu (system packages, npm dependencies) and builds it.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
if [ "$(id -u)" -ne 0 ]; then echo "install-deps: run as root" >&2; exit 1; fi
apt-get update
# nftables/libnftables1: the firewall, driven in-process; iproute2: `ip netns exec` for exec/run;
# util-linux: nsenter/unshare; curl, dnsutils, iperf3, ping: what the tests, bench and demo send packets with;
# openssl: the testbed's CA and per-name certificates (test/testbed/testbed.ts tlsCerts).
apt-get install -y --no-install-recommends nftables libnftables1 iproute2 util-linux procps iputils-ping curl dnsutils iperf3 ca-certificates openssl
# Peers the benchmark compares against (npm run bench): CNI reference plugins (firewall needs iptables);
# bench:dns's load tool dnsperf and its peer resolver dnsmasq (dnsmasq-base: the binary without the
# system service, which would listen on the host's port 53; the bench runs it in a test namespace).
apt-get install -y --no-install-recommends containernetworking-plugins iptables dnsperf dnsmasq-base
# The CNI plugin's shim is C (npm run build compiles dist/bin/toastnet-cni): a compiler and libc headers.
# Real CNI clients in the integration tests: containerd's `ctr run --cni` with runc, and podman's CNI backend, on an image
# built offline from busybox-static.
apt-get install -y --no-install-recommends gcc libc6-dev containerd runc busybox-static podman
# TAP sandboxes' tests and bench boot a real microVM: QEMU (-M microvm, TCG), a busybox-static
# initramfs (cpio), python3 (a stand-in VMM holding a TAP in the fast tests), and Debian's cloud kernel, which test/helpers/microvm.ts fetches with
# `apt-get download` and unpacks with dpkg -x into a cache dir (never installed).
apt-get install -y --no-install-recommends qemu-system-x86 busybox-static cpio xz-utils python3
# Node.js: keep an existing one (>= 20); otherwise take the distribution's (Debian 13 ships 20).
command -v node >/dev/null || apt-get install -y --no-install-recommends nodejs npm
if ! node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)'; then
  echo "install-deps: toastnet needs Node.js >= 20 (found $(node -v))" >&2
  exit 1
fi
npm ci --no-audit --no-fund
npm run build
