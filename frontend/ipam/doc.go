// Package ipam allocates container addresses from this node's subnet.
//
// A Pool is the arithmetic: the node subnet, its gateway, and the range
// addresses are handed out from, given as host offsets so they can be set
// before the agent has said which subnet the node has (--gateway 1,
// --ip-range 10-254). The network address, the gateway, the broadcast
// address and everything below the range are never handed out.
//
// An Allocator keeps the live allocations, keyed by container ID and
// interface name (a Key), as CNI's ADD asks: the same key always gets the
// same address until it is released, and one container with two interfaces
// gets two. QuiltAdmin callers may leave the interface empty. Asking again
// is not an error: the answer is the address the key holds, marked
// existing, so a runtime that retries after a crash or a lost reply gets
// what it had. CNI's host-local plugin differs here: it refuses a second ADD
// for the same container ID and interface ("duplicate allocation is not
// allowed") until a DEL releases the first. Each allocation remembers the
// CNI network that made it, so CNI's GC (Collect) releases only that
// network's stale allocations. It writes every change through a Store before it answers, so
// an acknowledged allocation is durable. Addresses are handed out in turn
// after the last one given, so a released address is not reused at once
// (stale ARP and conntrack entries of the old container age out first).
//
// The package needs no privileges and has no knobs beyond NewPool's.
package ipam
