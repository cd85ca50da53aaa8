package api_test

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/quiltmesh/quilt-runtime/frontend/api"
	"github.com/quiltmesh/quilt-runtime/frontend/helperclient"
	"github.com/quiltmesh/quilt-runtime/frontend/internal/testkit"
	"github.com/quiltmesh/quilt-runtime/frontend/internal/testnode"
	"github.com/quiltmesh/quilt-runtime/frontend/route"
	"github.com/quiltmesh/quilt-runtime/proto/quiltpb"
)

func TestAdminIPAM(t *testing.T) {
	n := newNode(t, testkit.New(), io.Discard)
	conn := testnode.Serve(t, n, api.Info{})
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
	n := newNode(t, testkit.New(), io.Discard)
	conn := testnode.Serve(t, n, api.Info{})
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
	if n.IPAM.Count() != 4 {
		t.Fatalf("refused GCs changed allocations: %v", n.IPAM.List())
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

// TestResyncAndViews: every kind of drift is repaired or reported, and the
// admin views and metrics say so.
func TestResyncAndViews(t *testing.T) {
	fake := testkit.New(
		via("10.42.2.0/24"), // desired, in sync
		route.Route{Dst: pfx("10.42.4.0/24"), Ifname: "vxlan200"}, // desired via vxlan100: moved
		via("10.42.9.0/24"), // not desired: stray
	)
	fake.Conflict(pfx("10.42.5.0/24"))
	pol := testkit.Policy
	pol.Interfaces = []string{"vxlan100", "vxlan200"}
	n := testnode.Open(t, api.NodeConfig{Policy: pol, Helper: fake,
		StateDir: testkit.StateDir(t, via("10.42.2.0/24"), via("10.42.3.0/24"), via("10.42.4.0/24"), via("10.42.5.0/24"))})
	ac := quiltpb.NewQuiltAdminClient(testnode.Serve(t, n, api.Info{Version: "v-test"}))
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
	res := n.Routes.Resync(ctx)
	if res.Added != 1 || res.Moved != 1 || res.Removed != 1 || res.Conflicts != 1 || res.Failed != 0 || res.OK() || res.Installed != 3 {
		t.Fatalf("resync: %+v", res)
	}
	lr, _ = ac.ListRoutes(ctx, &quiltpb.ListRoutesRequest{})
	want = "10.42.2.0/24 vxlan100 vxlan100 ROUTE_STATE_IN_SYNC\n10.42.3.0/24 vxlan100 vxlan100 ROUTE_STATE_IN_SYNC\n" +
		"10.42.4.0/24 vxlan100 vxlan100 ROUTE_STATE_IN_SYNC\n10.42.5.0/24 vxlan100  ROUTE_STATE_CONFLICT\n"
	if got := routeTable(lr); got != want {
		t.Fatalf("after resync:\n%s\nwant:\n%s", got, want)
	}
	n.Helper.Hello(ctx)
	st, err = ac.GetStatus(ctx, &quiltpb.GetStatusRequest{})
	if err != nil || st.Version != "v-test" || st.DesiredRoutes != 4 || st.InstalledRoutes != 3 || !st.HelperAvailable ||
		st.LastResync.Conflicts != 1 || st.LastResync.Added != 1 || st.LastResync.Ok || st.LastResync.Time == "" ||
		st.InstalledRoutesNow != 3 || st.InSyncRoutesNow != 3 {
		t.Fatalf("status: %v %v", st, err)
	}
	// The foreign route goes: the next resync adds ours, the conflict clears.
	fake.Conflict()
	if res := n.Routes.Resync(ctx); !res.OK() || res.Added != 1 || n.Routes.Conflicts() != 0 {
		t.Fatalf("after the foreign route left: %+v", res)
	}
	// Without the helper, the routes held now are unknown, and say why.
	fake.Fail(fmt.Errorf("%w: test", helperclient.ErrUnavailable))
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
