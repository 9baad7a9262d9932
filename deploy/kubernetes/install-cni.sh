#!/bin/sh
# Puts toastnet on a Kubernetes node (the DaemonSet's init container runs it at each start):
# the CNI plugin into the node's plugin directory, a conflist naming it into the node's
# config directory, and the daemon's config file with the node's pod CIDR as the sandbox
# subnet. Every file is written to a temporary name and renamed, so the runtime never reads
# half a file. Idempotent: run again, it writes the same files.
#
# Environment (the DaemonSet sets these):
#   NODE_NAME          this node (downward API: spec.nodeName)
#   TOASTNET_SUBNET    the sandbox subnet; when empty, the node's spec.podCIDR from the API
#   TOASTNET_INSTANCE  toastnet instance name (default toastnet)
#   CNI_BIN_DIR        where the node's runtime looks for plugins (default /host/opt/cni/bin)
#   CNI_CONF_DIR       where it looks for network configs (default /host/etc/cni/net.d)
#   TOASTNET_ETC_DIR   where the daemon's config goes (default /host/etc/toastnet)
#   CNI_CONF_NAME      the conflist's file name (default 10-toastnet.conflist: the runtime takes
#                      the first file in lexical order)
#   TOASTNET_PLUGIN    the plugin executable to install (default: the one built in this image)
#   KUBERNETES_API     API server URL (default https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT)
#   SERVICEACCOUNT_DIR token and CA (default /var/run/secrets/kubernetes.io/serviceaccount)
set -eu

fail() { echo "install-cni: $*" >&2; exit 1; }

INSTANCE="${TOASTNET_INSTANCE:-toastnet}"
CNI_BIN_DIR="${CNI_BIN_DIR:-/host/opt/cni/bin}"
CNI_CONF_DIR="${CNI_CONF_DIR:-/host/etc/cni/net.d}"
TOASTNET_ETC_DIR="${TOASTNET_ETC_DIR:-/host/etc/toastnet}"
CNI_CONF_NAME="${CNI_CONF_NAME:-10-toastnet.conflist}"
HERE="$(cd "$(dirname "$0")" && pwd)"
TOASTNET_PLUGIN="${TOASTNET_PLUGIN:-$HERE/../../dist/bin/toastnet-cni}"
SA="${SERVICEACCOUNT_DIR:-/var/run/secrets/kubernetes.io/serviceaccount}"

[ -x "$TOASTNET_PLUGIN" ] || fail "no plugin executable at $TOASTNET_PLUGIN"
for d in "$CNI_BIN_DIR" "$CNI_CONF_DIR" "$TOASTNET_ETC_DIR"; do
  [ -d "$d" ] || fail "$d is not a directory (is the host path mounted?)"
done

SUBNET="${TOASTNET_SUBNET:-}"
if [ -z "$SUBNET" ]; then
  [ -n "${NODE_NAME:-}" ] || fail "NODE_NAME is not set and TOASTNET_SUBNET is empty: no way to know the node's pod CIDR"
  API="${KUBERNETES_API:-https://${KUBERNETES_SERVICE_HOST:?}:${KUBERNETES_SERVICE_PORT:?}}"
  NODE_JSON="$(curl -sS --fail --max-time 10 --cacert "$SA/ca.crt" \
    -H "Authorization: Bearer $(cat "$SA/token")" "$API/api/v1/nodes/$NODE_NAME")" \
    || fail "could not read node $NODE_NAME from $API"
  SUBNET="$(printf '%s' "$NODE_JSON" | node -e '
    let s = ""; process.stdin.on("data", (d) => (s += d)).on("end", () => {
      const cidrs = JSON.parse(s).spec?.podCIDRs ?? [JSON.parse(s).spec?.podCIDR];
      process.stdout.write(cidrs.find((c) => c && !c.includes(":")) ?? "");
    });')"
  [ -n "$SUBNET" ] || fail "node $NODE_NAME has no IPv4 pod CIDR (is the controller manager allocating node CIDRs? set TOASTNET_SUBNET)"
fi

# Writes stdin to $1 through a temporary file in the same directory, then renames it.
put() { tmp="$1.tmp.$$"; cat > "$tmp" && chmod "$2" "$tmp" && mv -f "$tmp" "$1"; }

put "$CNI_BIN_DIR/toastnet-cni" 0755 < "$TOASTNET_PLUGIN"

node -e '
  const [instance, subnet] = process.argv.slice(1);
  process.stdout.write(JSON.stringify({ instance, subnet }, null, 2) + "\n");
' "$INSTANCE" "$SUBNET" | put "$TOASTNET_ETC_DIR/$INSTANCE.json" 0644

# The conflist: toastnet first, then the reference portmap-free chain ends here (toastnet does
# its own port publishing from the runtime's portMappings capability).
node -e '
  const [instance, subnet] = process.argv.slice(1);
  const conf = {
    cniVersion: "1.0.0",
    name: "toastnet",
    plugins: [{
      type: "toastnet-cni",
      instance,
      subnet,
      capabilities: { portMappings: true, bandwidth: true, "io.kubernetes.cri.pod-annotations": true },
    }],
  };
  process.stdout.write(JSON.stringify(conf, null, 2) + "\n");
' "$INSTANCE" "$SUBNET" | put "$CNI_CONF_DIR/$CNI_CONF_NAME" 0644

echo "install-cni: node ${NODE_NAME:-?}: subnet $SUBNET, plugin in $CNI_BIN_DIR, $CNI_CONF_DIR/$CNI_CONF_NAME, $TOASTNET_ETC_DIR/$INSTANCE.json"
