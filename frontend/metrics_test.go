package frontend

import (
	"context"
	"maps"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/quiltmesh/quilt-runtime/frontend/api"
	"github.com/quiltmesh/quilt-runtime/frontend/internal/testkit"
	"github.com/quiltmesh/quilt-runtime/frontend/internal/testnode"
	"github.com/quiltmesh/quilt-runtime/proto/quiltpb"
)

// readmeMetrics are the metrics README.md lists: their names stay.
var readmeMetrics = []string{"quilt_build_info", "quilt_helper_up", "quilt_ip_allocations", "quilt_ip_capacity", "quilt_routes_desired",
	"quilt_routes_installed", "quilt_route_conflicts", "quilt_resyncs_total", "quilt_resyncs_failed_total", "quilt_resync_repairs_total",
	"quilt_resync_last_timestamp_seconds", "quilt_resync_last_duration_seconds", "quilt_goroutines"}

// scrape serves /metrics once and parses it with Prometheus's own parser.
func scrape(t *testing.T, m *Metrics) map[string]*dto.MetricFamily {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Fatalf("Content-Type %q", ct)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	mfs, err := p.TextToMetricFamilies(rec.Body)
	if err != nil {
		t.Fatalf("the scrape does not parse: %v", err)
	}
	return mfs
}

// sample finds the metric of a family with exactly these label values.
func sample(t *testing.T, mfs map[string]*dto.MetricFamily, name string, labels ...string) *dto.Metric {
	t.Helper()
	mf, ok := mfs[name]
	if !ok {
		t.Fatalf("no metric family %s", name)
	}
	for _, m := range mf.Metric {
		got := map[string]string{}
		for _, l := range m.Label {
			got[l.GetName()] = l.GetValue()
		}
		match := true
		for i := 0; i+1 < len(labels); i += 2 {
			match = match && got[labels[i]] == labels[i+1]
		}
		if match {
			return m
		}
	}
	t.Fatalf("%s has no series with %q", name, labels)
	return nil
}

// value is a counter's, gauge's or untyped sample's value, or a
// histogram's count.
func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	}
	return m.Untyped.GetValue()
}

