package reconcile

import (
	"context"
	"log/slog"
	"net/netip"
	"testing"

	"github.com/quiltmesh/quilt-runtime/frontend/internal/testkit"
	"github.com/quiltmesh/quilt-runtime/frontend/route"
	"github.com/quiltmesh/quilt-runtime/shared/wire"
)

// TestReinjectKnownWithoutHelper: with the watch open, an add of a route
// the helper last said the kernel holds as desired is answered
// "unchanged" without asking it; everything else (a move, a report of the
// watch, its end, a report during the request, a conflict, an adopted
// route, a removal) makes the next add ask the helper again.
func TestReinjectKnownWithoutHelper(t *testing.T) {
	x, y, z, a := netip.MustParsePrefix("10.42.2.0/24"), netip.MustParsePrefix("10.42.3.0/24"),
		netip.MustParsePrefix("10.42.4.0/24"), netip.MustParsePrefix("10.42.5.0/24")
	fake := testkit.New(route.Route{Dst: a, Ifname: "vxlan100"})
	fake.Conflict(z)
	h := &recordingHelper{Helper: fake}
	pol := testkit.Policy
	pol.Interfaces = []string{"vxlan100", "vxlan101"}
	r := New(Config{Policy: pol, Helper: h, Store: nullStore{}, Log: slog.New(slog.DiscardHandler),
		Saved: map[netip.Prefix]string{a: "vxlan100"}, Adopted: map[netip.Prefix]bool{a: true}})

	// step applies one change and checks whether it asked the helper, and
	// its answer.
	step := func(what string, c route.Route, asks bool, want wire.Result) {
		t.Helper()
		before := h.count()
		got, err := r.Apply(context.Background(), Batch{Changes: []route.Route{c}})
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		asked := h.count() > before
		if asked != asks || got.Results[0] != want {
			t.Errorf("%s: asked the helper %v, answered %v %v; want asked %v, answered %v", what, asked, got.Results[0], got.Errs[0], asks, want)
		}
	}
	add := func(dst netip.Prefix, ifname string) route.Route { return route.Route{Dst: dst, Ifname: ifname} }

	step("add before any watch", add(x, "vxlan100"), true, wire.ResultCreated)
	step("re-inject before any watch", add(x, "vxlan100"), true, wire.ResultUnchanged)
	r.WatchReport(true, nil) // a watch opens: its first report
	step("re-inject, watch open, nothing known yet", add(x, "vxlan100"), true, wire.ResultUnchanged)
	step("re-inject, known", add(x, "vxlan100"), false, wire.ResultUnchanged)
	step("move", add(x, "vxlan101"), true, wire.ResultMoved)
	step("re-inject after the move", add(x, "vxlan101"), false, wire.ResultUnchanged)
	step("back again", add(x, "vxlan100"), true, wire.ResultMoved)

	fake.Remove(x) // by hand, and the watch says so
	r.WatchReport(false, []netip.Prefix{x})
	step("re-inject after the watch reported it", add(x, "vxlan100"), true, wire.ResultCreated)
	step("re-inject, known again", add(x, "vxlan100"), false, wire.ResultUnchanged)

	r.WatchReport(false, []netip.Prefix{y}) // another prefix's report leaves x known
	step("re-inject after another prefix's report", add(x, "vxlan100"), false, wire.ResultUnchanged)

	r.WatchReport(true, nil) // the helper lost track: everything is asked again
	step("re-inject after a resync report", add(x, "vxlan100"), true, wire.ResultUnchanged)
	step("re-inject, known after it", add(x, "vxlan100"), false, wire.ResultUnchanged)

	// A report that comes while the request is out: the answer may
	// predate it, so it does not count.
	h.during = func(int) { r.WatchReport(false, []netip.Prefix{y}) }
	step("add of y, with a report meanwhile", add(y, "vxlan100"), true, wire.ResultCreated)
	h.during = nil
	step("re-inject of y", add(y, "vxlan100"), true, wire.ResultUnchanged)
	step("re-inject of y, known", add(y, "vxlan100"), false, wire.ResultUnchanged)

	step("a route held by a foreign one", add(z, "vxlan100"), true, wire.ResultNone)
	step("again", add(z, "vxlan100"), true, wire.ResultNone)

	step("re-inject of an adopted route (confirms it)", add(a, "vxlan100"), true, wire.ResultUnchanged)
	if r.routes.isAdopted(a) {
		t.Errorf("%v still adopted after the agent's InjectRoute", a)
	}
	step("re-inject of it, confirmed and known", add(a, "vxlan100"), false, wire.ResultUnchanged)

	step("remove y", route.Route{Dst: y}, true, wire.ResultDeleted)
	step("add y again", add(y, "vxlan100"), true, wire.ResultCreated)

	if got := r.known(); got != 3 {
		t.Errorf("known: %d routes, want 3 (x, y, a)", got)
	}
	r.WatchEnded()
	if got := r.known(); got != 0 {
		t.Errorf("known after the watch ended: %d, want 0", got)
	}
	step("re-inject after the watch ended", add(x, "vxlan100"), true, wire.ResultUnchanged)
	step("and again: no watch, nothing known", add(x, "vxlan100"), true, wire.ResultUnchanged)
}
