package frontend

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
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
	Err       error
}

// OK reports whether everything desired is in place.
func (r ResyncResult) OK() bool {
	return !r.Start.IsZero() && r.Err == nil && r.Conflicts == 0 && r.Failed == 0
}

// Repairs is the number of routes changed.
func (r ResyncResult) Repairs() int { return r.Added + r.Moved + r.Removed }

// Resync compares the desired routes with the routes the helper reports as
// ours and repairs the difference: it adds what is missing (someone ran
// `ip route del`, or the node rebooted), moves what points elsewhere, and
// removes ours that are no longer desired (left by a crash between an
// RPC's record and its helper request). A desired route held by a foreign
// route is reported, never forced. Each repair is logged.
func (s *Service) Resync(ctx context.Context) ResyncResult {
	r := ResyncResult{Start: time.Now()}
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
		return r
	}
	have := map[netip.Prefix]string{}
	for _, rt := range owned {
		have[rt.Dst] = rt.Ifname
	}
	todo := slices.Collect(maps.Keys(s.Routes.All()))
	for dst := range have {
		todo = append(todo, dst)
	}
	slices.SortFunc(todo, func(a, b netip.Prefix) int { return cmp.Or(a.Addr().Compare(b.Addr()), a.Bits()-b.Bits()) })
	r.Installed = len(have)
	for _, dst := range slices.Compact(todo) {
		if err := ctx.Err(); err != nil {
			r.Err = err
			break
		}
		s.repair(ctx, dst, have[dst], &r)
	}
	level, msg := s.Log.Debug, "resync: in sync"
	if r.Repairs() > 0 || !r.OK() {
		level, msg = s.Log.Info, "resync: done"
	}
	level(msg, "added", r.Added, "moved", r.Moved, "removed", r.Removed, "conflicts", r.Conflicts, "failed", r.Failed,
		"installed", r.Installed, "desired", s.Routes.Len(), "took", time.Since(r.Start).Round(time.Microsecond), "err", r.Err)
	return r
}

// repair brings one destination in line, under its lock, deciding on the
// desired state as it is now: an RPC may have changed it since the list.
func (s *Service) repair(ctx context.Context, dst netip.Prefix, have string, r *ResyncResult) {
	defer s.Routes.Lock(dst)()
	want, desired := s.Routes.Get(dst)
	var res wire.Result
	var err error
	switch {
	case desired && want == have:
		s.noteConflict(dst, nil)
		return
	case desired:
		if err = errors.Join(s.Policy.CheckPrefix(dst), s.Policy.CheckInterface(want)); err == nil {
			res, err = s.Helper.Add(ctx, dst, want)
			s.noteConflict(dst, err)
		}
	default:
		res, err = s.Helper.Delete(ctx, dst)
	}
	switch {
	case errors.Is(err, wire.StatusConflict):
		r.Conflicts++
		s.Log.Warn("resync: desired route is held by a route that is not quilt's; left alone", "destination", dst, "dev", want, "err", err)
	case err != nil:
		r.Failed++
		r.Err = cmp.Or(r.Err, fmt.Errorf("repair %v: %w", dst, err))
		s.Log.Warn("resync: repair failed", "destination", dst, "want", want, "have", have, "err", err)
	case res == wire.ResultCreated:
		r.Added++
		r.Installed++
		s.Log.Info(fmt.Sprintf("resync: re-added missing route %v dev %s", dst, want), "destination", dst, "dev", want, "result", res)
	case res == wire.ResultUnchanged && have == "":
		r.Installed++ // an RPC added it since the list
	case res == wire.ResultReplaced:
		r.Moved++
		s.Log.Info(fmt.Sprintf("resync: moved route %v from dev %s to dev %s", dst, have, want), "destination", dst, "dev", want, "was", have, "result", res)
	case res == wire.ResultDeleted:
		r.Removed++
		r.Installed--
		s.Log.Info(fmt.Sprintf("resync: removed stray route %v dev %s", dst, have), "destination", dst, "dev", have, "result", res)
	}
}

// ResyncLoop resyncs every interval, and at once whenever kick receives
// (the helper came back), until ctx ends.
func (s *Service) ResyncLoop(ctx context.Context, interval time.Duration, kick <-chan struct{}) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-kick:
			t.Reset(interval)
		}
		s.Resync(ctx)
	}
}

// LastResync returns the result of the last resync.
func (s *Service) LastResync() ResyncResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.resync
}
