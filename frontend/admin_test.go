package frontend

import (
	"context"
	"fmt"
	"io"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/quiltmesh/quilt-runtime/proto/quiltpb"
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func TestAdminIPAM(t *testing.T) {
	svc := newService(t, &fakeHelper{routes: map[netip.Prefix]string{}}, io.Discard)
	conn := serveConn(t, &Admin{Service: svc})
	adm, rt := quiltpb.NewQuiltAdminClient(conn), quiltpb.NewQuiltRuntimeClient(conn)
	ctx := context.Background()
	code := func(err error) codes.Code { return status.Code(err) }

	if _, err := adm.AllocateIP(ctx, &quiltpb.AllocateIPRequest{ContainerId: "c1"}); code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "ConfigureNodeSubnet") {
		t.Fatalf("before a subnet: %v", err)
	}
	if r, err := rt.ConfigureNodeSubnet(ctx, &quiltpb.ConfigureNodeSubnetRequest{Subnet: "10.42.1.0/24"}); err != nil || !r.Success {
		t.Fatal(r, err)
	}
	a, err := adm.AllocateIP(ctx, &quiltpb.AllocateIPRequest{ContainerId: "c1"})
	if err != nil || a.Ip != "10.42.1.10" || a.PrefixLength != 24 || a.Gateway != "10.42.1.1" || a.Subnet != "10.42.1.0/24" || a.Existing {
		t.Fatalf("allocate: %v %v", a, err)
	}
	if a, err := adm.AllocateIP(ctx, &quiltpb.AllocateIPRequest{ContainerId: "c1"}); err != nil || a.Ip != "10.42.1.10" || !a.Existing {
		t.Fatalf("allocate again: %v %v", a, err)
	}
	adm.AllocateIP(ctx, &quiltpb.AllocateIPRequest{ContainerId: "c2"})
	for _, bad := range []string{"", "a b", strings.Repeat("x", 129), "../etc", "c1\n"} {
		if _, err := adm.AllocateIP(ctx, &quiltpb.AllocateIPRequest{ContainerId: bad}); code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "container_id") {
			t.Errorf("allocate %q: %v", bad, err)
		}
		if _, err := adm.ReleaseIP(ctx, &quiltpb.ReleaseIPRequest{ContainerId: bad}); code(err) != codes.InvalidArgument {
			t.Errorf("release %q: %v", bad, err)
		}
	}
	r, err := rt.ConfigureNodeSubnet(ctx, &quiltpb.ConfigureNodeSubnetRequest{Subnet: "10.42.9.0/24"})
	if err != nil || r.Success || !strings.Contains(r.Error, "10.42.1.0/24") || !strings.Contains(r.Error, "2 container IPs") {
		t.Fatalf("move with live allocations: %v %v", r, err)
	}
	l, err := adm.ListAllocations(ctx, &quiltpb.ListAllocationsRequest{})
	if err != nil || l.Subnet != "10.42.1.0/24" || l.RangeFirst != "10.42.1.10" || l.RangeLast != "10.42.1.254" || len(l.Allocations) != 2 ||
		l.Allocations[0].ContainerId != "c1" || l.Allocations[1].Ip != "10.42.1.11" {
		t.Fatalf("list: %v %v", l, err)
	}
	if rel, err := adm.ReleaseIP(ctx, &quiltpb.ReleaseIPRequest{ContainerId: "c1"}); err != nil || !rel.Released || rel.Ip != "10.42.1.10" {
		t.Fatalf("release: %v %v", rel, err)
	}
	if rel, err := adm.ReleaseIP(ctx, &quiltpb.ReleaseIPRequest{ContainerId: "c1"}); err != nil || rel.Released {
		t.Fatalf("release again: %v %v", rel, err)
	}
}

