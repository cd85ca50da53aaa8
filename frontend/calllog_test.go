package frontend

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quiltmesh/quilt-runtime/proto/quiltpb"
	"github.com/quiltmesh/quilt-runtime/shared/policy"
)

// logBuffer collects JSON log lines while goroutines write them.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// take returns the lines written since the last take as "LEVEL msg".
func (b *logBuffer) take(t *testing.T) []string {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, line := range strings.Split(strings.TrimSpace(b.buf.String()), "\n") {
		var rec struct{ Level, Msg string }
		if line == "" {
			continue
		}
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		out = append(out, rec.Level+" "+rec.Msg)
	}
	b.buf.Reset()
	return out
}

// debugService is a service whose log, at DEBUG, goes to the buffer as JSON.
func debugService(t *testing.T, fake *fakeHelper, log *logBuffer) *Service {
	t.Helper()
	svc := newService(t, fake, io.Discard)
	svc.Log = slog.New(slog.NewJSONHandler(log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	svc.Policy = policy.Policy{Cluster: testPolicy.Cluster, PrefixLen: 24, Interfaces: []string{"vxlan100", "vxlan101"}}
	return svc
}

// TestCallLogLevels: every call that changes something or fails is logged
// at INFO (the request as the agent made it, then what changed, or a WARN
// saying why it failed); a call that finds everything as asked only at
// DEBUG; and the summary counts them all.
func TestCallLogLevels(t *testing.T) {
	fake := &fakeHelper{routes: map[netip.Prefix]string{pfx("10.42.4.0/24"): "vxlan100"}} // in the kernel, not desired
	log := &logBuffer{}
	svc := debugService(t, fake, log)
	conn := serveConn(t, &Admin{Service: svc})
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
		{func() { delete(fake.routes, pfx("10.42.4.0/24")); remove("10.42.4.0/24") }, []string{"INFO RPC: RemoveRoute(destination=10.42.4.0/24)", "INFO Route already absent: 10.42.4.0/24"}},
		{func() { apply(&quiltpb.RouteChange{Destination: "10.42.5.0/24", ViaInterface: "vxlan100"}) }, []string{"INFO ApplyRoutes: 1 changes"}},
		{func() { apply(&quiltpb.RouteChange{Destination: "10.42.5.0/24", ViaInterface: "vxlan100"}) }, []string{"DEBUG ApplyRoutes: 1 changes"}},
		{func() { apply(&quiltpb.RouteChange{Destination: "10.42.5.1/24", ViaInterface: "vxlan100"}) }, []string{"WARN ApplyRoutes refused"}},
	} {
		step.call()
		if got := log.take(t); strings.Join(got, "\n") != strings.Join(step.want, "\n") {
			t.Errorf("logged:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(step.want, "\n  "))
		}
	}
	svc.summarize(time.Now())
	want := "route calls in the last "
	if got := log.take(t); len(got) != 1 || !strings.HasPrefix(got[0], "INFO "+want) || !strings.HasSuffix(got[0], ": 14 (4 found everything as asked, 7 changed something, 3 failed)") {
		t.Errorf("summary: %q, want one INFO line %q... counting 14 calls, 4 no-ops, 7 changes, 3 failures", got, want)
	}
	svc.summarize(time.Now())
	if got := log.take(t); len(got) != 0 {
		t.Errorf("a summary of no calls: %q, want no line", got)
	}
}

// TestSummaryLoop: the loop logs the summary each interval, counting the
// calls since the previous one.
func TestSummaryLoop(t *testing.T) {
	log := &logBuffer{}
	svc := debugService(t, &fakeHelper{routes: map[netip.Prefix]string{}}, log)
	rt := serve(t, svc)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { svc.SummaryLoop(ctx, 10*time.Millisecond); close(done) }()
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
	fake := &fakeHelper{routes: map[netip.Prefix]string{pfx("10.42.3.0/24"): "vxlan100"}, conflict: map[netip.Prefix]bool{pfx("10.42.4.0/24"): true}}
	log := &logBuffer{}
	svc := debugService(t, fake, log)
	for _, dst := range []string{"10.42.2.0/24", "10.42.3.0/24", "10.42.4.0/24"} {
		if _, err := svc.Routes.Set(pfx(dst), "vxlan100"); err != nil {
			t.Fatal(err)
		}
	}
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
		svc.RepairChanged(ctx, changed)
		if got := log.take(t); strings.Join(got, "\n") != strings.Join(step.want, "\n") {
			t.Errorf("repair of %v logged:\n  %s\nwant:\n  %s", step.changed, strings.Join(got, "\n  "), strings.Join(step.want, "\n  "))
		}
	}
	if fake.routes[pfx("10.42.2.0/24")] != "vxlan100" {
		t.Errorf("10.42.2.0/24 not repaired: %v", fake.routes)
	}
	svc.summarize(time.Now())
	if got := log.take(t); len(got) != 1 || !strings.HasSuffix(got[0], ": 2 (0 found everything as asked, 1 changed something, 1 failed)") {
		t.Errorf("summary: %q, want 2 repairs counted: 1 change, 1 failure", got)
	}
}
