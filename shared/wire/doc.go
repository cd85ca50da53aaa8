// Package wire is the fixed-size binary protocol spoken over the route
// helper's Unix SOCK_SEQPACKET socket.
//
// Every message, in both directions, is exactly one Record of Size bytes;
// there is no variable-length field to parse. Requests carry an Op, a tag
// the response echoes, an IPv4 prefix and a NUL-padded interface name.
// Responses carry a Status (zero on success), a Result saying what changed,
// and, for kernel failures, the errno.
//
// The package is imported by the privileged helper, so it stays small and
// depends only on the standard library. It needs no privileges.
package wire
