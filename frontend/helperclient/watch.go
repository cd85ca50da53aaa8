package helperclient

import (
	"context"
	"log/slog"
	"net/netip"
	"time"
)

// WatchLoop keeps a watch open on the helper until ctx ends, reconnecting
// with backoff, and passes every report on: a resync event (the first of
// every watch, and whenever the helper lost track of the kernel), and the
// prefixes whose routes changed other than by our own requests. ended is
// called each time a watch ends.
func WatchLoop(ctx context.Context, h RouteHelper, log *slog.Logger, report func(resync bool, changed []netip.Prefix), ended func()) {
	backoff := minBackoff
	for ctx.Err() == nil {
		started := time.Now()
		err := h.Watch(ctx, report)
		ended()
		if ctx.Err() != nil {
			return
		}
		if time.Since(started) > maxBackoff {
			backoff = minBackoff // it ran a while: a new failure, not the same one
		}
		log.Debug("route helper watch ended", "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxBackoff)
	}
}