// TestAdminInterfacesAndGC: AllocateIP keys by container and interface,
// lists the interface and network beside each address, and
// GarbageCollectIPs releases the network's allocations no valid attachment
// names once past the grace period, refusing bad input with nothing changed.
func TestAdminInterfacesAndGC(t *testing.T) {
	svc := newService(t, &fakeHelper{routes: map[netip.Prefix]string{}}, io.Discard)
	conn := serveConn(t, &Admin{Service: svc})
	adm, rt := quiltpb.NewQuiltAdminClient(conn), quiltpb.NewQuiltRuntimeClient(conn)
	ctx := context.Background()
	if r, err := rt.ConfigureNodeSubnet(ctx, &quiltpb.ConfigureNodeSubnetRequest{Subnet: "10.42.1.0/24"}); err != nil || !r.Success {
		t.Fatal(r, err)
	}
	alloc := func(id, ifname, network string) *quiltpb.AllocateIPResponse {
		t.Helper()
		r, err := adm.AllocateIP(ctx, &quiltpb.AllocateIPRequest{ContainerId: id, InterfaceName: ifname, Network: network})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	eth0, eth1 := alloc("c1", "eth0", "quilt"), alloc("c1", "eth1", "quilt")
	if eth0.Ip == eth1.Ip || eth0.ClusterCidr != "10.42.0.0/16" || alloc("c1", "eth1", "quilt").Ip != eth1.Ip {
		t.Fatalf("two interfaces: %v, %v", eth0, eth1)
	}
	alloc("c2", "eth0", "quilt")
	alloc("admin", "", "")
	l, err := adm.ListAllocations(ctx, &quiltpb.ListAllocationsRequest{ContainerId: "c1"})
	if err != nil || len(l.Allocations) != 2 || l.Allocations[0].InterfaceName != "eth0" || l.Allocations[1].InterfaceName != "eth1" ||
		l.Allocations[0].Network != "quilt" {
		t.Fatalf("list c1: %v %v", l, err)
	}
	for _, bad := range []*quiltpb.GarbageCollectIPsRequest{
		{},
		{Network: "a b"},
		{Network: "quilt", GraceSeconds: -1},
		{Network: "quilt", Valid: []*quiltpb.Attachment{{ContainerId: "c1", InterfaceName: "a/b"}}},
		{Network: "quilt", Valid: []*quiltpb.Attachment{{ContainerId: "", InterfaceName: "eth0"}}},
	} {
		if _, err := adm.GarbageCollectIPs(ctx, bad); status.Code(err) != codes.InvalidArgument {
			t.Errorf("GC %v: %v", bad, err)
		}
	}
	if svc.IPAM.Count() != 4 {
		t.Fatalf("refused GCs changed allocations: %v", svc.IPAM.List())
	}
	valid := []*quiltpb.Attachment{{ContainerId: "c1", InterfaceName: "eth0"}}
	if r, err := adm.GarbageCollectIPs(ctx, &quiltpb.GarbageCollectIPsRequest{Network: "quilt", Valid: valid, GraceSeconds: 3600}); err != nil || len(r.Released) != 0 || r.Kept != 3 {
		t.Fatalf("GC within the grace period: %v %v", r, err)
	}
	r, err := adm.GarbageCollectIPs(ctx, &quiltpb.GarbageCollectIPsRequest{Network: "quilt", Valid: valid})
	if err != nil || len(r.Released) != 2 || r.Kept != 1 || r.Released[0].Ip != eth1.Ip || r.Released[0].InterfaceName != "eth1" || r.Released[1].ContainerId != "c2" {
		t.Fatalf("GC: %v %v", r, err)
	}
	l, _ = adm.ListAllocations(ctx, &quiltpb.ListAllocationsRequest{})
	if len(l.Allocations) != 2 || l.Allocations[0].Ip != eth0.Ip || l.Allocations[1].ContainerId != "admin" {
		t.Fatalf("after GC: %v", l)
	}
}

// TestConfigureRefusesRoutedSubnet: a subnet already routed to a peer
// cannot become this node's.
func TestConfigureRefusesRoutedSubnet(t *testing.T) {
	svc := newService(t, &fakeHelper{routes: map[netip.Prefix]string{}}, io.Discard)
	c := serve(t, svc)
	ctx := context.Background()
	c.InjectRoute(ctx, &quiltpb.InjectRouteRequest{Destination: "10.42.2.0/24", ViaInterface: "vxlan100"})
	r, err := c.ConfigureNodeSubnet(ctx, &quiltpb.ConfigureNodeSubnetRequest{Subnet: "10.42.2.0/24"})
	if err != nil || r.Success || !strings.Contains(r.Error, "routed to a peer") || svc.Subnet().IsValid() {
		t.Fatalf("%v %v", r, err)
	}
}

// TestInjectRecordsFirst: with the helper down, InjectRoute fails but the
// route is recorded, and RemoveRoute's removal too; a resync then makes the
// kernel match.
func TestInjectRecordsFirst(t *testing.T) {
	fake := &fakeHelper{routes: map[netip.Prefix]string{pfx("10.42.3.0/24"): "vxlan100"}, err: ErrUnavailable}
	svc := newService(t, fake, io.Discard)
	svc.Routes.Set(pfx("10.42.3.0/24"), "vxlan100")
	c := serve(t, svc)
	ctx := context.Background()
	r, err := c.InjectRoute(ctx, &quiltpb.InjectRouteRequest{Destination: "10.42.2.0/24", ViaInterface: "vxlan100"})
	if err != nil || r.Success || !strings.Contains(r.Error, "route helper unavailable") || !strings.Contains(r.Error, "recorded") {
		t.Fatalf("inject without helper: %v %v", r, err)
	}
	rr, err := c.RemoveRoute(ctx, &quiltpb.RemoveRouteRequest{Destination: "10.42.3.0/24"})
	if err != nil || rr.Success || !strings.Contains(rr.Error, "recorded") {
		t.Fatalf("remove without helper: %v %v", rr, err)
	}
	if got := svc.Routes.All(); len(got) != 1 || got[pfx("10.42.2.0/24")] != "vxlan100" {
		t.Fatalf("desired after both: %v", got)
	}
	if res := svc.Resync(ctx); res.Err == nil || res.OK() {
		t.Fatalf("resync without helper: %+v", res)
	}
	fake.mu.Lock()
	fake.err = nil
	fake.mu.Unlock()
	res := svc.Resync(ctx)
	if !res.OK() || res.Added != 1 || res.Removed != 1 || res.Installed != 1 {
		t.Fatalf("resync: %+v", res)
	}
	if len(fake.routes) != 1 || fake.routes[pfx("10.42.2.0/24")] != "vxlan100" {
		t.Fatalf("kernel after resync: %v", fake.routes)
	}
	// Invalid input is refused and records nothing.
	c.InjectRoute(ctx, &quiltpb.InjectRouteRequest{Destination: "10.42.5.0/24", ViaInterface: "eth0"})
	c.InjectRoute(ctx, &quiltpb.InjectRouteRequest{Destination: "10.42.5.1/24", ViaInterface: "vxlan100"})
	if svc.Routes.Len() != 1 {
		t.Fatalf("refused requests were recorded: %v", svc.Routes.All())
	}
}

// TestResyncAndViews: every kind of drift is repaired or reported, and the
// admin views and metrics say so.
func TestResyncAndViews(t *testing.T) {
	fake := &fakeHelper{routes: map[netip.Prefix]string{
		pfx("10.42.2.0/24"): "vxlan100", // desired, in sync
		pfx("10.42.4.0/24"): "vxlan200", // desired via vxlan100: moved
		pfx("10.42.9.0/24"): "vxlan100", // not desired: stray
	}, conflict: map[netip.Prefix]bool{pfx("10.42.5.0/24"): true}}
	svc := newService(t, fake, io.Discard)
	svc.Policy.Interfaces = []string{"vxlan100", "vxlan200"}
	for _, d := range []string{"10.42.2.0/24", "10.42.3.0/24", "10.42.4.0/24", "10.42.5.0/24"} {
		svc.Routes.Set(pfx(d), "vxlan100")
	}
	adm := &Admin{Service: svc, Version: "v-test"}
	conn := serveConn(t, adm)
	ac := quiltpb.NewQuiltAdminClient(conn)
	ctx := context.Background()

	lr, err := ac.ListRoutes(ctx, &quiltpb.ListRoutesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	want := "10.42.2.0/24 vxlan100 vxlan100 ROUTE_STATE_IN_SYNC\n10.42.3.0/24 vxlan100  ROUTE_STATE_MISSING\n" +
		"10.42.4.0/24 vxlan100 vxlan200 ROUTE_STATE_MISROUTED\n10.42.5.0/24 vxlan100  ROUTE_STATE_MISSING\n10.42.9.0/24  vxlan100 ROUTE_STATE_STRAY\n"
	if got := routeTable(lr); got != want {
		t.Fatalf("before resync:\n%s\nwant:\n%s", got, want)
	}
	// Before any resync, the status shows what the helper holds now.
	st, err := ac.GetStatus(ctx, &quiltpb.GetStatusRequest{})
	if err != nil || st.InstalledRoutesNow != 3 || st.InSyncRoutesNow != 1 || st.RoutesNowError != "" || st.InstalledRoutes != 0 || st.LastResync.Time != "" {
		t.Fatalf("status before resync: %v %v", st, err)
	}
	res := svc.Resync(ctx)
	if res.Added != 1 || res.Moved != 1 || res.Removed != 1 || res.Conflicts != 1 || res.Failed != 0 || res.OK() || res.Installed != 3 {
		t.Fatalf("resync: %+v", res)
	}
	lr, _ = ac.ListRoutes(ctx, &quiltpb.ListRoutesRequest{})
	want = "10.42.2.0/24 vxlan100 vxlan100 ROUTE_STATE_IN_SYNC\n10.42.3.0/24 vxlan100 vxlan100 ROUTE_STATE_IN_SYNC\n" +
		"10.42.4.0/24 vxlan100 vxlan100 ROUTE_STATE_IN_SYNC\n10.42.5.0/24 vxlan100  ROUTE_STATE_CONFLICT\n"
	if got := routeTable(lr); got != want {
		t.Fatalf("after resync:\n%s\nwant:\n%s", got, want)
	}
	svc.SetHelperHealth(nil)
	st, err = ac.GetStatus(ctx, &quiltpb.GetStatusRequest{})
	if err != nil || st.Version != "v-test" || st.DesiredRoutes != 4 || st.InstalledRoutes != 3 || !st.HelperAvailable ||
		st.LastResync.Conflicts != 1 || st.LastResync.Added != 1 || st.LastResync.Ok || st.LastResync.Time == "" ||
		st.InstalledRoutesNow != 3 || st.InSyncRoutesNow != 3 {
		t.Fatalf("status: %v %v", st, err)
	}
	rec := httptest.NewRecorder()
	m := NewMetrics()
	m.Observe(adm)
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for _, line := range []string{"quilt_route_conflicts 1\n", "quilt_routes_desired 4\n", "quilt_routes_installed 3\n", "quilt_helper_up 1\n",
		`quilt_resync_repairs_total{kind="added",trigger="resync"} 1` + "\n", "quilt_resyncs_total 1\n", "# TYPE quilt_resyncs_total counter\n"} {
		if !strings.Contains(rec.Body.String(), line) {
			t.Errorf("metrics lack %q:\n%s", line, rec.Body.String())
		}
	}
	// The foreign route goes: the next resync adds ours, the conflict clears.
	fake.conflict = nil
	if res := svc.Resync(ctx); !res.OK() || res.Added != 1 || svc.Conflicts() != 0 {
		t.Fatalf("after the foreign route left: %+v", res)
	}
	// Without the helper, the routes held now are unknown, and say why.
	fake.err = fmt.Errorf("%w: test", ErrUnavailable)
	st, err = ac.GetStatus(ctx, &quiltpb.GetStatusRequest{})
	if err != nil || st.InstalledRoutesNow != 0 || !strings.Contains(st.RoutesNowError, "route helper unavailable: test") || st.InstalledRoutes != 4 {
		t.Fatalf("status without the helper: %v %v", st, err)
	}
}

func routeTable(lr *quiltpb.ListRoutesResponse) string {
	var b strings.Builder
	for _, r := range lr.Routes {
		b.WriteString(r.Destination + " " + r.DesiredInterface + " " + r.InstalledInterface + " " + r.State.String() + "\n")
	}
	return b.String()
}

// TestBatchRoutes: ApplyRoutes and SyncRoutes validate everything first,
// apply in one go, and answer each route in place.
func TestBatchRoutes(t *testing.T) {
	fake := &fakeHelper{routes: map[netip.Prefix]string{}, conflict: map[netip.Prefix]bool{pfx("10.42.9.0/24"): true}}
	svc := newService(t, fake, io.Discard)
	conn := serveConn(t, &Admin{Service: svc})
	ac, rt := quiltpb.NewQuiltAdminClient(conn), quiltpb.NewQuiltRuntimeClient(conn)
	ctx := context.Background()
	rt.ConfigureNodeSubnet(ctx, &quiltpb.ConfigureNodeSubnetRequest{Subnet: "10.42.1.0/24"})
	apply := func(msgs ...[]*quiltpb.RouteChange) (*quiltpb.ApplyRoutesResponse, error) {
		st, err := ac.ApplyRoutes(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			if err := st.Send(&quiltpb.ApplyRoutesRequest{Changes: m}); err != nil {
				t.Fatal(err)
			}
		}
		return st.CloseAndRecv()
	}
	ch := func(dst, via string) *quiltpb.RouteChange {
		return &quiltpb.RouteChange{Destination: dst, ViaInterface: via}
	}

	// 200 adds over two messages (one of them held by a foreign route),
	// and a delete of nothing.
	var adds []*quiltpb.RouteChange
	for i := range 200 {
		adds = append(adds, ch(fmt.Sprintf("10.42.%d.0/24", 2+i), "vxlan100"))
	}
	resp, err := apply(adds[:150], append(slices.Clone(adds[150:]), ch("10.42.9.0/24", "vxlan100")))
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "appears twice") || svc.Routes.Len() != 0 || len(fake.routes) != 0 {
		t.Fatalf("duplicate: %v %v; desired %d, kernel %d", resp, err, svc.Routes.Len(), len(fake.routes))
	}
	resp, err = apply(adds[:150], append(adds[150:], ch("10.42.250.0/24", "")))
	if err != nil || len(resp.Results) != 201 || resp.Failed != 1 {
		t.Fatalf("apply: %v %v", resp, err)
	}
	if r := resp.Results[7]; r.Result != quiltpb.RouteResult_ROUTE_RESULT_FAILED || !strings.Contains(r.Error, "not managed by quilt") || r.Destination != "10.42.9.0/24" {
		t.Errorf("conflict result: %v", r)
	}
	if r := resp.Results[0]; r.Result != quiltpb.RouteResult_ROUTE_RESULT_CREATED || r.Destination != "10.42.2.0/24" {
		t.Errorf("first result: %v", r)
	}
	if r := resp.Results[200]; r.Result != quiltpb.RouteResult_ROUTE_RESULT_UNCHANGED || r.Destination != "10.42.250.0/24" {
		t.Errorf("delete of nothing: %v", r)
	}
	if svc.Routes.Len() != 200 || len(fake.routes) != 199 || svc.Conflicts() != 1 {
		t.Fatalf("desired %d, kernel %d, conflicts %d", svc.Routes.Len(), len(fake.routes), svc.Conflicts())
	}
	// One bad change anywhere: nothing applied, the error names it.
	for _, bad := range [][]*quiltpb.RouteChange{
		{ch("10.42.230.0/24", "vxlan100"), ch("10.42.231.1/24", "vxlan100")},
		{ch("10.42.230.0/24", "eth0")},
		{ch("10.42.1.0/24", "vxlan100")},
	} {
		if _, err := apply(bad); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "changes[") {
			t.Errorf("%v: %v", bad, err)
		}
	}
	if _, err := apply(make([]*quiltpb.RouteChange, MaxChangesPerMessage+1)); status.Code(err) != codes.InvalidArgument {
		t.Errorf("an oversized message: %v", err)
	}
	if svc.Routes.Len() != 200 {
		t.Fatal("a refused batch changed the desired routes")
	}

	// Sync to 3 routes: the other 197 go.
	st, _ := ac.SyncRoutes(ctx)
	st.Send(&quiltpb.SyncRoutesRequest{Routes: []*quiltpb.RouteChange{ch("10.42.2.0/24", "vxlan100"), ch("10.42.3.0/24", "vxlan100"), ch("10.42.240.0/24", "vxlan100")}})
	resp, err = st.CloseAndRecv()
	if err != nil || len(resp.Results) != 3+198 || resp.Results[2].Result != quiltpb.RouteResult_ROUTE_RESULT_CREATED ||
		resp.Results[0].Result != quiltpb.RouteResult_ROUTE_RESULT_UNCHANGED || resp.Results[3].Result != quiltpb.RouteResult_ROUTE_RESULT_DELETED {
		t.Fatalf("sync: %d results (%v), want 3 then 198 removals; %v", len(resp.GetResults()), resp.GetResults()[:min(4, len(resp.GetResults()))], err)
	}
	if svc.Routes.Len() != 3 || len(fake.routes) != 3 || svc.Conflicts() != 0 {
		t.Fatalf("after sync: desired %d, kernel %d, conflicts %d", svc.Routes.Len(), len(fake.routes), svc.Conflicts())
	}
	st, _ = ac.SyncRoutes(ctx)
	st.Send(&quiltpb.SyncRoutesRequest{Routes: []*quiltpb.RouteChange{ch("10.42.2.0/24", "")}})
	if _, err := st.CloseAndRecv(); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "via_interface") {
		t.Errorf("sync without an interface: %v", err)
	}
}
