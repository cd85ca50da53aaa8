package bench

import (
	"bytes"
	"encoding/json"
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
	if p.Node != netip.MustParsePrefix("10.0.0.0/24") || len(p.Peers) != 255 || p.Capped ||
		p.Peers[0] != netip.MustParsePrefix("10.0.1.0/24") || p.Peers[254] != netip.MustParsePrefix("10.0.255.0/24") {
		t.Fatalf("255 peers: node %v, %d peers %v..%v, capped %v", p.Node, len(p.Peers), p.Peers[0], p.Peers[len(p.Peers)-1], p.Capped)
	}
	p, err = NewPlan(Cluster, NodePrefixLen, 65536)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Peers) != 65535 || !p.Capped || p.Peers[65534] != netip.MustParsePrefix("10.255.255.0/24") {
		t.Fatalf("65,536 asked: %d peers, last %v, capped %v", len(p.Peers), p.Peers[len(p.Peers)-1], p.Capped)
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

// sample is a report as a run at N=255 makes it, with ApplyRoutes
// unimplemented on (b) and implemented on (c).
func sample() *Report {
	ok := func(id string, routes int, sec, p50 float64) Result {
		r := Result{Workload: id, Title: workload(id).Title(routes, 16), Routes: routes, Of: routes, Seconds: sec, RoutesPerSec: float64(routes) / sec, Status: StatusOK}
		if p50 > 0 {
			r.P50Ms, r.P99Ms = ptr(p50), ptr(2*p50)
		}
		return r
	}
	unimpl := Result{Workload: "apply-add", Status: StatusUnimplemented, Detail: errUnimplemented.Error()}
	run := Scale{N: 255, Peers: 255, Systems: []System{
		{ID: "a", Results: []Result{ok("kernel-add-pipelined", 255, 0.001, 0), ok("kernel-add-sequential", 255, 0.002, 0.008)}},
		{ID: "b", Results: []Result{ok("inject-sequential", 255, 0.02, 0.070), unimpl}, Processes: []Process{{Name: SingleBin, PeakRSSKiB: 20 << 10}}},
		{ID: "c", Results: []Result{ok("inject-sequential", 255, 0.025, 0.091), ok("apply-add", 255, 0.004, 0)},
			Processes: []Process{{Name: HelperBin, PeakRSSKiB: 5 << 10}, {Name: FrontendBin, PeakRSSKiB: 50 << 10}}},
	}}
	run.ratios()
	return &Report{Runs: []Scale{run}, Targets: targets([]Scale{run}), Settings: Settings{Clients: 16}}
}

func TestRatiosAndTargets(t *testing.T) {
	rep := sample()
	c := rep.Runs[0].system("c")
	inj, apply := c.result("inject-sequential"), c.result("apply-add")
	near := func(p *float64, want float64) bool { return p != nil && *p > want-1e-9 && *p < want+1e-9 }
	if !near(inj.COverA, 12.5) || !near(inj.COverB, 1.25) || !near(inj.P50COverB, 1.3) {
		t.Errorf("InjectRoute ratios: c/a %v c/b %v p50 %v, want 12.5, 1.25, 1.3", deref(inj.COverA), deref(inj.COverB), deref(inj.P50COverB))
	}
	if !near(apply.COverA, 4) || apply.COverB != nil {
		t.Errorf("ApplyRoutes ratios: c/a %v (want 4), c/b %v (want none: (b) unimplemented)", deref(apply.COverA), deref(apply.COverB))
	}
	want := map[string]string{
		"InjectRoute p50, (c) over (b)":                   "1.30x false",
		"ApplyRoutes of 255 adds, (c) over (a) pipelined": "4.00x false",
		"ApplyRoutes of 255 adds, (c)":                    "4.00ms true",
		"InjectRoute, sequential of 255 peers, (c)":       "25.0ms true",
		"InjectRoute again (resync) of 255 peers, (c)":    "- ",
		"peak RSS of quilt-route-helper, (c)":             "5.0 MiB true",
		"peak RSS of quilt-runtime, (c)":                  "50.0 MiB false",
	}
	for _, tg := range rep.Targets {
		got := "- "
		if tg.Value != nil {
			got = fmtValue(*tg.Value, tg.Unit) + " " + map[bool]string{true: "true", false: "false"}[*tg.Met]
		}
		if w, ok := want[tg.Name]; !ok || got != w {
			t.Errorf("target %q: %q, want %q", tg.Name, got, w)
		}
		delete(want, tg.Name)
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
	for _, s := range []string{"N = 255 peers", "InjectRoute, sequential", "unimplemented: the server answered Unimplemented", "1.25x", "MISSED", "met"} {
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