// TestMetrics: the scrape parses with Prometheus's parser and passes its
// linter; it holds every metric the README lists under its old name, the
// Go and process collectors, RPC counts and latencies by method and code,
// helper round trips, resync durations and repairs by trigger (a resync's,
// the watch's), each with the right values.
func TestMetrics(t *testing.T) {
	fake := testkit.New()
	m := NewMetrics()
	node := testnode.Open(t, api.NodeConfig{Helper: m.Helper(fake)})
	m.Observe(node, "v\"1\\2\n") // quotes, a backslash and a newline: escaped as the format says
	conn := serveConn(t, node, m)
	ac, rt := quiltpb.NewQuiltAdminClient(conn), quiltpb.NewQuiltRuntimeClient(conn)
	ctx := context.Background()

	before := scrape(t, m)
	if v := value(sample(t, before, "grpc_server_started_total", "grpc_method", "ListRoutes")); v != 0 {
		t.Fatalf("ListRoutes started %v times before any call", v)
	}
	rt.ConfigureNodeSubnet(ctx, &quiltpb.ConfigureNodeSubnetRequest{Subnet: "10.42.1.0/24"})
	ac.AllocateIP(ctx, &quiltpb.AllocateIPRequest{ContainerId: "c1"})
	ac.AllocateIP(ctx, &quiltpb.AllocateIPRequest{ContainerId: "c2", InterfaceName: "eth0"})
	if _, err := ac.AllocateIP(ctx, &quiltpb.AllocateIPRequest{ContainerId: "bad id"}); err == nil {
		t.Fatal("a bad ID was allocated")
	}
	if r, err := rt.InjectRoute(ctx, &quiltpb.InjectRouteRequest{Destination: "10.42.2.0/24", ViaInterface: "vxlan100"}); err != nil || !r.Success {
		t.Fatal(r, err)
	}
	fake.Put(pfx("10.42.9.0/24"), "vxlan100") // a stray for the resync
	node.Routes.Resync(ctx)
	// A route deleted by hand, reported by the helper's watch with a prefix
	// nobody asked for: the watch's repair puts the desired one back at
	// once, counted under its own trigger, and is no resync.
	fake.Remove(pfx("10.42.2.0/24"))
	if r := node.RepairChanged(ctx, []netip.Prefix{pfx("10.42.2.0/24"), pfx("10.42.7.0/24")}); r.Added != 1 || r.Repairs() != 1 {
		t.Fatalf("the watch's repair: %+v", r)
	}
	node.Helper.Hello(ctx)

	mfs := scrape(t, m)
	for _, name := range readmeMetrics {
		if _, ok := mfs[name]; !ok {
			t.Errorf("README's %s is gone", name)
		}
	}
	for _, tc := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"quilt_build_info", []string{"version", "v\"1\\2\n"}, 1},
		{"quilt_helper_up", nil, 1},
		{"quilt_ip_allocations", nil, 2},
		{"quilt_ip_capacity", nil, 245},
		{"quilt_routes_desired", nil, 1},
		{"quilt_routes_installed", nil, 1},
		{"quilt_route_conflicts", nil, 0},
		{"quilt_resyncs_total", nil, 1},
		{"quilt_resyncs_failed_total", nil, 0},
		{"quilt_resync_repairs_total", []string{"kind", "removed", "trigger", "resync"}, 1},
		{"quilt_resync_repairs_total", []string{"kind", "added", "trigger", "resync"}, 0},
		{"quilt_resync_repairs_total", []string{"kind", "added", "trigger", "watch"}, 1},
		{"quilt_resync_repairs_total", []string{"kind", "removed", "trigger", "watch"}, 0},
		{"quilt_resync_repairs_total", []string{"kind", "moved", "trigger", "watch"}, 0},
		{"quilt_resync_duration_seconds", nil, 1},
		{"grpc_server_handled_total", []string{"grpc_method", "AllocateIP", "grpc_code", "OK"}, 2},
		{"grpc_server_handled_total", []string{"grpc_method", "AllocateIP", "grpc_code", "InvalidArgument"}, 1},
		{"grpc_server_handling_seconds", []string{"grpc_service", "quilt.QuiltAdmin", "grpc_method", "AllocateIP"}, 3},
		{"quilt_grpc_server_handling_seconds", []string{"grpc_method", "AllocateIP", "grpc_code", "OK"}, 2},
		{"quilt_grpc_server_handling_seconds", []string{"grpc_method", "AllocateIP", "grpc_code", "InvalidArgument"}, 1},
		{"quilt_grpc_server_handling_seconds", []string{"grpc_service", "quilt.QuiltRuntime", "grpc_method", "InjectRoute", "grpc_code", "OK"}, 1},
		{"quilt_helper_request_duration_seconds", []string{"op", "apply", "outcome", "ok"}, 3}, // the InjectRoute, the resync's removal, the watch's add
		{"quilt_helper_request_duration_seconds", []string{"op", "list", "outcome", "ok"}, 1},
	} {
		if got := value(sample(t, mfs, tc.name, tc.labels...)); got != tc.want {
			t.Errorf("%s%q = %v, want %v", tc.name, tc.labels, got, tc.want)
		}
	}
	if last := value(sample(t, mfs, "quilt_resync_last_timestamp_seconds")); last < 1.7e9 {
		t.Errorf("quilt_resync_last_timestamp_seconds = %v", last)
	}
	for _, name := range []string{"go_goroutines", "go_memstats_heap_alloc_bytes", "go_gc_duration_seconds", "process_cpu_seconds_total",
		"process_open_fds", "process_resident_memory_bytes"} {
		if _, ok := mfs[name]; !ok {
			t.Errorf("no %s: the standard collectors are missing", name)
		}
	}
	var list []*dto.MetricFamily
	for _, name := range slices.Sorted(maps.Keys(mfs)) {
		list = append(list, mfs[name])
	}
	problems, err := promlint.NewWithMetricFamilies(list).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	// A desired route a foreign route holds is a conflict, counted until it
	// is no longer one.
	fake.Conflict(pfx("10.42.5.0/24"))
	if r, err := rt.InjectRoute(ctx, &quiltpb.InjectRouteRequest{Destination: "10.42.5.0/24", ViaInterface: "vxlan100"}); err != nil || r.Success {
		t.Fatal(r, err)
	}
	if got := value(sample(t, scrape(t, m), "quilt_route_conflicts")); got != 1 {
		t.Errorf("quilt_route_conflicts = %v with one route held by a foreign one", got)
	}
}

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
