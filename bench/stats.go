package bench

import (
	"math"
	"slices"
	"time"
)

// percentile returns the q-quantile (0 < q <= 1) of sorted durations by the
// nearest-rank method: the smallest value with at least q of all values
// at or below it.
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(q*float64(len(sorted)) - 1e-9)) // 0.99*100 is 99.00000000000001
	return sorted[min(max(rank, 1), len(sorted))-1]
}

// latencies sorts ds and returns its p50 and p99.
func latencies(ds []time.Duration) (p50, p99 time.Duration) {
	slices.Sort(ds)
	return percentile(ds, 0.50), percentile(ds, 0.99)
}
