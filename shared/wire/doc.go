// Package wire is the fixed-size binary protocol spoken over the route
// helper's Unix SOCK_SEQPACKET socket.
//
// Every message, in both directions, is one to MaxBatch whole Records of
// Size bytes; there is no variable-length field to parse. Requests carry
// an Op, a tag the response echoes, an IPv4 prefix and a NUL-padded
// interface name. Responses carry a Status (zero on success), a Result
// saying what changed, and, for kernel failures, the errno.
//
// Conversations: a hello is answered by one record; a batch of adds and
// deletes by one message of as many replies, in order; a list by messages
// of route records, the last ending with a done record; a watch by event
// records, for as long as the connection stays open.
//
// The package is imported by the privileged helper, so it stays small and
// depends only on the standard library. It needs no privileges.
package wire
