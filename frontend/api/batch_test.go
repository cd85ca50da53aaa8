package api_test

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/quiltmesh/quilt-runtime/frontend/api"
	"github.com/quiltmesh/quilt-runtime/frontend/internal/testkit"
	"github.com/quiltmesh/quilt-runtime/frontend/internal/testnode"
	"github.com/quiltmesh/quilt-runtime/proto/quiltpb"
)

// TestBatchRoutes: ApplyRoutes and SyncRoutes validate everything first,
// apply in one go, and answer each route in place.
func TestBatchRoutes(t *testing.T) {
	fake := testkit.New()
	fake.Conflict(pfx("10.42.9.0/24"))
	n := newNode(t, fake, io.Discard)
	conn := testnode.Serve(t, n, api.Info{})
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
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "appears twice") || n.Routes.DesiredLen() != 0 || len(fake.Routes()) != 0 {
		t.Fatalf("duplicate: %v %v; desired %d, kernel %d", resp, err, n.Routes.DesiredLen(), len(fake.Routes()))
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
	if n.Routes.DesiredLen() != 200 || len(fake.Routes()) != 199 || n.Routes.Conflicts() != 1 {
		t.Fatalf("desired %d, kernel %d, conflicts %d", n.Routes.DesiredLen(), len(fake.Routes()), n.Routes.Conflicts())
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
	if _, err := apply(make([]*quiltpb.RouteChange, api.MaxChangesPerMessage+1)); status.Code(err) != codes.InvalidArgument {
		t.Errorf("an oversized message: %v", err)
	}
	if n.Routes.DesiredLen() != 200 {
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
	if n.Routes.DesiredLen() != 3 || len(fake.Routes()) != 3 || n.Routes.Conflicts() != 0 {
		t.Fatalf("after sync: desired %d, kernel %d, conflicts %d", n.Routes.DesiredLen(), len(fake.Routes()), n.Routes.Conflicts())
	}
	st, _ = ac.SyncRoutes(ctx)
	st.Send(&quiltpb.SyncRoutesRequest{Routes: []*quiltpb.RouteChange{ch("10.42.2.0/24", "")}})
	if _, err := st.CloseAndRecv(); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "via_interface") {
		t.Errorf("sync without an interface: %v", err)
	}
}

// TestBatchFirstRefusal: of several bad changes, the refusal names the
// first in the stream's order, a duplicate as much as an invalid one,
// wherever the stream's messages split them.
func TestBatchFirstRefusal(t *testing.T) {
	ac := quiltpb.NewQuiltAdminClient(testnode.Serve(t, newNode(t, testkit.New(), io.Discard), api.Info{}))
	ch := func(dst string) *quiltpb.RouteChange {
		return &quiltpb.RouteChange{Destination: dst, ViaInterface: "vxlan100"}
	}
	for _, tc := range []struct {
		msgs [][]*quiltpb.RouteChange
		want string
	}{
		{[][]*quiltpb.RouteChange{{ch("10.42.2.0/24"), ch("10.42.3.0/24"), ch("10.42.4.0/24")}, {ch("10.42.3.0/24"), ch("10.42.2.0/24"), ch("10.42.5.1/24")}},
			"changes[3].destination 10.42.3.0/24 appears twice (also changes[1])"},
		{[][]*quiltpb.RouteChange{{ch("10.42.2.0/24"), ch("10.42.5.1/24")}, {ch("10.42.2.0/24")}},
			"changes[1].destination 10.42.5.1/24 has host bits set"},
		{[][]*quiltpb.RouteChange{{ch("10.42.2.0/24")}, {ch("10.42.2.0/24"), {Destination: "10.42.6.0/24", ViaInterface: "eth0"}}},
			"changes[1].destination 10.42.2.0/24 appears twice (also changes[0])"},
	} {
		st, err := ac.ApplyRoutes(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range tc.msgs {
			st.Send(&quiltpb.ApplyRoutesRequest{Changes: m})
		}
		if _, err := st.CloseAndRecv(); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("got %v, want InvalidArgument %q", err, tc.want)
		}
	}
}
