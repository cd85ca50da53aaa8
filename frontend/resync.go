package frontend

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

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

// Resync compares the desired routes with the routes the helper reports as
// ours and repairs the difference in one batch: it adds what is missing
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
func (s *Service) Resync(ctx context.Context) ResyncResult {
	r, _ := s.resyncWith(ctx, false)
	return r
}

// resyncWith runs a resync, and returns what it did and what it planned.
func (s *Service) resyncWith(ctx context.Context, allowRemovals bool) (r ResyncResult, p resyncPlan) {
	r = ResyncResult{Start: time.Now()}
	defer func() {
		r.Duration = time.Since(r.Start)
		s.mu.Lock()
		s.resync = r
		s.mu.Unlock()
		s.counters.count(r)
	}()
	owned, err := s.Helper.List(ctx)
	if err != nil {
		r.Err = fmt.Errorf("list our routes: %w", err)
		s.Log.Warn("resync failed", "err", r.Err)
		return r, p
	}
	p = s.planResync(owned, allowRemovals)
	r.Installed = len(p.have)
	if len(p.adopt) > 0 || len(p.forget) > 0 {
		if err := s.adopt(p, &r); err != nil {
			r.Err = err
			s.Log.Warn("resync failed", "err", r.Err)
			return r, p
		}
	}
	s.mu.Lock()
	s.adoptPending = false
	s.mu.Unlock()
	if p.held {
		r.Held = len(p.removals)
		s.Log.Warn(fmt.Sprintf("resync: held back the removal of %d routes of ours that nobody asked for: more than the limit of %d (--resync-max-removals); "+
			"see them with quiltctl resync --dry-run, remove them with RemoveRoute, ApplyRoutes or SyncRoutes, or with quiltctl resync --allow-removals",
			len(p.removals), p.limit), "held", len(p.removals), "limit", p.limit, "installed", len(p.have))
	}
	if len(p.differ) > 0 {
		s.repair(ctx, p.differ, p.have, &r)
	}
	level, msg := s.Log.Debug, "resync: in sync"
	if r.Repairs() > 0 || r.Adopted > 0 || r.Forgotten > 0 || !r.OK() {
		level, msg = s.Log.Info, "resync: done"
	}
	level(msg, "added", r.Added, "moved", r.Moved, "removed", r.Removed, "conflicts", r.Conflicts, "failed", r.Failed,
		"adopted", r.Adopted, "forgotten", r.Forgotten, "held", r.Held,
		"installed", r.Installed, "desired", s.Routes.Len(), "took", time.Since(r.Start).Round(time.Microsecond), "err", r.Err)
	return r, p
}

// resyncPlan is what a resync does, decided on one list of our routes.
type resyncPlan struct {
	have     map[netip.Prefix]string
	adopt    []Change       // ours in the kernel, not desired, while the state file is new: adopted
	forget   []netip.Prefix // adopted and never confirmed within the grace: no longer desired
	differ   []netip.Prefix // destinations to add, move or remove, in order
	removals []netip.Prefix // ours and not desired (after adopt and forget), in order
	limit    int            // the most removals a resync makes unasked
	held     bool           // more removals than that: differ holds none of them
}

// planResync decides a resync on the list of our routes, and changes
// nothing.
func (s *Service) planResync(owned []Route, allowRemovals bool) resyncPlan {
	p := resyncPlan{have: installed(owned)}
	want := s.Routes.All()
	s.mu.Lock()
	adopting := s.adoptPending
	since := s.agentSince
	s.mu.Unlock()
	for dst, ifname := range p.have {
		ifname, _, _ = strings.Cut(ifname, ",") // of several routes of ours, the first
		if _, desired := want[dst]; adopting && !desired && s.Policy.CheckPrefix(dst) == nil && s.Policy.CheckInterface(ifname) == nil {
			p.adopt = append(p.adopt, Change{dst, ifname})
			want[dst] = ifname
		}
	}
	if !since.IsZero() && time.Since(since) >= s.adoptGrace() {
		p.forget = s.Routes.Adopted()
		for _, dst := range p.forget {
			delete(want, dst)
		}
	}
	for dst, ifname := range want {
		if p.have[dst] != ifname {
			p.differ = append(p.differ, dst)
		}
	}
	for dst := range p.have {
		if _, ok := want[dst]; !ok {
			p.differ = append(p.differ, dst)
			p.removals = append(p.removals, dst)
		}
	}
	slices.SortFunc(p.differ, comparePrefixes)
	slices.SortFunc(p.removals, comparePrefixes)
	slices.SortFunc(p.adopt, func(a, b Change) int { return comparePrefixes(a.Dst, b.Dst) })
	p.limit = s.removalLimit().Of(len(p.have))
	if !allowRemovals && len(p.removals) > p.limit {
		p.held = true
		p.differ = slices.DeleteFunc(p.differ, func(dst netip.Prefix) bool {
			_, removal := slices.BinarySearchFunc(p.removals, dst, comparePrefixes)
			return removal
		})
	}
	return p
}

