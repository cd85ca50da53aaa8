package bench

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/quiltmesh/quilt-runtime/frontend"
	"github.com/quiltmesh/quilt-runtime/proto/quiltpb"
)

func TestPlan(t *testing.T) {
	p, err := NewPlan(Cluster, NodePrefixLen, 255)
	if err != nil {
		t.Fatal(err)
	}
	summary := func(p Plan) string {
		return fmt.Sprintf("node %v, %d peers %v..%v, capped %v", p.Node, len(p.Peers), p.Peers[0], p.Peers[len(p.Peers)-1], p.Capped)
	}
	if got, want := summary(p), "node 10.0.0.0/24, 255 peers 10.0.1.0/24..10.0.255.0/24, capped false"; got != want {
		t.Fatalf("255 asked:\n got %s\nwant %s", got, want)
	}
	p, err = NewPlan(Cluster, NodePrefixLen, 65536)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := summary(p), "node 10.0.0.0/24, 65535 peers 10.0.1.0/24..10.255.255.0/24, capped true"; got != want {
		t.Fatalf("65,536 asked:\n got %s\nwant %s", got, want)
	}
	seen := map[netip.Prefix]bool{p.Node: true}
	for _, d := range p.Peers {
		if seen[d] || d != d.Masked() || d.Bits() != 24 || !Cluster.Contains(d.Addr()) {
			t.Fatalf("peer %v: repeated, not a /24 of the cluster, or the node's own", d)
		}
		seen[d] = true
	}
	if _, err := NewPlan(netip.MustParsePrefix("10.0.0.1/8"), 24, 1); err == nil {
		t.Fatal("a cluster with host bits was accepted")
	}
}

func TestPercentile(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- {
		ds = append(ds, time.Duration(i))
	}
	if p50, p99 := latencies(ds); p50 != 50 || p99 != 99 {
		t.Fatalf("1..100: p50 %d p99 %d, want 50 and 99", p50, p99)
	}
	if p50, p99 := latencies([]time.Duration{7}); p50 != 7 || p99 != 7 {
		t.Fatalf("one value: p50 %d p99 %d", p50, p99)
	}
	if percentile(nil, 0.5) != 0 {
		t.Fatal("empty: want 0")
	}
}

func TestFormat(t *testing.T) {
	for v, want := range map[float64]string{0: "0", 255: "255", 4096: "4,096", 65535: "65,535", 1234567.4: "1,234,567"} {
		if got := group(v); got != want {
			t.Errorf("group(%v) = %q, want %q", v, got, want)
		}
	}
	for sec, want := range map[float64]string{12.3e-6: "12.3µs", 0.00425: "4.25ms", 0.35: "350ms", 83.4: "83.4s"} {
		if got := fmtDur(sec); got != want {
			t.Errorf("fmtDur(%v) = %q, want %q", sec, got, want)
		}
	}
}

// sampleSettings are the settings of the sample runs.
var sampleSettings = Settings{Clients: 16, Interface: Device, Deletions: 100, Veths: 1000}

// sample is a report as runs at N=255 and N=65,535 make them: at 255 all
// three systems, with ApplyRoutes unimplemented on (b) and implemented on
// (c); at 65,535 (c) alone, with the drift repairs too slow.
func sample() *Report {
	ok := func(id string, routes int, sec, p50 float64) Result {
		r := Result{Workload: id, Title: workload(id).Title(routes, sampleSettings), Routes: routes, Of: routes, Seconds: sec, RoutesPerSec: float64(routes) / sec, Status: StatusOK}
		if p50 > 0 {
			r.P50Ms, r.P99Ms = ptr(p50), ptr(2*p50)
		}
		return r
	}
	unimpl := Result{Workload: "apply-add", Status: StatusUnimplemented, Detail: errUnimplemented.Error()}
	noWatch := func(id string) Result {
		return Result{Workload: id, Title: workload(id).Title(255, sampleSettings), Status: StatusSkipped, Detail: "no watch"}
	}
	run := Scale{N: 255, Peers: 255, Systems: []System{
		{ID: "a", Results: []Result{ok("kernel-add-pipelined", 255, 0.001, 0), ok("kernel-add-sequential", 255, 0.002, 0.008)}},
		{ID: "b", Results: []Result{ok("health-sequential", 255, 0.05, 0.2), ok("inject-sequential", 255, 0.02, 0.070), ok("reinject-sequential", 255, 0.06, 0.25),
			ok("inject-concurrent", 255, 0.004, 0.2),
			unimpl, noWatch("repair-delete"), noWatch("repair-bounce")}, Processes: []Process{{Name: SingleBin, PeakRSSKiB: 20 << 10}}},
		{ID: "c", Results: []Result{ok("health-sequential", 255, 0.05, 0.3), ok("inject-sequential", 255, 0.025, 0.091), ok("reinject-sequential", 255, 0.092, 0.36), ok("inject-concurrent", 255, 0.0125, 0.3),
			ok("apply-add", 255, 0.004, 0), ok("repair-delete", 100, 0.05, 0.2), ok("repair-bounce", 255, 0.0505, 0), ok("inject-veths", 255, 0.03, 0.1)},
			Processes: []Process{{Name: HelperBin, PeakRSSKiB: 5 << 10}, {Name: FrontendBin, PeakRSSKiB: 50 << 10}}},
	}}
	full := Scale{N: 65536, Peers: 65535, Systems: []System{
		{ID: "c", Results: []Result{ok("inject-sequential", 65535, 70, 1), ok("repair-delete", 100, 7, 60), ok("repair-bounce", 65535, 2.5, 0),
			ok("inject-veths", 65535, 80, 1.2)}, Processes: []Process{{Name: HelperBin, PeakRSSKiB: 17 << 10}}},
	}}
	run.Systems[2].result("repair-bounce").Note = "vxlan100 down took the kernel 9.00ms"
	runs := []Scale{run, full}
	for i := range runs {
		runs[i].ratios()
	}
	return &Report{Runs: runs, Targets: targets(runs, sampleSettings), Settings: sampleSettings}
}

