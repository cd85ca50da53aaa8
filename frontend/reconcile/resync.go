package reconcile

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"iter"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/quiltmesh/quilt-runtime/frontend/route"
	"github.com/quiltmesh/quilt-runtime/shared/wire"
)

// ResyncResult is what one resync found and did.
type ResyncResult struct {
	Start     time.Time
	Duration  time.Duration
	Installed int // ours in the kernel afterwards
	Added     int // desired, missing: added
	Moved     int // desired, ours via another interface: moved
	Removed   int // ours, not desired: removed
	Conflicts int // desired, held by a route that is not ours: left alone
	Failed    int // repairs the helper or the kernel refused
	Adopted   int // ours in the kernel, taken as desired: the state file was new
	Forgotten int // adopted, never confirmed by the agent within the grace: no longer desired
	Held      int // ours, not desired, left in place: more than the removal limit
	Err       error
}

// OK reports whether everything desired is in place.
func (r ResyncResult) OK() bool {
	return !r.Start.IsZero() && r.Err == nil && r.Conflicts == 0 && r.Failed == 0 && r.Held == 0
}

// Repairs is the number of routes changed.
func (r ResyncResult) Repairs() int { return r.Added + r.Moved + r.Removed }

// Failures is the number of routes left out of line: held by a route that
// is not ours, or refused.
func (r ResyncResult) Failures() int { return r.Conflicts + r.Failed }

// Resync compares the desired routes with the routes the helper reports as
// ours and repairs the difference, in batches: it adds what is missing
// (someone ran `ip route del`, or the node rebooted), moves what points
// elsewhere, and removes ours that are no longer desired (left by a crash
// between an RPC's record and its helper request). A desired route held
// by a foreign route is reported, never forced. Each repair is logged.
//
// Two rules keep a resync from cutting traffic because of the frontend's
// own bookkeeping. When the state file was new (lost, or moved aside),
// the first resync adopts the routes of ours the kernel holds: they stay
// desired until the agent confirms them, or has been calling for
// AdoptGrace without confirming them. And a resync removes at most
// RemovalLimit routes that nobody asked to remove; past that it removes
// none of them, says so, and waits for the agent or an operator
// (RemoveRoute, ApplyRoutes, SyncRoutes, or a resync with allowRemovals).
func (r *Reconciler) Resync(ctx context.Context) ResyncResult {
	res, _ := r.ResyncWith(ctx, false)
	return res
}

// ResyncWith runs a resync, past the removal limit if allowRemovals (an
// operator's explicit ask), and returns what it did and what it planned.
func (r *Reconciler) ResyncWith(ctx context.Context, allowRemovals bool) (res ResyncResult, p *Plan) {
	res = ResyncResult{Start: time.Now()}
	defer func() {
		res.Duration = time.Since(res.Start)
		r.mu.Lock()
		r.last = res
		r.mu.Unlock()
		r.counters.count(res)
	}()
	p, err := r.Plan(ctx, allowRemovals)
	if err != nil {
		res.Err = err
		r.log.Warn("resync failed", "err", res.Err)
		return res, p
	}
	res.Installed = p.Installed()
	if len(p.Adopt) > 0 || len(p.Forget) > 0 {
		if err := r.adopt(p, &res); err != nil {
			res.Err = err
			r.log.Warn("resync failed", "err", res.Err)
			return res, p
		}
	}
	r.mu.Lock()
	r.adoptPending = false
	r.mu.Unlock()
	if p.Held {
		res.Held = p.Removals()
		r.log.Warn(fmt.Sprintf("resync: held back the removal of %d routes of ours that nobody asked for: more than the limit of %d (--resync-max-removals); "+
			"see them with quiltctl resync --dry-run, remove them with RemoveRoute, ApplyRoutes or SyncRoutes, or with quiltctl resync --allow-removals",
			p.Removals(), p.Limit), "held", p.Removals(), "limit", p.Limit, "installed", p.Installed())
	}
	r.repair(ctx, func(yield func(netip.Prefix, string) bool) {
		for step := range p.Changes() {
			if !step.Held && !yield(step.Dst, step.Have) {
				return
			}
		}
	}, &res)
	level, msg := r.log.Debug, "resync: in sync"
	if res.Repairs() > 0 || res.Adopted > 0 || res.Forgotten > 0 || !res.OK() {
		level, msg = r.log.Info, "resync: done"
	}
	level(msg, "added", res.Added, "moved", res.Moved, "removed", res.Removed, "conflicts", res.Conflicts, "failed", res.Failed,
		"adopted", res.Adopted, "forgotten", res.Forgotten, "held", res.Held,
		"installed", res.Installed, "desired", r.routes.len(), "took", time.Since(res.Start).Round(time.Microsecond), "err", res.Err)
	return res, p
}

// Plan is what a resync does, decided on one list of our routes.
type Plan struct {
	Adopt  []route.Route  // ours in the kernel, not desired, while the state file is new: adopted
	Forget []netip.Prefix // adopted and never confirmed within the grace: no longer desired
	Limit  int            // the most removals a resync makes unasked
	Held   bool           // more removals than that: the resync makes none of them

	have     *table // ours in the kernel
	want     *table // desired, once adopted and forgotten
	removals int    // ours and not desired
}

