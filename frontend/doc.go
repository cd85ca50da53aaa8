// Package frontend is quilt-runtime's wiring: the unprivileged gRPC server
// the Quilt Mesh agent calls (Config, Run). It parses and opens the
// listeners (TCP, Unix, vsock, or the sockets systemd passed), sets up TLS
// and mTLS, refuses to run with privileges (CheckPrivileges), opens the
// node (package api: its services, its reconciler, its route helper's
// monitor), starts the loops (the resync, the helper's watch and hello
// poll, the call summary), and serves metrics and systemd's notifications.
//
// The packages below it, each importing only those further down:
//
//	api           the gRPC services QuiltRuntime and QuiltAdmin: validation, messages, the call log
//	reconcile     the desired routes, the one Apply every route change goes through, resyncs, adoption, the removal guard
//	helperclient  the route helper's connection, its watch, and the monitor of its health
//	ipam, state   container addresses; the state file
//	route         the one route type every layer passes
//
// Observability: Metrics, a Prometheus registry of its own (client_golang;
// no global state) served on the metrics address; channelz
// (google.golang.org/grpc/admin) and reflection on every gRPC listener.
//
// Knobs: Config (listen addresses and the Unix sockets' group, TLS, the
// helper socket and its request timeout, the route policy, the state dir,
// IPAM offsets, the resync interval, the metrics address, the connection
// limit). gRPC limits: MaxRecvMsgSize, MaxConcurrentStreams, keepalive
// pings no more often than every 10s.
//
// systemd (systemd.go): sockets passed with LISTEN_FDS and named "grpc" in
// LISTEN_FDNAMES stand in for the --grpc-addr they are bound to; with
// NOTIFY_SOCKET it sends READY=1 once the listeners are open and the first
// resync has finished, STATUS= lines, and STOPPING=1; with WATCHDOG_USEC
// the resync loop sends WATCHDOG=1 every half period between resyncs.
package frontend
