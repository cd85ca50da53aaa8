// Package policy holds the route rules both processes enforce: which
// destination prefixes and which interfaces the cluster may route. The
// frontend applies them to every request before it reaches the helper; the
// helper applies them again, trusting nothing the frontend sends.
//
// Errors wrap a wire.Status, so the helper can answer with the code alone
// while the frontend shows the whole message. No privileges are needed.
package policy