// adopt records the plan's adoptions and forgets the adoptions that
// expired, holding every route lock, with one log line each.
func (s *Service) adopt(p resyncPlan, r *ResyncResult) error {
	defer s.Routes.LockAll()()
	var found []Change
	for _, c := range p.adopt {
		if _, desired := s.Routes.Get(c.Dst); !desired { // an RPC may have asked for it since the list
			found = append(found, c)
		}
	}
	if len(found) > 0 {
		if err := s.Routes.Adopt(found); err != nil {
			return fmt.Errorf("adopt %d routes found in the kernel: %w", len(found), err)
		}
		r.Adopted = len(found)
		for _, c := range found {
			s.Log.Info(fmt.Sprintf("resync: adopted route %v dev %s: the state file was new, and the kernel holds it; it stays until the agent confirms or removes it", c.Dst, c.Ifname),
				"destination", c.Dst, "dev", c.Ifname, "adopt_grace", s.adoptGrace())
		}
	}
	forgotten, err := s.Routes.Forget(p.forget)
	if err != nil {
		return fmt.Errorf("forget %d adopted routes: %w", len(p.forget), err)
	}
	r.Forgotten = len(forgotten)
	for _, dst := range forgotten {
		s.Log.Info(fmt.Sprintf("resync: adopted route %v was not confirmed by the agent in %v of its calls; no longer desired", dst, s.adoptGrace()),
			"destination", dst, "adopt_grace", s.adoptGrace())
	}
	return nil
}

// agentCalled notes that the agent sent routes (InjectRoute, ApplyRoutes,
// SyncRoutes): the grace of routes adopted and not yet confirmed starts
// with its first call.
func (s *Service) agentCalled() {
	if s.Routes.AdoptedLen() == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.agentSince.IsZero() {
		s.agentSince = time.Now()
	}
}

// installed maps each destination to the interface of our route there;
// where an older version left several, to all their names, so that it
// differs from any desired interface and gets repaired.
func installed(owned []Route) map[netip.Prefix]string {
	have := make(map[netip.Prefix]string, len(owned))
	for _, rt := range owned {
		if was, ok := have[rt.Dst]; ok {
			have[rt.Dst] = was + "," + rt.Ifname
		} else {
			have[rt.Dst] = rt.Ifname
		}
	}
	return have
}

// repair brings the destinations in line in one helper batch, holding
// every route lock and deciding on the desired state as it is now: an RPC
// may have changed it since the list.
func (s *Service) repair(ctx context.Context, differ []netip.Prefix, have map[netip.Prefix]string, r *ResyncResult) {
	slices.SortFunc(differ, comparePrefixes)
	defer s.Routes.LockAll()()
	var changes []Change
	for _, dst := range differ {
		want, desired := s.Routes.Get(dst)
		if desired && want == have[dst] {
			continue // an RPC put it in line since
		}
		if err := errors.Join(s.Policy.CheckPrefix(dst), s.Policy.CheckInterface(want)); desired && err != nil {
			r.Failed++
			r.Err = cmp.Or(r.Err, fmt.Errorf("repair %v: %w", dst, err))
			s.Log.Warn("resync: desired route refused by policy", "destination", dst, "want", want, "err", err)
			continue
		}
		changes = append(changes, Change{dst, want})
	}
	res, errs := s.Helper.Apply(ctx, changes)
	for i, c := range changes {
		dst, want, was := c.Dst, c.Ifname, have[c.Dst]
		if want != "" {
			s.noteConflict(dst, errs[i])
		}
		switch err := errs[i]; {
		case errors.Is(err, wire.StatusConflict):
			r.Conflicts++
			s.Log.Warn("resync: desired route is held by a route that is not quilt's; left alone", "destination", dst, "dev", want, "err", err)
		case err != nil:
			r.Failed++
			r.Err = cmp.Or(r.Err, fmt.Errorf("repair %v: %w", dst, err))
			s.Log.Warn("resync: repair failed", "destination", dst, "want", want, "have", was, "err", err)
		case res[i] == wire.ResultCreated:
			r.Added++
			r.Installed++
			s.Log.Info(fmt.Sprintf("resync: re-added missing route %v dev %s", dst, want), "destination", dst, "dev", want, "result", res[i])
		case res[i] == wire.ResultUnchanged && was == "":
			r.Installed++ // an RPC added it since the list
		case res[i] == wire.ResultMoved:
			r.Moved++
			s.Log.Info(fmt.Sprintf("resync: moved route %v from dev %s to dev %s", dst, was, want), "destination", dst, "dev", want, "was", was, "result", res[i])
		case res[i] == wire.ResultDeleted:
			r.Removed++
			r.Installed--
			s.Log.Info(fmt.Sprintf("resync: removed stray route %v dev %s", dst, was), "destination", dst, "dev", was, "result", res[i])
		}
	}
}

