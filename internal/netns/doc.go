// Package netns runs code inside a named network namespace (`ip netns`,
// /run/netns/NAME) for the project's tests, demo and benchmark: a socket
// opened there belongs to that namespace for good, whatever thread later
// uses it. Remove deletes such a namespace with whatever still runs in
// it, and SweepStale the ones a killed run left behind. It is never linked
// into the shipped binaries (internal/testutil's TestNotShipped).
//
// It needs CAP_SYS_ADMIN (setns), so root in practice. A thread that could
// not return to its own namespace stays locked to a goroutine that ends,
// so the Go runtime retires it instead of reusing it in the wrong
// namespace.
package netns
