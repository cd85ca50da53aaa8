package api

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/quiltmesh/quilt-runtime/frontend/reconcile"
)

// DefaultSummaryInterval is how often, at most, the frontend logs its
// summary of the route calls it answered.
const DefaultSummaryInterval = time.Minute

// logBound is the most bytes of a client-supplied value a log line shows
// (quote.Bound).
const logBound = 64

// effect is what a route call did, for its log line.
type effect struct {
	changed bool   // the state file or the kernel
	msg     string // as an operator reads it: "Added route: 10.42.2.0/24 dev vxlan100"
	attrs   []any
}

// logCall logs a call of the agent's once its outcome is known. A call
// that changed something or failed is logged at INFO: the request as the
// agent made it, then what changed, or a WARN line saying why it failed.
// A call that found everything as asked (the agent's idempotent
// re-injects, every few seconds for every peer) is logged at DEBUG only,
// and counted for the periodic summary. It returns the reply's error
// message.
func (n *Node) logCall(ctx context.Context, rpc, request string, args []any, e effect, err error) string {
	level := slog.LevelDebug
	if e.changed || err != nil {
		level = slog.LevelInfo
	}
	n.Log.Log(ctx, level, request, append([]any{"rpc", rpc}, args...)...)
	n.calls.count(e.changed, err != nil)
	if err != nil {
		n.Log.Warn(rpc+" failed", "rpc", rpc, "err", err)
		return err.Error()
	}
	n.Log.Log(ctx, level, e.msg, e.attrs...)
	return ""
}

// RepairChanged has the reconciler repair the routes the helper's watch
// reported changed. Only a repair that changed something or found
// something wrong counts for the summary, as a call that did so; one that
// found its routes in line is no call of the agent's that found
// everything as asked, so it is not counted at all.
func (n *Node) RepairChanged(ctx context.Context, changed []netip.Prefix) reconcile.ResyncResult {
	r := n.Routes.RepairChanged(ctx, changed)
	if r.Repairs() > 0 || r.Failures() > 0 {
		n.calls.count(r.Repairs() > 0, r.Failures() > 0)
	}
	return r
}

// callCounts are the route calls answered since the last summary.
type callCounts struct {
	mu      sync.Mutex
	since   time.Time
	calls   int
	changed int
	failed  int
}

// count counts one call: failed (wholly or in part), else changed
// something, else found everything as asked.
func (c *callCounts) count(changed, failed bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls++
	switch {
	case failed:
		c.failed++
	case changed:
		c.changed++
	}
}

// take returns the counts and starts counting afresh.
func (c *callCounts) take(now time.Time) (since time.Time, calls, changed, failed int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	since, calls, changed, failed = c.since, c.calls, c.changed, c.failed
	c.since, c.calls, c.changed, c.failed = now, 0, 0, 0
	return since, calls, changed, failed
}

// SummaryLoop logs, every interval until ctx ends, one INFO line counting
// the route calls answered since the last one: how many, how many found
// everything as asked, how many changed something, how many failed. So
// the log shows the agent is alive while its no-op calls stay at DEBUG.
// An interval without calls logs nothing.
func (n *Node) SummaryLoop(ctx context.Context, interval time.Duration) {
	n.calls.take(time.Now())
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			n.summarize(now)
		}
	}
}

// summarize logs the summary line, if there was any call.
func (n *Node) summarize(now time.Time) {
	since, calls, changed, failed := n.calls.take(now)
	if calls == 0 {
		return
	}
	took := now.Sub(since).Round(time.Second)
	unchanged := calls - changed - failed
	n.Log.Info(fmt.Sprintf("route calls in the last %v: %d (%d found everything as asked, %d changed something, %d failed)", took, calls, unchanged, changed, failed),
		"calls", calls, "unchanged", unchanged, "changed", changed, "failed", failed, "period", took)
}