// ResyncLoop resyncs every interval, and at once whenever kick receives
// (the helper came back), until ctx ends. It calls hooks.Alive while it
// waits and hooks.Done after each resync.
func (s *Service) ResyncLoop(ctx context.Context, interval time.Duration, kick <-chan struct{}, hooks LoopHooks) {
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
		hooks.done(s.Resync(ctx))
	}
}

// WatchLoop keeps a watch open on the helper until ctx ends, reconnecting
// with backoff. A resync event (the first of every watch, and whenever the
// helper lost track of the kernel) kicks a full resync; each desired route
// the helper reports changed is repaired at once (RepairChanged).
func (s *Service) WatchLoop(ctx context.Context, kick chan<- struct{}) {
	backoff := minBackoff
	for ctx.Err() == nil {
		started := time.Now()
		err := s.Helper.Watch(ctx, func(resync bool, changed []netip.Prefix) {
			if resync {
				select {
				case kick <- struct{}{}:
				default:
				}
			}
			if len(changed) > 0 {
				s.RepairChanged(ctx, changed)
			}
		})
		if ctx.Err() != nil {
			return
		}
		if time.Since(started) > maxBackoff {
			backoff = minBackoff // it ran a while: a new failure, not the same one
		}
		s.Log.Debug("route helper watch ended", "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// RepairChanged repairs, at once, the desired routes among the prefixes
// the helper reported changed, as a resync of just those would: a route
// deleted by hand, moved by another daemon or flushed with its interface
// is put back, and a foreign route that appeared is reported as a
// conflict. Prefixes that are not desired are left to the periodic resync
// (a route of ours there is stray; anything else is not ours to judge).
func (s *Service) RepairChanged(ctx context.Context, changed []netip.Prefix) ResyncResult {
	r := ResyncResult{Start: time.Now()}
	var desired []netip.Prefix
	for _, dst := range changed {
		if _, ok := s.Routes.Get(dst); ok {
			desired = append(desired, dst)
		}
	}
	if len(desired) > 0 {
		s.repair(ctx, desired, map[netip.Prefix]string{}, &r)
	}
	r.Duration = time.Since(r.Start)
	s.counters.countRepairs(TriggerWatch, r)
	// Logged as a resync is: at INFO when it changed something or found
	// something wrong. Only then is it counted for the summary, as a call
	// that changed something (or failed); an event whose routes were in
	// line already is no call of the agent's that found everything as
	// asked, so it is not counted at all.
	failed := r.Failed > 0 || r.Conflicts > 0
	level, msg := s.Log.Debug, "watch: in sync"
	if r.Repairs() > 0 || failed {
		level, msg = s.Log.Info, "watch: done"
		s.calls.count(r.Repairs() > 0, failed)
	}
	level(msg, "added", r.Added, "moved", r.Moved, "removed", r.Removed, "conflicts", r.Conflicts, "failed", r.Failed,
		"changed", len(changed), "desired", len(desired), "took", r.Duration.Round(time.Microsecond), "err", r.Err)
	return r
}

// LastResync returns the result of the last resync.
func (s *Service) LastResync() ResyncResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.resync
}
