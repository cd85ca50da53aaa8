package reconcile

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/quiltmesh/quilt-runtime/frontend/helperclient"
	"github.com/quiltmesh/quilt-runtime/frontend/internal/group"
	"github.com/quiltmesh/quilt-runtime/frontend/route"
	"github.com/quiltmesh/quilt-runtime/shared/policy"
	"github.com/quiltmesh/quilt-runtime/shared/wire"
)

// Config is what a Reconciler starts from.
type Config struct {
	Policy policy.Policy
	Helper helperclient.RouteHelper
	Store  Store
	// Saved and Adopted are the desired routes and their adoption marks
	// as the state file holds them.
	Saved   map[netip.Prefix]string
	Adopted map[netip.Prefix]bool
	// AdoptPending says the state file was new: the first resync adopts
	// the routes of ours the kernel holds.
	AdoptPending bool
	// AdoptGrace is how long the agent may call without confirming a route
	// adopted from the kernel before it is no longer desired; 0:
	// DefaultAdoptGrace.
	AdoptGrace time.Duration
	// RemovalLimit bounds the routes a resync removes unasked; nil:
	// DefaultRemovalLimit.
	RemovalLimit *RemovalLimit
	Log          *slog.Logger
	// Now is the clock of the adoption grace; nil: time.Now. Tests move it.
	Now func() time.Time
}

// Reconciler keeps the desired routes and brings the kernel in line with
// them: every change to a route, the agent's or a repair, goes through it.
type Reconciler struct {
	policy   policy.Policy
	helper   helperclient.RouteHelper
	routes   *desired
	grace    time.Duration
	limit    RemovalLimit
	log      *slog.Logger
	now      func() time.Time
	counters counters
	requests *group.Group[*request] // for the helper, gathered (send)

	// watch is what the helper's watch has said, for what the frontend
	// knows the kernel holds (watch.go).
	watch struct {
		sync.Mutex
		open  bool   // a watch is open and has sent its first report
		epoch uint64 // its reports, and the ends of watches, so far
	}

	mu           sync.Mutex
	adoptPending bool                    // the state file was new: the first resync adopts what the kernel holds
	agentSince   time.Time               // the agent's first call since routes were adopted
	conflicts    map[netip.Prefix]string // desired routes a foreign route holds: why
	last         ResyncResult
}

// New returns a reconciler of the saved routes.
func New(cfg Config) *Reconciler {
	r := &Reconciler{policy: cfg.Policy, helper: cfg.Helper, routes: newDesired(cfg.Store, cfg.Saved, cfg.Adopted),
		grace: cmp.Or(cfg.AdoptGrace, DefaultAdoptGrace), limit: DefaultRemovalLimit, log: cfg.Log, now: cfg.Now,
		adoptPending: cfg.AdoptPending, conflicts: map[netip.Prefix]string{}, counters: newCounters()}
	if cfg.RemovalLimit != nil {
		r.limit = *cfg.RemovalLimit
	}
	if r.now == nil {
		r.now = time.Now
	}
	r.requests = group.New(r.ask)
	return r
}

// Lock takes dst's lock, which every change to dst holds from its record
// to the helper's answer, and returns its unlock: a caller that must
// decide on dst's desired state without it changing meanwhile.
func (r *Reconciler) Lock(dst netip.Prefix) (unlock func()) { return r.routes.lock(dst) }

// Desired returns the interface dst should go via, if it is desired.
func (r *Reconciler) Desired(dst netip.Prefix) (string, bool) { return r.routes.get(dst) }

// DesiredLen returns the number of desired routes.
func (r *Reconciler) DesiredLen() int { return r.routes.len() }

// AdoptedLen returns the number of desired routes adopted from the kernel
// and not yet confirmed by the agent.
func (r *Reconciler) AdoptedLen() int { return r.routes.adoptedLen() }

// Adopted returns those routes, in order.
func (r *Reconciler) Adopted() []netip.Prefix { return r.routes.adoptedList() }

// AdoptGrace is how long the agent may leave an adopted route unconfirmed.
func (r *Reconciler) AdoptGrace() time.Duration { return r.grace }

// RemovalLimit is the most routes a resync removes unasked.
func (r *Reconciler) RemovalLimit() RemovalLimit { return r.limit }

// Conflicts returns the number of desired routes a foreign route holds.
func (r *Reconciler) Conflicts() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.conflicts)
}

// LastResync returns the result of the last resync.
func (r *Reconciler) LastResync() ResyncResult {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last
}

// AgentCalled notes that the agent sent routes (InjectRoute, ApplyRoutes,
// SyncRoutes): the grace of routes adopted and not yet confirmed starts
// with its first call.
func (r *Reconciler) AgentCalled() {
	if r.routes.adoptedLen() == 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.agentSince.IsZero() {
		r.agentSince = r.now()
	}
}

// A Batch is one request's route changes, applied together: a single RPC
// is a batch of one.
type Batch struct {
	// Changes are adds (Ifname set) and removals, at most one per
	// destination.
	Changes []route.Route
	// Sync makes Changes the complete set: every route desired, or of ours
	// in the kernel, that it does not name is removed too.
	Sync bool
	// Check, if set, runs holding the changes' locks before anything is
	// recorded; its error refuses the batch, and nothing changes.
	Check func() error
}

