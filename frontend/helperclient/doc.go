// Package helperclient is the frontend's side of the privileged route
// helper (quilt-route-helper): the connection that speaks shared/wire to
// it (Client), the watch through which it reports what changes in the
// kernel (WatchLoop), and the Monitor that keeps the helper's health,
// from a hello every few seconds and from every request that finds it
// unavailable.
//
// RouteHelper is what the rest of the frontend asks of the helper; the
// Client is the product's, a test or the benchmark's one-process baseline
// may give another.
//
// It needs no privileges: only membership in the group of the helper's
// socket. Knobs: Client.Path and Client.Timeout (--helper-socket,
// --helper-timeout), the Monitor's poll interval. Log lines: the helper
// connected, unavailable, and its watch ending (DEBUG).
package helperclient