func TestRatiosAndTargets(t *testing.T) {
	rep := sample()
	b, c := rep.Runs[0].system("b"), rep.Runs[0].system("c")
	inj, apply := c.result("inject-sequential"), c.result("apply-add")
	near := func(p *float64, want float64) bool { return p != nil && *p > want-1e-9 && *p < want+1e-9 }
	if !near(inj.COverA, 12.5) || !near(inj.COverB, 1.25) || !near(inj.P50COverB, 1.3) {
		t.Errorf("InjectRoute ratios: c/a %v c/b %v p50 %v, want 12.5, 1.25, 1.3", deref(inj.COverA), deref(inj.COverB), deref(inj.P50COverB))
	}
	if !near(apply.COverA, 4) || apply.COverB != nil {
		t.Errorf("ApplyRoutes ratios: c/a %v (want 4), c/b %v (want none: (b) unimplemented)", deref(apply.COverA), deref(apply.COverB))
	}
	// p50/base, on every system: the re-inject over Health.Check, the
	// extra veths over the plain InjectRoute; nothing on other rows.
	if r := b.result("reinject-sequential"); !near(r.P50OverBase, 1.25) {
		t.Errorf("(b) re-inject p50/base %v, want 1.25", deref(r.P50OverBase))
	}
	if r := c.result("reinject-sequential"); !near(r.P50OverBase, 1.2) {
		t.Errorf("(c) re-inject p50/base %v, want 1.2", deref(r.P50OverBase))
	}
	if r := c.result("inject-veths"); !near(r.P50OverBase, 0.1/0.091) {
		t.Errorf("(c) veths p50/base %v, want %v", deref(r.P50OverBase), 0.1/0.091)
	}
	if inj.P50OverBase != nil || c.result("repair-delete").P50OverBase != nil {
		t.Errorf("p50/base on rows without a base: %v, %v", deref(inj.P50OverBase), deref(c.result("repair-delete").P50OverBase))
	}
	// The bounce compares with (a)'s pipelined adds; the deletions with nothing.
	if r := c.result("repair-bounce"); !near(r.COverA, 50.5) || r.COverB != nil || c.result("repair-delete").COverA != nil {
		t.Errorf("bounce c/a %v (want 50.5), c/b %v (want none); delete c/a %v (want none)",
			deref(r.COverA), deref(r.COverB), deref(c.result("repair-delete").COverA))
	}
	want := map[string]string{
		"255 InjectRoute p50, (c) over (b)":                               "1.30x false",
		"255 ApplyRoutes of 255 adds, (c) over (a) pipelined":             "4.00x false",
		"255 InjectRoute again (resync) p50 over Health.Check p50, (c)":   "1.20x true",
		"255 repair after route del p50, (c)":                             "200µs true",
		"255 every route back after vxlan100 down, up, (c)":               "50.5ms true < 101ms: 100ms plus (a)'s pipelined add of 255 routes, 1.00ms",
		"255 InjectRoute p50 with 1,000 extra veths over without, (c)":    "1.10x true",
		"255 ApplyRoutes of 255 adds, (c)":                                "4.00ms true",
		"255 InjectRoute routes/s, 16 clients over one, (b)":              "5.00x true",
		"255 InjectRoute routes/s, 16 clients over one, (c)":              "2.00x false",
		"65535 InjectRoute routes/s, 16 clients over one, (b)":            "-",
		"65535 InjectRoute routes/s, 16 clients over one, (c)":            "-",
		"255 InjectRoute, sequential of 255 peers, (c)":                   "25.0ms true",
		"255 InjectRoute again (resync) of 255 peers, (c)":                "92.0ms false",
		"255 peak RSS of quilt-route-helper, (c)":                         "5.0 MiB true",
		"255 peak RSS of quilt-runtime, (c)":                              "50.0 MiB false",
		"65535 InjectRoute p50, (c) over (b)":                             "-",
		"65535 ApplyRoutes of 65,535 adds, (c) over (a) pipelined":        "-",
		"65535 InjectRoute again (resync) p50 over Health.Check p50, (c)": "-",
		"65535 repair after route del p50, (c)":                           "60.0ms false",
		"65535 every route back after vxlan100 down, up, (c)":             "- < 100ms: took 2.50s, but no kernel floor to add to the limit: (a): not run",
		"65535 InjectRoute p50 with 1,000 extra veths over without, (c)":  "1.20x false",
		"65535 peak RSS of quilt-route-helper, (c)":                       "17.0 MiB false",
		"65535 peak RSS of quilt-runtime, (c)":                            "-",
	}
	for _, tg := range rep.Targets {
		got := "-"
		if tg.Value != nil {
			got = fmtValue(*tg.Value, tg.Unit) + " " + map[bool]string{true: "true", false: "false"}[*tg.Met]
		}
		if strings.HasPrefix(tg.Name, "every route back") {
			got += " " + tg.Want + " " + fmtValue(tg.Limit, tg.Unit) + ": " + tg.Detail
		}
		key := fmt.Sprint(tg.N, " ", tg.Name)
		if w, ok := want[key]; !ok || got != w {
			t.Errorf("target %q: %q, want %q", key, got, w)
		}
		delete(want, key)
	}
	for name := range want {
		t.Errorf("no target %q", name)
	}
}

