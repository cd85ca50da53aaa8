package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/quiltmesh/quilt-runtime/frontend/api"
	"github.com/quiltmesh/quilt-runtime/frontend/internal/testkit"
	"github.com/quiltmesh/quilt-runtime/frontend/internal/testnode"
	"github.com/quiltmesh/quilt-runtime/frontend/route"
	"github.com/quiltmesh/quilt-runtime/internal/testutil"
	"github.com/quiltmesh/quilt-runtime/proto/quiltpb"
)

// logBuffer collects JSON log lines while goroutines write them; take
// reads them from the test's goroutine.
type logBuffer struct {
	testutil.LogBuffer
	taken int
}

// take returns the lines written since the last take as "LEVEL msg".
func (b *logBuffer) take(t *testing.T) []string {
	t.Helper()
	all := b.String()
	fresh := all[b.taken:]
	b.taken = len(all)
	var out []string
	for _, line := range strings.Split(strings.TrimSpace(fresh), "\n") {
		var rec struct{ Level, Msg string }
		if line == "" {
			continue
		}
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		out = append(out, rec.Level+" "+rec.Msg)
	}
	return out
}

// debugNode is a node routing via vxlan100 and vxlan101 whose log, at
// DEBUG, goes to the buffer as JSON, from the first call on.
func debugNode(t *testing.T, fake *testkit.Helper, log *logBuffer, routes ...route.Route) *api.Node {
	t.Helper()
	pol := testkit.Policy
	pol.Interfaces = []string{"vxlan100", "vxlan101"}
	n := testnode.Open(t, api.NodeConfig{Policy: pol, Helper: fake, StateDir: testkit.StateDir(t, routes...),
		Log: slog.New(slog.NewJSONHandler(log, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	log.take(t) // the start's
	return n
}

// TestCallLogLevels: every call that changes something or fails is logged
// at INFO (the request as the agent made it, then what changed, or a WARN
// saying why it failed); a call that finds everything as asked only at
// DEBUG; and the summary counts them all.
func TestCallLogLevels(t *testing.T) {
	fake := testkit.New(via("10.42.4.0/24")) // in the kernel, not desired
	log := &logBuffer{}
	n := debugNode(t, fake, log)
	conn := testnode.Serve(t, n, api.Info{})
	rt, ac := quiltpb.NewQuiltRuntimeClient(conn), quiltpb.NewQuiltAdminClient(conn)
	ctx := context.Background()
	configure := func(subnet string) {
		rt.ConfigureNodeSubnet(ctx, &quiltpb.ConfigureNodeSubnetRequest{Subnet: subnet})
	}
	inject := func(dst, via string) {
		rt.InjectRoute(ctx, &quiltpb.InjectRouteRequest{Destination: dst, ViaInterface: via})
	}
	remove := func(dst string) {
		rt.RemoveRoute(ctx, &quiltpb.RemoveRouteRequest{Destination: dst})
	}
	apply := func(changes ...*quiltpb.RouteChange) {
		st, err := ac.ApplyRoutes(ctx)
		if err == nil {
			err = st.Send(&quiltpb.ApplyRoutesRequest{Changes: changes})
		}
		if err != nil {
			t.Fatal(err)
		}
		st.CloseAndRecv()
	}
	for _, step := range []struct {
		call func()
		want []string
	}{
		{func() { configure("10.42.1.0/24") }, []string{"INFO RPC: ConfigureNodeSubnet(subnet=10.42.1.0/24)", "INFO IPAM configured with subnet: 10.42.1.0/24"}},
		{func() { configure("10.42.1.0/24") }, []string{"DEBUG RPC: ConfigureNodeSubnet(subnet=10.42.1.0/24)", "DEBUG IPAM already configured with subnet: 10.42.1.0/24"}},
		{func() { configure("10.42.1.1/24") }, []string{"INFO RPC: ConfigureNodeSubnet(subnet=10.42.1.1/24)", "WARN ConfigureNodeSubnet failed"}},
		{func() { inject("10.42.2.0/24", "vxlan100") }, []string{"INFO RPC: InjectRoute(destination=10.42.2.0/24, via=vxlan100)", "INFO Added route: 10.42.2.0/24 dev vxlan100"}},
		{func() { inject("10.42.2.0/24", "vxlan100") }, []string{"DEBUG RPC: InjectRoute(destination=10.42.2.0/24, via=vxlan100)", "DEBUG Route already present: 10.42.2.0/24 dev vxlan100"}},
		{func() { inject("10.42.2.0/24", "vxlan101") }, []string{"INFO RPC: InjectRoute(destination=10.42.2.0/24, via=vxlan101)", "INFO Moved route: 10.42.2.0/24 dev vxlan101"}},
		{func() { inject("10.42.3.0/24", "eth0") }, []string{"INFO RPC: InjectRoute(destination=10.42.3.0/24, via=eth0)", "WARN InjectRoute failed"}},
		// Already in the kernel but newly desired: the state file changed.
		{func() { inject("10.42.4.0/24", "vxlan100") }, []string{"INFO RPC: InjectRoute(destination=10.42.4.0/24, via=vxlan100)", "INFO Route already present: 10.42.4.0/24 dev vxlan100"}},
		{func() { remove("10.42.2.0/24") }, []string{"INFO RPC: RemoveRoute(destination=10.42.2.0/24)", "INFO Removed route: 10.42.2.0/24"}},
		{func() { remove("10.42.2.0/24") }, []string{"DEBUG RPC: RemoveRoute(destination=10.42.2.0/24)", "DEBUG Route already absent: 10.42.2.0/24"}},
		// Desired but gone from the kernel: the state file changed.
		{func() { fake.Remove(pfx("10.42.4.0/24")); remove("10.42.4.0/24") }, []string{"INFO RPC: RemoveRoute(destination=10.42.4.0/24)", "INFO Route already absent: 10.42.4.0/24"}},
		{func() { apply(&quiltpb.RouteChange{Destination: "10.42.5.0/24", ViaInterface: "vxlan100"}) }, []string{"INFO ApplyRoutes: 1 changes"}},
		{func() { apply(&quiltpb.RouteChange{Destination: "10.42.5.0/24", ViaInterface: "vxlan100"}) }, []string{"DEBUG ApplyRoutes: 1 changes"}},
		{func() { apply(&quiltpb.RouteChange{Destination: "10.42.5.1/24", ViaInterface: "vxlan100"}) }, []string{"WARN ApplyRoutes refused"}},
	} {
		step.call()
		if got := log.take(t); strings.Join(got, "\n") != strings.Join(step.want, "\n") {
			t.Errorf("logged:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(step.want, "\n  "))
		}
	}
	api.Summarize(n, time.Now())
	want := "route calls in the last "
	if got := log.take(t); len(got) != 1 || !strings.HasPrefix(got[0], "INFO "+want) || !strings.HasSuffix(got[0], ": 14 (4 found everything as asked, 7 changed something, 3 failed)") {
		t.Errorf("summary: %q, want one INFO line %q... counting 14 calls, 4 no-ops, 7 changes, 3 failures", got, want)
	}
	api.Summarize(n, time.Now())
	if got := log.take(t); len(got) != 0 {
		t.Errorf("a summary of no calls: %q, want no line", got)
	}
}

// TestSummaryLoop: the loop logs the summary each interval, counting the
// calls since the previous one.
func TestSummaryLoop(t *testing.T) {
	log := &logBuffer{}
	n := debugNode(t, testkit.New(), log)
	rt := runtimeClient(t, n)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { n.SummaryLoop(ctx, 10*time.Millisecond); close(done) }()
	defer func() { cancel(); <-done }()
	for range 3 {
		rt.InjectRoute(ctx, &quiltpb.InjectRouteRequest{Destination: "10.42.2.0/24", ViaInterface: "vxlan100"})
	}
	var summaries []string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		for _, l := range log.take(t) {
			if strings.Contains(l, "route calls in the last") {
				summaries = append(summaries, l)
			}
		}
		var sum [4]int // calls, unchanged, changed, failed
		for _, s := range summaries {
			var n [4]int
			fmt.Sscanf(s[strings.LastIndex(s, ": ")+2:], "%d (%d found everything as asked, %d changed something, %d failed)", &n[0], &n[1], &n[2], &n[3])
			for i := range n {
				sum[i] += n[i]
			}
		}
		if sum == [4]int{3, 2, 1, 0} {
			break
		}
		if sum[0] >= 3 || time.Now().After(deadline) {
			t.Fatalf("summaries %q, want 3 calls counted: 2 no-ops, 1 change", summaries)
		}
	}
}

// TestWatchRepairLog: a repair the watch asked for is logged as a
// resync's repairs are, INFO only when it changed something or found a
// conflict, and counted for the summary only then.
func TestWatchRepairLog(t *testing.T) {
	fake := testkit.New(via("10.42.3.0/24"))
	fake.Conflict(pfx("10.42.4.0/24"))
	log := &logBuffer{}
	n := debugNode(t, fake, log, via("10.42.2.0/24"), via("10.42.3.0/24"), via("10.42.4.0/24"))
	ctx := context.Background()
	for _, step := range []struct {
		changed []string
		want    []string
	}{
		// Desired, gone from the kernel: put back.
		{[]string{"10.42.2.0/24"}, []string{"INFO resync: re-added missing route 10.42.2.0/24 dev vxlan100", "INFO watch: done"}},
		// Desired, in line already; not desired: nothing to do.
		{[]string{"10.42.3.0/24", "10.42.9.0/24"}, []string{"DEBUG watch: in sync"}},
		// Desired, held by a foreign route: reported, left alone.
		{[]string{"10.42.4.0/24"}, []string{"WARN resync: desired route is held by a route that is not quilt's; left alone", "INFO watch: done"}},
	} {
		var changed []netip.Prefix
		for _, c := range step.changed {
			changed = append(changed, pfx(c))
		}
		n.RepairChanged(ctx, changed)
		if got := log.take(t); strings.Join(got, "\n") != strings.Join(step.want, "\n") {
			t.Errorf("repair of %v logged:\n  %s\nwant:\n  %s", step.changed, strings.Join(got, "\n  "), strings.Join(step.want, "\n  "))
		}
	}
	if routes := fake.Routes(); routes[pfx("10.42.2.0/24")] != "vxlan100" {
		t.Errorf("10.42.2.0/24 not repaired: %v", routes)
	}
	api.Summarize(n, time.Now())
	if got := log.take(t); len(got) != 1 || !strings.HasSuffix(got[0], ": 2 (0 found everything as asked, 1 changed something, 1 failed)") {
		t.Errorf("summary: %q, want 2 repairs counted: 1 change, 1 failure", got)
	}
}