// Installed is the number of destinations holding routes of ours.
func (p *Plan) Installed() int { return p.have.dsts() }

// Removals is the number of routes of ours nobody desires.
func (p *Plan) Removals() int { return p.removals }

// A Step is one destination a resync changes: an add (Have ""), a move,
// or a removal (Want ""; Held when held back).
type Step struct {
	Dst        netip.Prefix
	Want, Have string
	Held       bool
}

// Changes are the plan's steps, in order.
func (p *Plan) Changes() iter.Seq[Step] {
	return func(yield func(Step) bool) {
		diff(p.want, p.have, func(dst netip.Prefix, want, have string) bool {
			return want == have || yield(Step{Dst: dst, Want: want, Have: have, Held: want == "" && p.Held})
		})
	}
}

// Plan decides a resync on the helper's list of our routes now, past the
// removal limit if allowRemovals, and changes nothing.
func (r *Reconciler) Plan(ctx context.Context, allowRemovals bool) (*Plan, error) {
	have, err := r.installed(ctx)
	if err != nil {
		return nil, fmt.Errorf("list our routes: %w", err)
	}
	p := &Plan{have: have, want: r.routes.snapshot()}
	r.mu.Lock()
	adopting := r.adoptPending
	since := r.agentSince
	r.mu.Unlock()
	if adopting {
		diff(p.want, p.have, func(dst netip.Prefix, want, have string) bool {
			ifname, _, _ := strings.Cut(have, ",") // of several routes of ours, the first
			if want == "" && r.policy.CheckPrefix(dst) == nil && r.policy.CheckInterface(ifname) == nil {
				p.Adopt = append(p.Adopt, route.Route{Dst: dst, Ifname: ifname})
			}
			return true
		})
	}
	if !since.IsZero() && r.now().Sub(since) >= r.grace {
		p.Forget = r.routes.adoptedList()
	}
	if len(p.Adopt) > 0 || len(p.Forget) > 0 {
		p.want = p.want.change(p.Adopt, p.Forget)
	}
	diff(p.want, p.have, func(_ netip.Prefix, want, have string) bool {
		if want == "" {
			p.removals++
		}
		return true
	})
	p.Limit = r.limit.Of(p.Installed())
	p.Held = !allowRemovals && p.removals > p.Limit
	return p, nil
}

// adopt records the plan's adoptions and forgets the adoptions that
// expired, holding every route lock, with one log line each.
func (r *Reconciler) adopt(p *Plan, res *ResyncResult) error {
	defer r.routes.lockAll()()
	var found []route.Route
	for _, c := range p.Adopt {
		if _, desired := r.routes.get(c.Dst); !desired { // an RPC may have asked for it since the list
			found = append(found, c)
		}
	}
	if len(found) > 0 {
		if err := r.routes.adopt(found); err != nil {
			return fmt.Errorf("adopt %d routes found in the kernel: %w", len(found), err)
		}
		res.Adopted = len(found)
		for _, c := range found {
			r.log.Info(fmt.Sprintf("resync: adopted route %v dev %s: the state file was new, and the kernel holds it; it stays until the agent confirms or removes it", c.Dst, c.Ifname),
				"destination", c.Dst, "dev", c.Ifname, "adopt_grace", r.grace)
		}
	}
	forgotten, err := r.routes.forget(p.Forget)
	if err != nil {
		return fmt.Errorf("forget %d adopted routes: %w", len(p.Forget), err)
	}
	res.Forgotten = len(forgotten)
	for _, dst := range forgotten {
		r.log.Info(fmt.Sprintf("resync: adopted route %v was not confirmed by the agent in %v of its calls; no longer desired", dst, r.grace),
			"destination", dst, "adopt_grace", r.grace)
	}
	return nil
}

// repairChunk is the most repairs that go to the helper in one request.
const repairChunk = 4096

// repair brings the destinations in line, each given with the interfaces
// of ours it held when the helper listed it ("": none), holding every
// route lock (once there is any) and deciding on the desired state as it
// is now: an RPC may have changed it since the list. They go to the
// helper repairChunk at a time, so a repair of every route holds only a
// chunk of them at once.
func (r *Reconciler) repair(ctx context.Context, todo iter.Seq2[netip.Prefix, string], res *ResyncResult) {
	var unlock func()
	defer func() {
		if unlock != nil {
			unlock()
		}
	}()
	var changes []route.Route
	var was []string
	asked := false
	flush := func() {
		results, errs := r.carryOut(ctx, changes)
		for i, c := range changes {
			r.count(c, was[i], results[i], errs[i], res)
		}
		changes, was, asked = changes[:0], was[:0], true
	}
	for dst, have := range todo {
		if unlock == nil {
			unlock = r.routes.lockAll()
		}
		want, desired := r.routes.get(dst)
		if desired && want == have {
			continue // an RPC put it in line since
		}
		if err := errors.Join(r.policy.CheckPrefix(dst), r.policy.CheckInterface(want)); desired && err != nil {
			res.Failed++
			res.Err = cmp.Or(res.Err, fmt.Errorf("repair %v: %w", dst, err))
			r.log.Warn("resync: desired route refused by policy", "destination", dst, "want", want, "err", err)
			continue
		}
		changes = append(changes, route.Route{Dst: dst, Ifname: want})
		was = append(was, have)
		if len(changes) == repairChunk {
			flush()
		}
	}
	if len(changes) > 0 || unlock != nil && !asked {
		flush()
	}
}

