// Package helper is the privileged half of quilt-runtime: a small server
// that adds, deletes and lists the cluster's overlay routes on behalf of the
// unprivileged frontend, and does nothing else.
//
// It needs CAP_NET_ADMIN as its only capability, and refuses to start with
// any more, as root, or without no_new_privs (CheckPrivileges); it never
// changes its own privileges. It listens on a Unix SOCK_SEQPACKET socket
// (Listen, or one handed over by systemd), admits only peers whose
// SO_PEERCRED uid is on its allow list, speaks only the fixed-size records
// of shared/wire, up to 256 to a message, and re-checks every request
// against its own policy.Policy before it sends a single rtnetlink message
// (Routes: a batch's lookups in one sendmsg, then its changes in another).
// Routes it creates carry wire.RouteProtocol in the main table; it never
// changes or deletes a route without it.
//
// Knobs are the flags of cmd/quilt-route-helper; logs go to the injected
// *slog.Logger, one line per connection refusal and per mutation.
package helper
