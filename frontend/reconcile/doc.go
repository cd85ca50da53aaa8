// Package reconcile owns the desired routes, the routes the agent asked
// for, and brings the kernel in line with them through the route helper.
//
// Every route change goes through a Reconciler: the agent's (Apply: a
// single RPC is a batch of one, recorded as desired in the state file
// before the helper is asked, under the destination's lock), a resync's
// repairs (Resync, periodic and kicked: the desired routes against the
// helper's list of ours, compared by the one diff), and the repairs the
// helper's watch asks for (RepairChanged: a route deleted by hand is put
// back at once). A desired route held by a route that is not quilt's is a
// conflict: reported, never forced. While the watch is open, what it and
// the helper's answers say the kernel holds lets Apply answer the agent's
// re-inject of such a route without a helper round trip (watch.go:
// WatchReport, WatchEnded).
//
// Two rules keep the frontend's own bookkeeping from cutting traffic:
// adoption (a new state file takes the routes of ours the kernel holds as
// desired, until the agent confirms them or calls for AdoptGrace without
// them) and the removal limit (a resync removes at most RemovalLimit
// routes nobody asked to remove; past it, none).
//
// It needs no privileges. Knobs: Config (the route policy, the adoption
// grace, the removal limit), ResyncLoop's interval. Metrics: Collectors
// (quilt_resyncs_total, quilt_resyncs_failed_total,
// quilt_resync_repairs_total, quilt_resync_duration_seconds). Log lines:
// one per repair, per adoption and per route forgotten, a WARN for
// removals held back, and one per resync or watch repair (INFO when it
// changed something or found something wrong, else DEBUG).
package reconcile
