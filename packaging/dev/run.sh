#!/usr/bin/env bash
# make run: the privilege-separated pair, for real, on this machine.
#
#  SANDBOX=1 (default): the helper runs inside a throwaway network namespace
#  that has a vxlan100 interface, so trying quilt never touches the host's
#  routes. The frontend serves on the host's 127.0.0.1:50051 (ADDR=).
#  SANDBOX=0: the helper manages the host's own main routing table (it still
#  only touches 10.42.0.0/16 /24 routes via vxlan100, and only its own).
#
# Both run as they do in production: the helper with CAP_NET_ADMIN alone, the
# frontend as an unprivileged uid with no capabilities. Whatever stops this
# script removes both processes, the namespace and the temporary directory:
# Ctrl-C, SIGTERM or SIGHUP to it or to make, timeout(1), the terminal
# closing, or make (or whatever started it) going away. A run killed with
# SIGKILL leaves the namespace and directory behind (its processes still
# die: they get SIGTERM when this script dies); the next run sweeps them.
# STATE_DIR=/some/dir keeps the frontend's state across runs (made 0700,
# owned by FRONTEND_UID).
set -euo pipefail
[ "$(id -u)" -eq 0 ] || { echo "make run needs root: it creates a network namespace and starts processes under other uids" >&2; exit 1; }
# SIGTERM when the parent dies (make killed with a signal it does not pass
# on, a closed terminal's shell): no run outlives what started it.
if [ -z "${QUILT_RUN_PDEATHSIG:-}" ]; then
  export QUILT_RUN_PDEATHSIG=1
  exec setpriv --pdeathsig TERM -- bash "$0" "$@"
fi
here=$(cd "$(dirname "$0")/../.." && pwd)
SANDBOX=${SANDBOX:-1}
HELPER_UID=${HELPER_UID:-65534}     # nobody
FRONTEND_UID=${FRONTEND_UID:-65533} # a uid of its own
SOCKET_GID=${SOCKET_GID:-65534}     # the helper socket's group: the frontend joins it
ADDR=${ADDR:-127.0.0.1:50051}
METRICS_ADDR=${METRICS_ADDR:-127.0.0.1:9542}

# What a run makes is named after its pid: namespace quilt-run-PID,
# directory /tmp/quilt-run-PID.XXXXXX. Sweep what runs whose pid is gone
# left: their processes (running from that directory, or inside that
# namespace), the namespace and the directory.
sweep() {
  local ns d pid p exe
  for ns in $(ip netns list 2>/dev/null | awk '$1 ~ /^quilt-run-[0-9]+$/ {print $1}'); do
    pid=${ns#quilt-run-}
    [ "$pid" != $$ ] && ! kill -0 "$pid" 2>/dev/null || continue
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$p" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null && echo "swept namespace $ns, left by a run that was killed"
  done
  for d in /tmp/quilt-run-[0-9]*.*; do
    [ -d "$d" ] || continue
    pid=${d#/tmp/quilt-run-}; pid=${pid%%.*}
    [ "$pid" != $$ ] && ! kill -0 "$pid" 2>/dev/null || continue
    for p in /proc/[0-9]*; do
      exe=$(readlink "$p/exe" 2>/dev/null) || continue
      case $exe in "$d"/*) kill -KILL "${p#/proc/}" 2>/dev/null || true ;; esac
    done
    rm -rf "$d" && echo "swept $d, left by a run that was killed"
  done
}
sweep

ns=quilt-run-$$
dir=$(mktemp -d "/tmp/quilt-run-$$.XXXXXX")
pids=()
cleanup() {
  # Nothing interrupts the cleanup: a second signal, or a closed terminal
  # or pipe failing the last echo, must not leave anything behind.
  trap '' INT TERM HUP PIPE
  set +e
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  [ "$SANDBOX" = 1 ] && ip netns del "$ns" 2>/dev/null
  rm -rf "$dir"
  if [ "$SANDBOX" = 1 ]; then echo "stopped; removed $dir and namespace $ns"; else echo "stopped; removed $dir"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP
echo "make run: pid $$, namespace $ns, files in $dir"

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

# --pdeathsig: each gets SIGTERM if this script dies, even by SIGKILL.
"${netns[@]}" setpriv --reuid="$HELPER_UID" --regid="$SOCKET_GID" --clear-groups \
  --inh-caps=-all,+net_admin --ambient-caps=-all,+net_admin --bounding-set=-all,+net_admin --no-new-privs --pdeathsig TERM -- \
  "$dir"/quilt-route-helper --socket "$dir/run/route-helper.sock" --allow-uid "$FRONTEND_UID" &
pids+=($!)
for _ in $(seq 100); do [ -S "$dir/run/route-helper.sock" ] && break; sleep 0.05; done

setpriv --reuid="$FRONTEND_UID" --regid="$FRONTEND_UID" --groups="$SOCKET_GID" \
  --inh-caps=-all --bounding-set=-all --no-new-privs --pdeathsig TERM -- \
  "$dir"/quilt-runtime --grpc-addr "$ADDR" --grpc-addr "unix://$dir/api/runtime.sock" --metrics-addr "$METRICS_ADDR" \
  --helper-socket "$dir/run/route-helper.sock" --state-dir "$STATE_DIR" &
pids+=($!)
# Serving once the address accepts a connection.
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/${ADDR%:*}/${ADDR##*:}") 2>/dev/null && break
  kill -0 "${pids[1]}" 2>/dev/null || break
  sleep 0.05
done

ipn=(ip); [ "$SANDBOX" = 1 ] && ipn=(ip -n "$ns")
cat <<TXT

quilt-runtime is serving on $ADDR and unix://$dir/api/runtime.sock,
metrics on http://$METRICS_ADDR/metrics; its route helper manages $where.

Call it as the Quilt Mesh agent does:
  bin/quiltctl --addr $ADDR configure-subnet 10.42.1.0/24
  bin/quiltctl --addr $ADDR inject-route 10.42.2.0/24 vxlan100
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

Ctrl-C (or anything else that stops this) stops both processes and removes the sandbox.
TXT
# Wait until a process exits or a signal comes (trapped above). GNU make
# passes on only SIGTERM to its recipe; on SIGHUP or SIGINT it waits for
# its children, expecting a terminal to have signalled the whole process
# group. While it waits, that signal is blocked in make's handler: seen in
# /proc/PPID/status, it is this run's cue to stop.
make_signalled() {
  local blk
  [ "$(cat /proc/$PPID/comm 2>/dev/null)" = make ] || return 1
  blk=$(awk '/^SigBlk:/ {print $2}' "/proc/$PPID/status" 2>/dev/null) || return 1
  (( (16#$blk & 0x3) != 0 )) # SIGHUP (bit 0) or SIGINT (bit 1)
}
while kill -0 "${pids[0]}" 2>/dev/null && kill -0 "${pids[1]}" 2>/dev/null; do
  if make_signalled; then
    echo "make was signalled; stopping" >&2
    exit 129
  fi
  sleep 0.2 & wait $! # wait, unlike sleep, lets a trapped signal in at once
done
echo "a process exited; stopping" >&2
