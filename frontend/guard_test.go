package frontend

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/quiltmesh/quilt-runtime/frontend/ipam"
	"github.com/quiltmesh/quilt-runtime/frontend/state"
	"github.com/quiltmesh/quilt-runtime/proto/quiltpb"
)

// serviceIn opens the state file in dir (as a start would) and returns a
// service on it, adopting on its first resync if the file was new, and
// the store to close.
func serviceIn(t *testing.T, dir string, h RouteHelper, log io.Writer) (*Service, *state.Store) {
	t.Helper()
	l := slog.New(slog.NewTextHandler(log, nil))
	store, snap, err := state.Open(dir, l)
	if err != nil {
		t.Fatal(err)
	}
	alloc, err := ipam.NewAllocator(ipam.DefaultOffsets, store, snap.Subnet, snap.Allocations, snap.LastIP)
	if err != nil {
		t.Fatal(err)
	}
	svc := &Service{Policy: testPolicy, Helper: h, IPAM: alloc, Routes: NewDesired(store, snap.Routes, snap.Adopted), Log: l,
		AdoptGrace: time.Minute, adoptPending: snap.Created}
	return svc, store
}

func prefixN(n int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 42, byte(n), 0}), 24)
}

// TestAdoption: a new state file over a kernel holding routes of ours
// adopts them; they survive resyncs and a restart; those the agent
// confirms become ordinary; those it leaves unconfirmed for the grace
// while it calls are removed; with the agent silent, none is.
func TestAdoption(t *testing.T) {
	ctx := context.Background()
	fake := &fakeHelper{routes: map[netip.Prefix]string{}}
	for n := 2; n <= 6; n++ {
		fake.routes[prefixN(n)] = "vxlan100"
	}
	dir := t.TempDir()
	var log strings.Builder
	svc, store := serviceIn(t, dir, fake, &log)
	r := svc.Resync(ctx)
	if r.Adopted != 5 || svc.Routes.AdoptedLen() != 5 || svc.Routes.Len() != 5 || r.Removed != 0 || r.Held != 0 {
		t.Fatalf("first resync on a new state file: %+v, %d adopted, %d desired", r, svc.Routes.AdoptedLen(), svc.Routes.Len())
	}
	if !strings.Contains(log.String(), "resync: adopted route 10.42.2.0/24 dev vxlan100") {
		t.Fatalf("no log line for the adoption:\n%s", log.String())
	}
	// Resyncs with a silent agent change nothing, however long.
	svc.AdoptGrace = time.Nanosecond
	for range 3 {
		if r := svc.Resync(ctx); r.Forgotten != 0 || r.Removed != 0 || r.Adopted != 0 {
			t.Fatalf("a resync with the agent silent: %+v", r)
		}
	}
	// A restart keeps the marks: the file is not new, nothing is adopted
	// again, nothing is removed.
	store.Close()
	svc, store = serviceIn(t, dir, fake, &log)
	defer store.Close()
	if r := svc.Resync(ctx); svc.Routes.AdoptedLen() != 5 || r.Adopted != 0 || r.Removed != 0 {
		t.Fatalf("after a restart: %+v, %d adopted", r, svc.Routes.AdoptedLen())
	}
	// The agent confirms all but 10.42.6.0/24; once it has been calling
	// for the grace, that one goes.
	c := serve(t, svc)
	for n := 2; n <= 5; n++ {
		if r, err := c.InjectRoute(ctx, &quiltpb.InjectRouteRequest{Destination: prefixN(n).String(), ViaInterface: "vxlan100"}); err != nil || !r.Success {
			t.Fatal(r, err)
		}
	}
	if got := svc.Routes.Adopted(); !slices.Equal(got, []netip.Prefix{prefixN(6)}) {
		t.Fatalf("adopted after the agent's confirmations: %v", got)
	}
	svc.AdoptGrace = time.Hour
	if r := svc.Resync(ctx); r.Forgotten != 0 || r.Removed != 0 {
		t.Fatalf("within the grace: %+v", r)
	}
	svc.mu.Lock()
	svc.agentSince = time.Now().Add(-2 * time.Hour) // the agent has been calling for two graces
	svc.mu.Unlock()
	r = svc.Resync(ctx)
	if r.Forgotten != 1 || r.Removed != 1 || svc.Routes.AdoptedLen() != 0 || svc.Routes.Len() != 4 {
		t.Fatalf("after the grace: %+v, %d adopted, %d desired", r, svc.Routes.AdoptedLen(), svc.Routes.Len())
	}
	if _, ok := fake.routes[prefixN(6)]; ok || len(fake.routes) != 4 {
		t.Fatalf("the kernel: %v", fake.routes)
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
	fake := &fakeHelper{routes: map[netip.Prefix]string{}}
	var log strings.Builder
	svc := newService(t, fake, &log)
	var want []*quiltpb.RouteChange
	for n := range 100 {
		fake.routes[prefixN(n+2)] = "vxlan100"
		if n < 40 {
			svc.Routes.Set(prefixN(n+2), "vxlan100")
			want = append(want, &quiltpb.RouteChange{Destination: prefixN(n + 2).String(), ViaInterface: "vxlan100"})
		}
	}
	adm := &Admin{Service: svc}
	dry, err := adm.Resync(ctx, &quiltpb.ResyncRequest{DryRun: true})
	if err != nil || !dry.RemovalsHeld || len(dry.Remove) != 60 || dry.RemovalLimit != 10 || dry.Result != nil {
		t.Fatalf("dry run: held %v, %d removals, limit %d, %v", dry.GetRemovalsHeld(), len(dry.GetRemove()), dry.GetRemovalLimit(), err)
	}
	r := svc.Resync(ctx)
	if r.Held != 60 || r.Removed != 0 || r.OK() || len(fake.routes) != 100 {
		t.Fatalf("a resync past the limit: %+v, %d routes in the kernel", r, len(fake.routes))
	}
	if !strings.Contains(log.String(), "held back the removal of 60 routes") {
		t.Fatalf("no log line for the held removals:\n%s", log.String())
	}
	st, _ := adm.GetStatus(ctx, &quiltpb.GetStatusRequest{})
	if st.LastResync.Held != 60 || st.RemovalLimit != 10 || st.LastResync.Ok {
		t.Fatalf("status: %v", st)
	}
	// Under the limit, a resync removes them: 4 strays of 44 installed.
	small := &fakeHelper{routes: map[netip.Prefix]string{}}
	svc2 := newService(t, small, io.Discard)
	for n := range 44 {
		small.routes[prefixN(n+2)] = "vxlan100"
		if n < 40 {
			svc2.Routes.Set(prefixN(n+2), "vxlan100")
		}
	}
	if r := svc2.Resync(ctx); r.Removed != 4 || r.Held != 0 {
		t.Fatalf("under the limit: %+v", r)
	}
	// SyncRoutes, an explicit ask, removes what is not in its set.
	conn := serveConn(t, adm)
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
	if len(fake.routes) != 40 || svc.Resync(ctx).Held != 0 {
		t.Fatalf("after SyncRoutes of the 40: %d routes in the kernel", len(fake.routes))
	}
	// An operator's resync that allows removals removes past the limit.
	for n := range 60 {
		fake.routes[prefixN(n+42)] = "vxlan100"
	}
	if r := svc.Resync(ctx); r.Held != 60 {
		t.Fatalf("60 strays again: %+v", r)
	}
	run, err := adm.Resync(ctx, &quiltpb.ResyncRequest{AllowRemovals: true})
	if err != nil || run.RemovalsHeld || run.Result.Removed != 60 || len(fake.routes) != 40 {
		t.Fatalf("a resync allowed to remove: %v %v; %d in the kernel", run, err, len(fake.routes))
	}
}

func TestParseRemovalLimit(t *testing.T) {
	for _, tc := range []struct {
		in        string
		installed int
		want      int
	}{
		{"10%", 100, 10}, {"10%", 1000, 100}, {"10%", 20, MinRemovalLimit}, {"25", 1000, 25}, {"0", 100, 0}, {"100%", 7, 7},
	} {
		l, err := ParseRemovalLimit(tc.in)
		if err != nil || l.Of(tc.installed) != tc.want {
			t.Errorf("%s of %d: %v %v, want %d", tc.in, tc.installed, l.Of(tc.installed), err, tc.want)
		}
	}
	for _, bad := range []string{"", "-1", "10 %", "101%", "ten", "1e3"} {
		if _, err := ParseRemovalLimit(bad); err == nil || !strings.Contains(err.Error(), "--resync-max-removals") {
			t.Errorf("%q: %v", bad, err)
		}
	}
	if got := fmt.Sprint(DefaultRemovalLimit); got != "10% (at least 5)" {
		t.Errorf("default: %s", got)
	}
}
