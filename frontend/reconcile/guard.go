package reconcile

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/quiltmesh/quilt-runtime/frontend/internal/quote"
)

// DefaultAdoptGrace is how long the agent may call without confirming a
// route adopted from the kernel before it is no longer desired: a dozen
// rounds of the agent's 5-second re-injects.
const DefaultAdoptGrace = time.Minute

// RemovalLimit is the most routes of ours a resync removes in one pass
// when nobody asked for their removal (--resync-max-removals): a number,
// or a percentage of the routes of ours installed, at least
// MinRemovalLimit. Past it, a resync removes none of them.
type RemovalLimit struct {
	N       int
	Percent bool // N is a percentage of the routes installed
}

// DefaultRemovalLimit is 10% of the routes installed.
var DefaultRemovalLimit = RemovalLimit{N: 10, Percent: true}

// MinRemovalLimit is the least a percentage allows: a node with few
// routes can still lose a few peers between two calls of the agent.
const MinRemovalLimit = 5

// ParseRemovalLimit parses "25" or "10%".
func ParseRemovalLimit(s string) (RemovalLimit, error) {
	digits, percent := strings.CutSuffix(s, "%")
	n, err := strconv.Atoi(digits)
	if err != nil || n < 0 || percent && n > 100 {
		return RemovalLimit{}, fmt.Errorf("--resync-max-removals %s: want a number of routes, such as 25, or a percentage of those installed, such as 10%%", quote.Value(s))
	}
	return RemovalLimit{N: n, Percent: percent}, nil
}

// Of returns the limit for a node with installed routes of ours.
func (l RemovalLimit) Of(installed int) int {
	if !l.Percent {
		return l.N
	}
	return max(MinRemovalLimit, installed*l.N/100)
}

func (l RemovalLimit) String() string {
	if l.Percent {
		return fmt.Sprintf("%d%% (at least %d)", l.N, MinRemovalLimit)
	}
	return strconv.Itoa(l.N)
}