// count counts and logs the helper's answer to one repair of dst, which
// held was of ours.
func (r *Reconciler) count(c route.Route, was string, result wire.Result, err error, res *ResyncResult) {
	dst, want := c.Dst, c.Ifname
	switch {
	case errors.Is(err, wire.StatusConflict):
		res.Conflicts++
		r.log.Warn("resync: desired route is held by a route that is not quilt's; left alone", "destination", dst, "dev", want, "err", err)
	case err != nil:
		res.Failed++
		res.Err = cmp.Or(res.Err, fmt.Errorf("repair %v: %w", dst, err))
		r.log.Warn("resync: repair failed", "destination", dst, "want", want, "have", was, "err", err)
	case result == wire.ResultCreated:
		res.Added++
		res.Installed++
		r.log.Info(fmt.Sprintf("resync: re-added missing route %v dev %s", dst, want), "destination", dst, "dev", want, "result", result)
	case result == wire.ResultUnchanged && was == "":
		res.Installed++ // an RPC added it since the list
	case result == wire.ResultMoved:
		res.Moved++
		r.log.Info(fmt.Sprintf("resync: moved route %v from dev %s to dev %s", dst, was, want), "destination", dst, "dev", want, "was", was, "result", result)
	case result == wire.ResultDeleted:
		res.Removed++
		res.Installed--
		r.log.Info(fmt.Sprintf("resync: removed stray route %v dev %s", dst, was), "destination", dst, "dev", was, "result", result)
	}
}

// RepairChanged repairs, at once, the desired routes among the prefixes
// the helper reported changed, as a resync of just those would: a route
// deleted by hand, moved by another daemon or flushed with its interface
// is put back, and a foreign route that appeared is reported as a
// conflict. Prefixes that are not desired are left to the periodic resync
// (a route of ours there is stray; anything else is not ours to judge).
// It is logged as a resync is: at INFO when it changed something or found
// something wrong.
func (r *Reconciler) RepairChanged(ctx context.Context, changed []netip.Prefix) ResyncResult {
	res := ResyncResult{Start: time.Now()}
	var todo []netip.Prefix
	for _, dst := range changed {
		if _, ok := r.routes.get(dst); ok {
			todo = append(todo, dst)
		}
	}
	slices.SortFunc(todo, route.Compare)
	if len(todo) > 0 {
		r.repair(ctx, func(yield func(netip.Prefix, string) bool) {
			for _, dst := range todo {
				if !yield(dst, "") {
					return
				}
			}
		}, &res)
	}
	res.Duration = time.Since(res.Start)
	r.counters.countRepairs(TriggerWatch, res)
	level, msg := r.log.Debug, "watch: in sync"
	if res.Repairs() > 0 || res.Failures() > 0 {
		level, msg = r.log.Info, "watch: done"
	}
	level(msg, "added", res.Added, "moved", res.Moved, "removed", res.Removed, "conflicts", res.Conflicts, "failed", res.Failed,
		"changed", len(changed), "desired", len(todo), "took", res.Duration.Round(time.Microsecond), "err", res.Err)
	return res
}

// LoopHooks let the resync loop report on itself. Alive is called every
// Every while the loop waits between resyncs, never during one, so a loop
// stuck in a resync stops calling it (systemd's watchdog). Done is called
// after each resync. The zero value does nothing.
type LoopHooks struct {
	Every time.Duration
	Alive func()
	Done  func(ResyncResult)
}

// ticks returns a channel that receives every Every, or nil (never) if
// there is nothing to call, and its stop function.
func (h LoopHooks) ticks() (<-chan time.Time, func()) {
	if h.Every <= 0 || h.Alive == nil {
		return nil, func() {}
	}
	t := time.NewTicker(h.Every)
	return t.C, t.Stop
}

func (h LoopHooks) done(r ResyncResult) {
	if h.Done != nil {
		h.Done(r)
	}
}

// ResyncLoop resyncs every interval, and at once whenever kick receives
// (the helper came back, or its watch asked for one), until ctx ends. It
// calls hooks.Alive while it waits and hooks.Done after each resync.
func (r *Reconciler) ResyncLoop(ctx context.Context, interval time.Duration, kick <-chan struct{}, hooks LoopHooks) {
	t := time.NewTicker(interval)
	defer t.Stop()
	alive, stop := hooks.ticks()
	defer stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-alive:
			hooks.Alive()
			continue
		case <-t.C:
		case <-kick:
			t.Reset(interval)
		}
		hooks.done(r.Resync(ctx))
	}
}
