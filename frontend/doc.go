// Package frontend is the unprivileged half of quilt-runtime: the gRPC
// server the Quilt Mesh agent calls (proto package quilt, service
// QuiltRuntime), the operators' QuiltAdmin service, request validation, the
// desired routes and their reconciliation with the kernel, and the client of
// the privileged route helper.
//
// It needs no privileges and refuses to run with any (CheckPrivileges).
// Every request is validated completely (ParseDestination, ParseInterface)
// before anything is recorded or reaches the helper; every domain failure of
// the agent's service is answered with success=false and a one-line error
// naming the value and the rule.
//
// State: the node subnet and container addresses (package ipam) and the
// desired routes (Desired) are kept in package state's file and written
// before any change is acknowledged. Resync compares the desired routes with
// the helper's list of ours and repairs the difference.
//
// Observability: Metrics, a Prometheus registry of its own (client_golang;
// no global state) served on the metrics address; channelz
// (google.golang.org/grpc/admin) and reflection on every gRPC listener.
//
// Knobs: Config (listen addresses and the Unix sockets' group, TLS, the
// helper socket and its request timeout, the route policy, the state dir,
// IPAM offsets, the resync interval, the metrics address, the connection
// limit). gRPC limits:
// MaxRecvMsgSize, MaxConcurrentStreams, keepalive pings no more often than
// every 10s; the batch RPCs MaxChangesPerMessage and MaxChangesPerStream.
// Logs go to the injected *slog.Logger: at INFO what changes something or
// fails, at DEBUG the calls that find everything as asked, counted in one
// INFO summary every Config.SummaryInterval (DefaultSummaryInterval).
//
// systemd (systemd.go): sockets passed with LISTEN_FDS and named "grpc" in
// LISTEN_FDNAMES stand in for the --grpc-addr they are bound to; with
// NOTIFY_SOCKET it sends READY=1 once the listeners are open and the first
// resync has finished, STATUS= lines, and STOPPING=1; with WATCHDOG_USEC
// the resync loop sends WATCHDOG=1 every half period between resyncs.
package frontend
