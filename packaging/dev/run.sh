#!/usr/bin/env bash
# make run: the privilege-separated pair, for real, on this machine.
#
#  SANDBOX=1 (default): the helper runs inside a throwaway network namespace
#  that has a vxlan100 interface, so trying quilt never touches the host's
#  routes. The frontend serves on the host's 127.0.0.1:50051.
#  SANDBOX=0: the helper manages the host's own main routing table (it still
#  only touches 10.42.0.0/16 /24 routes via vxlan100, and only its own).
#
# Both run as they do in production: the helper with CAP_NET_ADMIN alone, the
# frontend as an unprivileged uid with no capabilities. Ctrl-C stops both and
# removes everything this script made; routes in the sandbox go with it.
# STATE_DIR=/some/dir keeps the frontend's state across runs (made 0700,
# owned by FRONTEND_UID).
set -euo pipefail
[ "$(id -u)" -eq 0 ] || { echo "make run needs root: it creates a network namespace and starts processes under other uids" >&2; exit 1; }
here=$(cd "$(dirname "$0")/../.." && pwd)
SANDBOX=${SANDBOX:-1}
HELPER_UID=${HELPER_UID:-65534}     # nobody
FRONTEND_UID=${FRONTEND_UID:-65533} # a uid of its own
SOCKET_GID=${SOCKET_GID:-65534}     # the helper socket's group: the frontend joins it
ADDR=${ADDR:-127.0.0.1:50051}
METRICS_ADDR=${METRICS_ADDR:-127.0.0.1:9542}

ns=quilt-run-$$
dir=$(mktemp -d /tmp/quilt-run.XXXXXX)
pids=()
cleanup() {
  trap - EXIT INT TERM
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ "$SANDBOX" = 1 ] && ip netns del "$ns" 2>/dev/null || true
  rm -rf "$dir"
  if [ "$SANDBOX" = 1 ]; then echo "stopped; removed $dir and namespace $ns"; else echo "stopped; removed $dir"; fi
}
trap cleanup EXIT INT TERM

# Binaries are copied where the unprivileged uids can read them.
chmod 755 "$dir"
install -m 755 "$here"/bin/quilt-route-helper "$here"/bin/quilt-runtime "$dir"/
install -d -o "$HELPER_UID" -g "$SOCKET_GID" -m 750 "$dir/run"
# The frontend's own Unix socket, for quilt-ipam (root may connect).
install -d -o "$FRONTEND_UID" -g "$FRONTEND_UID" -m 755 "$dir/api"
# The frontend's durable state: kept across runs only if STATE_DIR is given.
STATE_DIR=${STATE_DIR:-$dir/state}
install -d -o "$FRONTEND_UID" -g "$FRONTEND_UID" -m 700 "$STATE_DIR"

netns=()
if [ "$SANDBOX" = 1 ]; then
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  ip -n "$ns" link add vxlan100 type vxlan id 100 dstport 4789
  ip -n "$ns" link set vxlan100 up
  netns=(ip netns exec "$ns")
  where="namespace $ns"
else
  echo "WARNING: SANDBOX=0: the helper manages this host's main routing table." >&2
  ip link show vxlan100 >/dev/null 2>&1 || echo "note: the host has no vxlan100; InjectRoute will answer 'no such interface'" >&2
  where="the host"
fi

"${netns[@]}" setpriv --reuid="$HELPER_UID" --regid="$SOCKET_GID" --clear-groups \
  --inh-caps=-all,+net_admin --ambient-caps=-all,+net_admin --bounding-set=-all,+net_admin --no-new-privs -- \
  "$dir"/quilt-route-helper --socket "$dir/run/route-helper.sock" --allow-uid "$FRONTEND_UID" &
pids+=($!)
for _ in $(seq 100); do [ -S "$dir/run/route-helper.sock" ] && break; sleep 0.05; done

setpriv --reuid="$FRONTEND_UID" --regid="$FRONTEND_UID" --groups="$SOCKET_GID" \
  --inh-caps=-all --bounding-set=-all --no-new-privs -- \
  "$dir"/quilt-runtime --grpc-addr "$ADDR" --grpc-addr "unix://$dir/api/runtime.sock" --metrics-addr "$METRICS_ADDR" \
  --helper-socket "$dir/run/route-helper.sock" --state-dir "$STATE_DIR" &
pids+=($!)
sleep 0.5

ipn=(ip); [ "$SANDBOX" = 1 ] && ipn=(ip -n "$ns")
cat <<TXT

quilt-runtime is serving on $ADDR and unix://$dir/api/runtime.sock,
metrics on http://$METRICS_ADDR/metrics; its route helper manages $where.

Call it as the Quilt Mesh agent does:
  bin/quiltctl --addr $ADDR configure-subnet 10.42.1.0/24
  bin/quiltctl --addr $ADDR inject-route --via vxlan100 10.42.2.0/24
  bin/quiltctl --addr $ADDR remove-route 10.42.2.0/24
  grpcurl -plaintext -d '{"destination":"10.42.2.0/24","via_interface":"vxlan100"}' $ADDR quilt.QuiltRuntime/InjectRoute
Give a container an address, and look at the node:
  bin/quiltctl --addr $ADDR allocate web-1
  bin/quiltctl --addr $ADDR status
  bin/quiltctl --addr $ADDR routes
Ask for an address as a CNI runtime's bridge plugin does, through quilt-ipam:
  echo '{"cniVersion":"1.1.0","name":"quilt","ipam":{"type":"quilt-ipam","socket":"$dir/api/runtime.sock"}}' |
    sudo CNI_COMMAND=ADD CNI_CONTAINERID=c1 CNI_IFNAME=eth0 CNI_NETNS=/run/netns/c1 CNI_PATH=bin bin/quilt-ipam
Inspect gRPC channels and servers (channelz), and load-test (make grpc-tools builds both in bin/tools):
  grpcurl -plaintext $ADDR grpc.channelz.v1.Channelz/GetServers
  ghz --insecure --call quilt.QuiltAdmin/GetStatus -n 2000 -c 8 $ADDR
See the routes (ours carry proto 81, "quilt" with packaging/rt_protos.d installed):
  ${ipn[*]} route show proto 81

Ctrl-C stops both processes and removes the sandbox.
TXT
wait -n "${pids[@]}" || true
echo "a process exited; stopping" >&2
