// Package api is the frontend's gRPC services: quilt.QuiltRuntime, the
// agent's three RPCs, and quilt.QuiltAdmin, container addresses for the
// runtime and views of the node for operators, with its batch streams
// (ApplyRoutes, SyncRoutes).
//
// Every request is validated completely (ParseDestination,
// ParseInterface) before anything is recorded or reaches the helper. The
// agent's service answers every domain failure with success=false and a
// one-line error naming the value and the rule; the admin service answers
// with gRPC status codes. Route changes go to the node's reconciler
// (package reconcile), addresses to its allocator (package ipam).
//
// It needs no privileges. Knobs: the batch limits MaxChangesPerMessage
// and MaxChangesPerStream. Logs go to the Node's *slog.Logger: at INFO
// what changes something or fails, at DEBUG the calls that find
// everything as asked, counted in one INFO summary every interval
// (SummaryLoop, DefaultSummaryInterval).
package api
