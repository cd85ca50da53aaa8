// Package helper is the privileged half of quilt-runtime: a small server
// that adds, deletes and lists the cluster's overlay routes on behalf of the
// unprivileged frontend, tells it at once when they change, and does
// nothing else.
//
// Privileges: CAP_NET_ADMIN as its only capability; it refuses to start
// with any more, as root, with supplementary groups, or without
// no_new_privs (CheckPrivileges), and it never changes its own privileges.
//
// Trust: it listens on a Unix SOCK_SEQPACKET socket (Listen, or one handed
// over by systemd), admits only peers whose SO_PEERCRED uid is on its
// allow list, speaks only the fixed-size records of shared/wire, and
// re-checks every request against its own policy.Policy.
//
// Ownership: a route is quilt's if and only if it carries
// wire.RouteProtocol (route.ours). Every decision is made on the routes
// table main holds at exactly the requested prefix (table.plan), from a
// view of the table that dumps build and rtnetlink notifications keep
// current (Routes). Every request it sends names our protocol (deletes),
// or can only add (NLM_F_EXCL or NLM_F_APPEND, never NLM_F_REPLACE), so
// the kernel cannot match a route that is not quilt's even when the view
// is out of date.
//
// Knobs are the flags of cmd/quilt-route-helper; logs go to the injected
// *slog.Logger: one line per connection refused, per change made and per
// request refused; nothing for a request that changed nothing.
package helper
