// Package frontend is the unprivileged half of quilt-runtime: the gRPC
// server the Quilt Mesh agent calls (proto package quilt, service
// QuiltRuntime), request validation, the node's subnet, and the client of
// the privileged route helper.
//
// It needs no privileges and refuses to run with any (CheckPrivileges).
// Every request is validated completely (ParseDestination, ParseInterface)
// before anything reaches the helper; every domain failure is answered with
// success=false and a one-line error naming the value and the rule.
//
// Knobs: Config (listen addresses, TLS, the helper socket and its request
// timeout, the route policy). gRPC limits: 16 KiB messages, 64 concurrent
// streams per connection, keepalive pings no more often than every 10s.
// Logs go to the injected *slog.Logger.
package frontend
