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
// Large calls stream through: a batch's changes are validated as its
// messages arrive and the protos dropped, and the answers of many routes
// (ApplyRoutes, SyncRoutes, ListRoutes) are built in their wire form, one
// element at a time (repeated), rather than as that many messages.
//
// It needs no privileges. Knobs: the batch limits MaxChangesPerMessage
// and MaxChangesPerStream. Logs go to the Node's *slog.Logger: at INFO
// what changes something or fails, at DEBUG the calls that find
// everything as asked, counted in one INFO summary every interval
// (SummaryLoop, DefaultSummaryInterval).
package api
