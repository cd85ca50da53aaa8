package api_test

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quiltmesh/quilt-runtime/frontend/api"
	"github.com/quiltmesh/quilt-runtime/frontend/internal/testkit"
	"github.com/quiltmesh/quilt-runtime/frontend/internal/testnode"
	"github.com/quiltmesh/quilt-runtime/frontend/ipam"
	"github.com/quiltmesh/quilt-runtime/frontend/route"
	"github.com/quiltmesh/quilt-runtime/proto/quiltpb"
)

// testClock is a clock the test moves.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// TestAdoption: a new state file over a kernel holding routes of ours
// adopts them; they survive resyncs and a restart; those the agent
// confirms become ordinary; those it leaves unconfirmed for the grace
// while it calls are removed; with the agent silent, none is.
func TestAdoption(t *testing.T) {
	ctx := context.Background()
	fake := testkit.New()
	for n := 2; n <= 6; n++ {
		fake.Put(prefixN(n), "vxlan100")
	}
	var log strings.Builder
	clock := &testClock{now: time.Now()}
	cfg := api.NodeConfig{Policy: testkit.Policy, Offsets: ipam.DefaultOffsets, Helper: fake, StateDir: t.TempDir(), Log: slog.New(slog.NewTextHandler(&log, nil)), AdoptGrace: time.Minute, Now: clock.Now}
	n, err := api.OpenNode(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r := n.Routes.Resync(ctx)
	if r.Adopted != 5 || n.Routes.AdoptedLen() != 5 || n.Routes.DesiredLen() != 5 || r.Removed != 0 || r.Held != 0 {
		t.Fatalf("first resync on a new state file: %+v, %d adopted, %d desired", r, n.Routes.AdoptedLen(), n.Routes.DesiredLen())
	}
	if !strings.Contains(log.String(), "resync: adopted route 10.42.2.0/24 dev vxlan100") {
		t.Fatalf("no log line for the adoption:\n%s", log.String())
	}
	// Resyncs with a silent agent change nothing, however long.
	for range 3 {
		clock.advance(time.Hour)
		if r := n.Routes.Resync(ctx); r.Forgotten != 0 || r.Removed != 0 || r.Adopted != 0 {
			t.Fatalf("a resync with the agent silent: %+v", r)
		}
	}
	// A restart keeps the marks: the file is not new, nothing is adopted
	// again, nothing is removed.
	n.Close()
	if n, err = api.OpenNode(cfg); err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if r := n.Routes.Resync(ctx); n.Routes.AdoptedLen() != 5 || r.Adopted != 0 || r.Removed != 0 {
		t.Fatalf("after a restart: %+v, %d adopted", r, n.Routes.AdoptedLen())
	}
	// The agent confirms all but 10.42.6.0/24; once it has been calling
	// for the grace, that one goes.
	c := runtimeClient(t, n)
	for n := 2; n <= 5; n++ {
		if r, err := c.InjectRoute(ctx, &quiltpb.InjectRouteRequest{Destination: prefixN(n).String(), ViaInterface: "vxlan100"}); err != nil || !r.Success {
			t.Fatal(r, err)
		}
	}
	if got := n.Routes.Adopted(); !slices.Equal(got, []netip.Prefix{prefixN(6)}) {
		t.Fatalf("adopted after the agent's confirmations: %v", got)
	}
	clock.advance(time.Second)
	if r := n.Routes.Resync(ctx); r.Forgotten != 0 || r.Removed != 0 {
		t.Fatalf("within the grace: %+v", r)
	}
	clock.advance(2 * time.Minute) // the agent has been calling for two graces
	r = n.Routes.Resync(ctx)
	if r.Forgotten != 1 || r.Removed != 1 || n.Routes.AdoptedLen() != 0 || n.Routes.DesiredLen() != 4 {
		t.Fatalf("after the grace: %+v, %d adopted, %d desired", r, n.Routes.AdoptedLen(), n.Routes.DesiredLen())
	}
	if routes := fake.Routes(); len(routes) != 4 || routes[prefixN(6)] != "" {
		t.Fatalf("the kernel: %v", routes)
	}
	if !strings.Contains(log.String(), "adopted route 10.42.6.0/24 was not confirmed by the agent") {
		t.Fatalf("no log line for the forgotten route:\n%s", log.String())
	}
}

// TestRemovalGuard: a resync removes at most the limit of routes nobody
// asked to remove; past it, none, and it says so; a dry run lists them;
// an explicit ask (SyncRoutes, or a resync that allows removals) removes
// them.
func TestRemovalGuard(t *testing.T) {
	ctx := context.Background()
	fake := testkit.New()
	var log strings.Builder
	var desired []route.Route
	var want []*quiltpb.RouteChange
	for i := range 100 {
		fake.Put(prefixN(i+2), "vxlan100")
		if i < 40 {
			desired = append(desired, route.Route{Dst: prefixN(i + 2), Ifname: "vxlan100"})
			want = append(want, &quiltpb.RouteChange{Destination: prefixN(i + 2).String(), ViaInterface: "vxlan100"})
		}
	}
	n := newNode(t, fake, &log, desired...)
	adm := &api.Admin{Node: n}
	dry, err := adm.Resync(ctx, &quiltpb.ResyncRequest{DryRun: true})
	if err != nil || !dry.RemovalsHeld || len(dry.Remove) != 60 || dry.RemovalLimit != 10 || dry.Result != nil {
		t.Fatalf("dry run: held %v, %d removals, limit %d, %v", dry.GetRemovalsHeld(), len(dry.GetRemove()), dry.GetRemovalLimit(), err)
	}
	r := n.Routes.Resync(ctx)
	if r.Held != 60 || r.Removed != 0 || r.OK() || len(fake.Routes()) != 100 {
		t.Fatalf("a resync past the limit: %+v, %d routes in the kernel", r, len(fake.Routes()))
	}
	if !strings.Contains(log.String(), "held back the removal of 60 routes") {
		t.Fatalf("no log line for the held removals:\n%s", log.String())
	}
	st, _ := adm.GetStatus(ctx, &quiltpb.GetStatusRequest{})
	if st.LastResync.Held != 60 || st.RemovalLimit != 10 || st.LastResync.Ok {
		t.Fatalf("status: %v", st)
	}
	// Under the limit, a resync removes them: 4 strays of 44 installed.
	small := testkit.New()
	for i := range 44 {
		small.Put(prefixN(i+2), "vxlan100")
	}
	if r := newNode(t, small, io.Discard, desired...).Routes.Resync(ctx); r.Removed != 4 || r.Held != 0 {
		t.Fatalf("under the limit: %+v", r)
	}
	// SyncRoutes, an explicit ask, removes what is not in its set.
	conn := testnode.Serve(t, n, api.Info{})
	stream, err := quiltpb.NewQuiltAdminClient(conn).SyncRoutes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&quiltpb.SyncRoutesRequest{Routes: want}); err != nil {
		t.Fatal(err)
	}
	if resp, err := stream.CloseAndRecv(); err != nil || resp.Failed != 0 {
		t.Fatal(resp, err)
	}
	if len(fake.Routes()) != 40 || n.Routes.Resync(ctx).Held != 0 {
		t.Fatalf("after SyncRoutes of the 40: %d routes in the kernel", len(fake.Routes()))
	}
	// An operator's resync that allows removals removes past the limit.
	for i := range 60 {
		fake.Put(prefixN(i+42), "vxlan100")
	}
	if r := n.Routes.Resync(ctx); r.Held != 60 {
		t.Fatalf("60 strays again: %+v", r)
	}
	run, err := adm.Resync(ctx, &quiltpb.ResyncRequest{AllowRemovals: true})
	if err != nil || run.RemovalsHeld || run.Result.Removed != 60 || len(fake.Routes()) != 40 {
		t.Fatalf("a resync allowed to remove: %v %v; %d in the kernel", run, err, len(fake.Routes()))
	}
}
