package frontend

import (
	"context"
	"errors"
	"net/http"
	"net/netip"
	"runtime"
	"strings"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/quiltmesh/quilt-runtime/frontend/api"
	"github.com/quiltmesh/quilt-runtime/frontend/helperclient"
	"github.com/quiltmesh/quilt-runtime/frontend/route"
	"github.com/quiltmesh/quilt-runtime/shared/wire"
)

// SuggestedMetricsAddr is the --metrics-addr the packaged configuration,
// the flag's help and the README name. Metrics are off unless it is given.
const SuggestedMetricsAddr = "127.0.0.1:9542"

// Metrics is the frontend's Prometheus registry, its own (no global
// state): the node's state as gauges, resyncs and repairs, RPCs through
// the gRPC ecosystem's provider (grpc_server_*) and by code, helper round
// trips, and the Go runtime's and the process's standard collectors.
type Metrics struct {
	Registry *prometheus.Registry
	grpc     *grpcprom.ServerMetrics
	rpc      *prometheus.HistogramVec // by service, method and code
	helper   *prometheus.HistogramVec // by op and outcome
}

// latencyBuckets suit calls that take from tens of microseconds (a round
// trip to the helper) to seconds (a batch of 65,536 routes).
var latencyBuckets = prometheus.ExponentialBuckets(0.00005, 4, 11)

// NewMetrics makes the registry with the collectors that need no service.
func NewMetrics() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		grpc: grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram(
			grpcprom.WithHistogramBuckets(latencyBuckets))),
		rpc: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "quilt_grpc_server_handling_seconds",
			Help:    "Duration of each RPC the server handled, by service, method and status code (grpc_server_handling_seconds has no code).",
			Buckets: latencyBuckets}, []string{"grpc_service", "grpc_method", "grpc_code"}),
		helper: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "quilt_helper_request_duration_seconds",
			Help:    "Round trips to the route helper, by operation (hello, apply, list) and outcome (ok, unavailable, error).",
			Buckets: latencyBuckets}, []string{"op", "outcome"}),
	}
	m.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), m.grpc, m.rpc, m.helper)
	return m
}

// ServerOptions are the interceptors that count and time every RPC.
func (m *Metrics) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(m.grpc.UnaryServerInterceptor(), m.timeUnary),
		grpc.ChainStreamInterceptor(m.grpc.StreamServerInterceptor(), m.timeStream),
	}
}

// Registered gives every method of the server its series from the start.
func (m *Metrics) Registered(srv *grpc.Server) { m.grpc.InitializeMetrics(srv) }

func (m *Metrics) timeUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := time.Now()
	resp, err := handler(ctx, req)
	m.observeRPC(info.FullMethod, start, err)
	return resp, err
}

func (m *Metrics) timeStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	start := time.Now()
	err := handler(srv, ss)
	m.observeRPC(info.FullMethod, start, err)
	return err
}

func (m *Metrics) observeRPC(fullMethod string, start time.Time, err error) {
	service, method, _ := strings.Cut(strings.TrimPrefix(fullMethod, "/"), "/")
	m.rpc.WithLabelValues(service, method, status.Code(err).String()).Observe(time.Since(start).Seconds())
}

// Helper wraps a route helper so that each round trip is timed.
func (m *Metrics) Helper(h helperclient.RouteHelper) helperclient.RouteHelper {
	return &timedHelper{h: h, seconds: m.helper}
}

// timedHelper times each call to the route helper it wraps.
type timedHelper struct {
	h       helperclient.RouteHelper
	seconds *prometheus.HistogramVec
}

func (t *timedHelper) observe(op string, start time.Time, err error) {
	outcome := "ok"
	switch {
	case errors.Is(err, helperclient.ErrUnavailable):
		outcome = "unavailable"
	case err != nil:
		outcome = "error"
	}
	t.seconds.WithLabelValues(op, outcome).Observe(time.Since(start).Seconds())
}

func (t *timedHelper) Hello(ctx context.Context) error {
	start := time.Now()
	err := t.h.Hello(ctx)
	t.observe("hello", start, err)
	return err
}

// Apply's outcome is the round trip's: unavailable if any change could not
// be asked, ok otherwise (a route the kernel refused is still an answer).
func (t *timedHelper) Apply(ctx context.Context, changes []route.Route) ([]wire.Result, []error) {
	start := time.Now()
	res, errs := t.h.Apply(ctx, changes)
	var err error
	for _, e := range errs {
		if errors.Is(e, helperclient.ErrUnavailable) {
			err = e
			break
		}
	}
	t.observe("apply", start, err)
	return res, errs
}

func (t *timedHelper) List(ctx context.Context, each func(route.Route)) error {
	start := time.Now()
	err := t.h.List(ctx, each)
	t.observe("list", start, err)
	return err
}

// Watch passes the helper's watch through, untimed: it lasts as long as
// its connection, not one round trip.
func (t *timedHelper) Watch(ctx context.Context, report func(resync bool, changed []netip.Prefix)) error {
	return t.h.Watch(ctx, report)
}

// Observe registers the node's state, read at each scrape, and its resync
// counters.
func (m *Metrics) Observe(node *api.Node, version string) {
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	rec := node.Routes
	m.Registry.MustRegister(rec.Collectors()...)
	m.Registry.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "quilt_build_info", Help: "The running version.", ConstLabels: prometheus.Labels{"version": version}},
			func() float64 { return 1 }),
		gauge("quilt_helper_up", "1 if the route helper answered when last asked.", func() float64 {
			up, _ := node.Helper.Health()
			return bit(up)
		}),
		gauge("quilt_ip_allocations", "Container addresses allocated.", func() float64 { return float64(node.IPAM.Count()) }),
		gauge("quilt_ip_capacity", "Addresses in the allocation range (0 before ConfigureNodeSubnet).", func() float64 {
			if pool, ok := node.IPAM.Pool(); ok {
				return float64(pool.Capacity())
			}
			return 0
		}),
		gauge("quilt_routes_desired", "Routes the agent asked for.", func() float64 { return float64(rec.DesiredLen()) }),
		gauge("quilt_routes_installed", "Routes of ours in the kernel at the last resync.", func() float64 { return float64(rec.LastResync().Installed) }),
		gauge("quilt_route_conflicts", "Desired routes held by a route that is not quilt's (never forced).", func() float64 { return float64(rec.Conflicts()) }),
		gauge("quilt_routes_adopted", "Desired routes adopted from the kernel (the state file was new), not yet confirmed by the agent.",
			func() float64 { return float64(rec.AdoptedLen()) }),
		gauge("quilt_resync_removals_held", "Routes of ours the last resync did not remove though nobody asked for them: more than the removal limit.",
			func() float64 { return float64(rec.LastResync().Held) }),
		gauge("quilt_resync_last_timestamp_seconds", "Start of the last resync, Unix time (0 before the first).", func() float64 {
			if r := rec.LastResync(); !r.Start.IsZero() {
				return float64(r.Start.UnixNano()) / 1e9
			}
			return 0
		}),
		gauge("quilt_resync_last_duration_seconds", "Duration of the last resync.", func() float64 { return rec.LastResync().Duration.Seconds() }),
		gauge("quilt_goroutines", "Goroutines of the frontend (a leak shows here; go_goroutines says the same).", func() float64 { return float64(runtime.NumGoroutine()) }),
	)
}

func bit(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Handler serves the registry in the Prometheus exposition format
// (promhttp: the text format, or another the scraper asks for).
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry})
}