// Applied is what Apply did: every change (a sync's removals after the
// batch's own, in order), the helper's result and error for each, and how
// many changed the desired routes.
type Applied struct {
	Changes  []route.Route
	Results  []wire.Result
	Errs     []error
	Recorded int
}

// ErrNotRecorded marks an error of the state file: a batch that was not
// recorded, so nothing changed. Such an error reads as the store's.
var ErrNotRecorded = errors.New("route changes not recorded")

// recordError is a store's error, marked ErrNotRecorded.
type recordError struct{ err error }

func (e recordError) Error() string   { return e.err.Error() }
func (e recordError) Unwrap() []error { return []error{ErrNotRecorded, e.err} }

// Apply is the one way routes change at the agent's request: holding the
// changes' locks, it records them as desired (one transaction, durable
// before anything else), then has the helper carry them out. The record
// stays whatever the helper answers: a resync retries an add the helper
// could not make now, and removes a route whose removal it could not.
func (r *Reconciler) Apply(ctx context.Context, b Batch) (Applied, error) {
	if len(b.Changes) == 1 && !b.Sync {
		defer r.routes.lock(b.Changes[0].Dst)()
	} else {
		defer r.routes.lockAll()()
	}
	if b.Check != nil {
		if err := b.Check(); err != nil {
			return Applied{}, err
		}
	}
	if len(b.Changes) == 1 && !b.Sync && !b.Changes[0].IsRemoval() && r.routes.isHeld(b.Changes[0].Dst, b.Changes[0].Ifname) {
		// The agent's re-inject: desired so, and the kernel holds it so (watch.go).
		return Applied{Changes: b.Changes, Results: []wire.Result{wire.ResultUnchanged}, Errs: []error{nil}}, nil
	}
	a := Applied{Changes: b.Changes}
	if b.Sync {
		a.Changes = append(slices.Clip(b.Changes), r.unnamed(ctx, b.Changes)...)
	}
	n, err := r.routes.set(a.Changes)
	if err != nil {
		return a, recordError{err}
	}
	a.Recorded = n
	a.Results, a.Errs = r.carryOut(ctx, a.Changes)
	return a, nil
}

// unnamed returns the removal of every route, desired or of ours in the
// kernel, that set does not name, in order. A route of ours nobody
// desires is the agent's to remove too, past any limit of a resync's.
// The caller holds every lock.
func (r *Reconciler) unnamed(ctx context.Context, set []route.Route) []route.Route {
	named := destinations(set)
	have, err := r.installed(ctx)
	if err != nil {
		have = nil // the desired ones still go
	}
	var gone []route.Route
	diff(r.routes.snapshot(), have, func(dst netip.Prefix, _, _ string) bool {
		if !named.has(dst) {
			gone = append(gone, route.Route{Dst: dst})
		}
		return true
	})
	return gone
}

// carryOut has the helper make changes, whose locks the caller holds, and
// notes what its answers say of conflicts: an add refused for a foreign
// route is one, a route no longer desired is none.
func (r *Reconciler) carryOut(ctx context.Context, changes []route.Route) ([]wire.Result, []error) {
	epoch := r.watchEpoch()
	res, errs := r.send(ctx, changes)
	r.noteAnswers(epoch, changes, res, errs)
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, c := range changes {
		switch {
		case c.IsRemoval():
			delete(r.conflicts, c.Dst)
		case errors.Is(errs[i], wire.StatusConflict):
			r.conflicts[c.Dst] = fmt.Sprintf("a route for %v exists and is not quilt's; left alone", c.Dst)
		case !errors.Is(errs[i], helperclient.ErrUnavailable):
			delete(r.conflicts, c.Dst)
		}
	}
	return res, errs
}

// A Status is one destination's routes, desired and installed, side by
// side.
type Status struct {
	Dst      netip.Prefix
	Want     string // the interface it should go via; "": not desired
	Have     string // the interfaces of our routes there; "": none
	Adopted  bool   // desired as adopted from the kernel, not yet confirmed
	Conflict string // why a foreign route holds it, if one does
}

// Statuses asks the helper for the routes of ours it holds now and
// returns every destination desired or holding one, in order. Without
// the helper (err) they are the desired ones.
func (r *Reconciler) Statuses(ctx context.Context) (iter.Seq[Status], error) {
	have, err := r.installed(ctx)
	want := r.routes.snapshot()
	r.mu.Lock()
	conflicts := maps.Clone(r.conflicts)
	r.mu.Unlock()
	return func(yield func(Status) bool) {
		diff(want, have, func(dst netip.Prefix, want, have string) bool {
			return yield(Status{Dst: dst, Want: want, Have: have, Adopted: want != "" && r.routes.isAdopted(dst), Conflict: conflicts[dst]})
		})
	}, err
}

// Installed asks the helper for the routes of ours it holds now: how many,
// and how many of them are desired as they are.
func (r *Reconciler) Installed(ctx context.Context) (n, inSync int, err error) {
	err = r.helper.List(ctx, func(rt route.Route) {
		n++
		if via, ok := r.routes.get(rt.Dst); ok && via == rt.Ifname {
			inSync++
		}
	})
	if err != nil {
		return 0, 0, err
	}
	return n, inSync, nil
}

// DesiredRoutes returns a copy of the desired routes.
func (r *Reconciler) DesiredRoutes() map[netip.Prefix]string { return r.routes.all() }
