package reconcile

import "github.com/prometheus/client_golang/prometheus"

// Repair kinds and triggers: the labels of quilt_resync_repairs_total.
// kind is what a repair did; trigger what found the difference. Resyncs
// (periodic, at start, kicked when the helper comes back or its watch asks
// for one) are TriggerResync; the repairs the helper's route watch makes at
// once for the routes it reports changed (RepairChanged) are TriggerWatch.
const (
	TriggerResync = "resync"
	TriggerWatch  = "watch"

	RepairAdded   = "added"
	RepairMoved   = "moved"
	RepairRemoved = "removed"
)

// counters are the resyncs' running totals, a histogram of their durations
// and the repairs by kind and trigger, made with the reconciler.
type counters struct {
	runs     prometheus.Counter
	failed   prometheus.Counter
	repairs  *prometheus.CounterVec
	duration prometheus.Histogram
}

func newCounters() counters {
	c := counters{
		runs:   prometheus.NewCounter(prometheus.CounterOpts{Name: "quilt_resyncs_total", Help: "Resyncs run."}),
		failed: prometheus.NewCounter(prometheus.CounterOpts{Name: "quilt_resyncs_failed_total", Help: "Resyncs that left something out of line."}),
		repairs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "quilt_resync_repairs_total",
			Help: "Routes repaired, by what the repair did (kind) and what found the difference (trigger)."}, []string{"kind", "trigger"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "quilt_resync_duration_seconds",
			Help: "Duration of each resync: the helper's list and the repairs.", Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10)}),
	}
	for _, kind := range []string{RepairAdded, RepairMoved, RepairRemoved} {
		for _, trigger := range []string{TriggerResync, TriggerWatch} {
			c.repairs.WithLabelValues(kind, trigger) // every series from the start, at 0
		}
	}
	return c
}

// Collectors are the resync metrics, for a registry.
func (r *Reconciler) Collectors() []prometheus.Collector {
	c := r.counters
	return []prometheus.Collector{c.runs, c.failed, c.repairs, c.duration}
}

// count records one resync.
func (c counters) count(r ResyncResult) {
	c.runs.Inc()
	if !r.OK() {
		c.failed.Inc()
	}
	c.countRepairs(TriggerResync, r)
	c.duration.Observe(r.Duration.Seconds())
}

// countRepairs counts r's repairs, found by trigger.
func (c counters) countRepairs(trigger string, r ResyncResult) {
	c.repairs.WithLabelValues(RepairAdded, trigger).Add(float64(r.Added))
	c.repairs.WithLabelValues(RepairMoved, trigger).Add(float64(r.Moved))
	c.repairs.WithLabelValues(RepairRemoved, trigger).Add(float64(r.Removed))
}
