package reconcile

import (
	"context"
	"fmt"
	"time"

	"github.com/quiltmesh/quilt-runtime/frontend/helperclient"
	"github.com/quiltmesh/quilt-runtime/frontend/route"
	"github.com/quiltmesh/quilt-runtime/shared/wire"
)

// request is one caller's changes for the helper, waiting for its turn.
type request struct {
	ctx     context.Context
	changes []route.Route
	results []wire.Result
	errs    []error
}

// send has the helper carry out changes, together with those of every
// other caller that queued while a request was in flight: concurrent
// RPCs share one helper message (the client sends wire.MaxBatch to a
// message) instead of taking turns for a round trip each. Each caller gets
// its own answers.
func (r *Reconciler) send(ctx context.Context, changes []route.Route) ([]wire.Result, []error) {
	q := &request{ctx: ctx, changes: changes}
	r.requests.Do(q)
	return q.results, q.errs
}

// ask sends the requests that queued together as one. A lone request goes
// as it came, with its caller's context. Of several, a request whose
// caller gave up while it waited is not sent, and is answered
// unavailable; the others go with the latest of their deadlines.
func (r *Reconciler) ask(reqs []*request) {
	if len(reqs) == 1 {
		q := reqs[0]
		q.results, q.errs = r.helper.Apply(q.ctx, q.changes)
		return
	}
	var live []*request
	var all []route.Route
	var latest time.Time
	bounded := true
	for _, q := range reqs {
		if err := q.ctx.Err(); err != nil {
			q.results, q.errs = make([]wire.Result, len(q.changes)), make([]error, len(q.changes))
			for i := range q.errs {
				q.errs[i] = fmt.Errorf("%w: %w", helperclient.ErrUnavailable, err)
			}
			continue
		}
		live = append(live, q)
		all = append(all, q.changes...)
		d, ok := q.ctx.Deadline()
		bounded = bounded && ok
		if d.After(latest) {
			latest = d
		}
	}
	if len(live) == 0 {
		return
	}
	ctx := context.WithoutCancel(live[0].ctx)
	if bounded {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, latest)
		defer cancel()
	}
	results, errs := r.helper.Apply(ctx, all)
	for _, q := range live {
		n := len(q.changes)
		q.results, q.errs = results[:n:n], errs[:n:n]
		results, errs = results[n:], errs[n:]
	}
}
