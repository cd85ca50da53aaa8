package frontend

import (
	"fmt"
	"net/http"
	"runtime"
	"strings"
	"sync/atomic"
)

// SuggestedMetricsAddr is the --metrics-addr the packaged configuration,
// the flag's help and the README name. Metrics are off unless it is given.
const SuggestedMetricsAddr = "127.0.0.1:9542"

// resyncCounters are the running totals the metrics report.
type resyncCounters struct {
	runs, failed, added, moved, removed atomic.Uint64
}

func (c *resyncCounters) count(r ResyncResult) {
	c.runs.Add(1)
	if !r.OK() {
		c.failed.Add(1)
	}
	c.countRepairs(r)
}

// countRepairs adds r's repairs, from a resync or from the watch.
func (c *resyncCounters) countRepairs(r ResyncResult) {
	c.added.Add(uint64(r.Added))
	c.moved.Add(uint64(r.Moved))
	c.removed.Add(uint64(r.Removed))
}

// MetricsHandler serves the node's state in the Prometheus text format:
// gauges for the helper, allocations, routes and conflicts, and counters
// of resyncs and repairs. It is written by hand to keep a metrics library
// out of the dependency tree.
func (a *Admin) MetricsHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		up, _ := a.HelperHealth()
		capacity := 0
		if pool, ok := a.IPAM.Pool(); ok {
			capacity = pool.Capacity()
		}
		r := a.LastResync()
		last := 0.0
		if !r.Start.IsZero() {
			last = float64(r.Start.UnixNano()) / 1e9
		}
		c := &a.counters
		for _, m := range []struct {
			name, kind, help string
			value            any
		}{
			{"quilt_build_info{version=" + fmt.Sprintf("%q", a.Version) + "}", "gauge", "The running version.", 1},
			{"quilt_helper_up", "gauge", "1 if the route helper answered when last asked.", map[bool]int{true: 1}[up]},
			{"quilt_ip_allocations", "gauge", "Container addresses allocated.", a.IPAM.Count()},
			{"quilt_ip_capacity", "gauge", "Addresses in the allocation range (0 before ConfigureNodeSubnet).", capacity},
			{"quilt_routes_desired", "gauge", "Routes the agent asked for.", a.Routes.Len()},
			{"quilt_routes_installed", "gauge", "Routes of ours in the kernel at the last resync.", r.Installed},
			{"quilt_route_conflicts", "gauge", "Desired routes held by a route that is not quilt's (never forced).", a.Conflicts()},
			{"quilt_routes_adopted", "gauge", "Desired routes adopted from the kernel (the state file was new), not yet confirmed by the agent.", a.Routes.AdoptedLen()},
			{"quilt_resync_removals_held", "gauge", "Routes of ours the last resync did not remove though nobody asked for them: more than the removal limit.", r.Held},
			{"quilt_resyncs_total", "counter", "Resyncs run.", c.runs.Load()},
			{"quilt_resyncs_failed_total", "counter", "Resyncs that left something out of line.", c.failed.Load()},
			{`quilt_resync_repairs_total{kind="added"}`, "counter", "Routes repaired by resyncs, by kind.", c.added.Load()},
			{`quilt_resync_repairs_total{kind="moved"}`, "counter", "", c.moved.Load()},
			{`quilt_resync_repairs_total{kind="removed"}`, "counter", "", c.removed.Load()},
			{"quilt_resync_last_timestamp_seconds", "gauge", "Start of the last resync, Unix time.", last},
			{"quilt_resync_last_duration_seconds", "gauge", "Duration of the last resync.", r.Duration.Seconds()},
			{"quilt_goroutines", "gauge", "Goroutines of the frontend (a leak shows here).", runtime.NumGoroutine()},
		} {
			if m.help != "" {
				base := m.name
				if i := strings.IndexByte(base, '{'); i >= 0 {
					base = base[:i]
				}
				fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", base, m.help, base, m.kind)
			}
			fmt.Fprintf(w, "%s %v\n", m.name, m.value)
		}
	})
}