func deref(p *float64) any {
	if p == nil {
		return nil
	}
	return *p
}

func TestWriteText(t *testing.T) {
	var b bytes.Buffer
	if err := sample().WriteText(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, s := range []string{"N = 255 peers", "InjectRoute, sequential", "unimplemented: the server answered Unimplemented", "1.25x", "MISSED", "met",
		"p50/base", "skipped: no watch", "repair after vxlan100 down, up", "InjectRoute, 1,000 extra veths", "100 routes (at most N) deleted with RTM_DELROUTE",
		"met (100ms plus (a)'s pipelined add of 255 routes, 1.00ms)", "  (c) repair after vxlan100 down, up: vxlan100 down took the kernel 9.00ms\n"} {
		if !strings.Contains(out, s) {
			t.Errorf("no %q in:\n%s", s, out)
		}
	}
	if _, err := json.Marshal(sample()); err != nil {
		t.Fatal(err)
	}
}

// TestApplyChunkFits: the biggest ApplyRoutes message the benchmark sends
// (ApplyChunk adds of the longest destination in 10.0.0.0/8) is within the
// frontend's message limit, so no batch is refused for its size.
func TestApplyChunkFits(t *testing.T) {
	p, err := NewPlan(Cluster, NodePrefixLen, 65535)
	if err != nil {
		t.Fatal(err)
	}
	idx := make([]int, ApplyChunk)
	for i := range idx {
		idx[i] = len(p.Peers) - 1 - i // 10.255.x.0/24: the longest
	}
	req := &quiltpb.ApplyRoutesRequest{Changes: changes(p.Peers, idx, Device)}
	if n := proto.Size(req); n > frontend.MaxRecvMsgSize {
		t.Fatalf("%d changes make a %d-byte message; the frontend takes at most %d", ApplyChunk, n, frontend.MaxRecvMsgSize)
	}
}

func TestSpread(t *testing.T) {
	idx := make([]int, 1000)
	for i := range idx {
		idx[i] = 2 * i
	}
	got := spread(idx, 100)
	if len(got) != 100 || got[0] != 0 || got[1] != 20 || got[99] != 1980 {
		t.Fatalf("100 of 1,000: %d picked, %v ... %v", len(got), got[:2], got[len(got)-1])
	}
	if got := spread(idx[:8], 100); len(got) != 8 {
		t.Fatalf("100 of 8: %d picked, want all 8", len(got))
	}
}
