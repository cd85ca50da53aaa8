// Package bench measures what changing routes costs through quilt-runtime,
// and what the privilege separation adds, against two baselines. `make
// bench` runs it through bench/cmd/quilt-bench.
//
// Three systems, each in a network namespace of its own with a vxlan100
// device (VNI 100, no remote, so it never sends a packet):
//
//   - (a) the kernel floor: raw rtnetlink from this process. RTM_NEWROUTE
//     (NLM_F_CREATE|NLM_F_EXCL) and RTM_DELROUTE messages as the helper
//     sends them, pipelined (Config.KernelBatch messages in one sendmsg,
//     then every ack read back) and one ack per message;
//   - (b) one process: quilt-bench-single (package bench/single), the
//     frontend's gRPC services, state file and policy calling helper.Routes
//     directly, as root: what an operator would run instead;
//   - (c) the product as deployed: quilt-route-helper as nobody with
//     CAP_NET_ADMIN alone, quilt-runtime as an unprivileged uid with its own
//     state directory, talking over the helper's Unix socket.
//
// For each N the routes are the first N /24 peer subnets of 10.0.0.0/8
// after the node's own, 10.0.0.0/24, which ConfigureNodeSubnet gets and no
// workload touches (10.0.0.0/8 holds 65,535 peers). (b) and (c) are driven
// over gRPC from this process, dialled from inside their namespace, through
// the Workloads in order: a gRPC round trip that changes nothing
// (Health.Check, N times), InjectRoute one at a time, again (the idempotent
// re-inject the agent's resync causes), RemoveRoute; InjectRoute and
// RemoveRoute from Config.Clients concurrent clients; then QuiltAdmin's
// ApplyRoutes with every add, ApplyChunk changes per message. With every
// route in place, the drift repairs, on (c) only ((b) has no watch: it
// repairs on its periodic resync alone): Config.Deletions routes of ours
// deleted with RTM_DELROUTE, as `ip route del` does, one at a time, each
// timed until an rtnetlink notification shows it back; then vxlan100 set
// down and up (which flushes its routes without a notification), timed
// until every route is back. Then ApplyRoutes with every removal, and
// last InjectRoute one at a time again with Config.Veths extra veth
// interfaces in the namespace (their peers in a second namespace,
// qbench<pid>-<system><n>-veths). A server without ApplyRoutes shows
// "unimplemented". After each
// workload the namespace's routes of protocol 81 are counted, so a figure
// never stands for work that was not done. A workload that runs longer
// than Config.PhaseLimit stops starting new calls and is reported as
// partial. At the end each server process's VmHWM, uid, capabilities and
// GOMAXPROCS are read from /proc.
//
// The Report names the machine, and gives (c)'s ratios to (a) and (b),
// each system's p50 of the re-inject over Health.Check's and with the
// extra veths over without, and the figures the targets of issues 7 and
// 11 are checked against; nothing here asserts them.
//
// Privileges: root, to make namespaces, start processes under other uids
// with setpriv, and send rtnetlink messages inside the namespaces. Nothing
// is done in the caller's own network namespace. Namespaces are named
// qbench<pid>-<system><n>; Run removes them, with every process and file it
// made, before it returns, also when a workload fails or ctx is cancelled,
// and a later run removes what a killed run left. Debug knobs:
// Config.KeepDir keeps the process logs and state files; Config.Log gets a
// line per workload.
package bench
