package single

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"golang.org/x/net/netutil"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/quiltmesh/quilt-runtime/frontend"
	"github.com/quiltmesh/quilt-runtime/frontend/ipam"
	"github.com/quiltmesh/quilt-runtime/frontend/state"
	"github.com/quiltmesh/quilt-runtime/helper"
	"github.com/quiltmesh/quilt-runtime/proto/quiltpb"
	"github.com/quiltmesh/quilt-runtime/shared/policy"
	"github.com/quiltmesh/quilt-runtime/shared/wire"
)

// Config is what the baseline server is started with.
type Config struct {
	Addr           string // loopback host:port or unix:///path
	Policy         policy.Policy
	StateDir       string
	Offsets        ipam.Offsets
	ResyncInterval time.Duration
	Table          uint32 // routing table, 254 is main
	Proto          uint8  // route protocol marking our routes, 81
	// Netns names the namespace (`ip netns`, /run/netns/NAME) this process
	// must be running in; Serve refuses to start anywhere else. Empty:
	// no check (AllowAnyNetns must say so).
	Netns         string
	AllowAnyNetns bool
	Version       string
	Log           *slog.Logger
}

// Helper is a frontend.RouteHelper that calls helper.Routes in this
// process. helper.Routes is not safe for concurrent use, so requests take
// turns, as they do in quilt-route-helper. It does not re-check the
// policy as the helper does: in one process there is no boundary to check
// at, and the frontend has checked every request already.
type Helper struct {
	mu     sync.Mutex
	Routes *helper.Routes
}

// Hello always succeeds: there is nothing between us and the kernel.
func (h *Helper) Hello(context.Context) error { return nil }

// Add routes dst via ifname.
func (h *Helper) Add(_ context.Context, dst netip.Prefix, ifname string) (wire.Result, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.Routes.Add(dst, ifname)
}

// Delete removes our route to dst.
func (h *Helper) Delete(_ context.Context, dst netip.Prefix) (wire.Result, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.Routes.Delete(dst)
}

// List returns our routes.
func (h *Helper) List(context.Context) ([]frontend.Route, error) {
	h.mu.Lock()
	recs, err := h.Routes.List(0)
	h.mu.Unlock()
	routes := make([]frontend.Route, 0, len(recs))
	for _, r := range recs {
		routes = append(routes, frontend.Route{Dst: r.Dst, Ifname: r.Ifname})
	}
	return routes, err
}

// ErrNetns means Serve was not started inside the namespace it was told
// to expect.
var ErrNetns = errors.New("this benchmark server changes routes directly, so it runs only inside a throwaway network namespace: start it with `ip netns exec NAME` and --netns NAME (quilt-bench does)")

// Serve serves QuiltRuntime and QuiltAdmin on cfg.Addr until ctx ends.
func Serve(ctx context.Context, cfg Config) error {
	if err := checkNetns(cfg.Netns, cfg.AllowAnyNetns); err != nil {
		return err
	}
	if err := cfg.Policy.Validate(); err != nil {
		return err
	}
	if err := cfg.Offsets.Check(cfg.Policy.PrefixLen); err != nil {
		return fmt.Errorf("--gateway/--ip-range: %w", err)
	}
	if cfg.ResyncInterval <= 0 {
		return errors.New("--resync-interval must be positive")
	}
	ln, err := frontend.ParseAddr(cfg.Addr)
	if err != nil {
		return err
	}
	if !ln.Loopback() || ln.Network == "vsock" {
		return fmt.Errorf("--grpc-addr %s: the benchmark server serves plaintext on loopback or a unix socket only", cfg.Addr)
	}
	routes, err := helper.OpenRoutes(cfg.Table, cfg.Proto)
	if err != nil {
		return fmt.Errorf("open rtnetlink: %w", err)
	}
	store, snap, err := state.Open(cfg.StateDir, cfg.Log)
	if err != nil {
		return err
	}
	defer store.Close()
	alloc, err := ipam.NewAllocator(cfg.Offsets, store, snap.Subnet, snap.Allocations, snap.LastIP)
	if err != nil {
		return fmt.Errorf("state file %s: %w", store.Path(), err)
	}
	svc := &frontend.Service{Policy: cfg.Policy, Helper: &Helper{Routes: routes}, IPAM: alloc,
		Routes: frontend.NewDesired(store, snap.Routes), Log: cfg.Log}
	svc.SetHelperHealth(nil)
	adm := &frontend.Admin{Service: svc, Version: cfg.Version, StateDir: cfg.StateDir, ResyncInterval: cfg.ResyncInterval}
	hs := health.NewServer()
	hs.SetServingStatus(quiltpb.QuiltRuntime_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus(quiltpb.QuiltAdmin_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	srv := frontend.NewGRPCServer(adm, hs, nil)

	bg, stopBg := context.WithCancel(ctx)
	defer stopBg()
	kick := make(chan struct{}, 1)
	kick <- struct{}{} // the first resync at once, as the frontend's when its helper answers
	go svc.ResyncLoop(bg, cfg.ResyncInterval, kick)

	nl, err := ln.Listen()
	if err != nil {
		return fmt.Errorf("listen on %s %s: %w", ln.Network, ln.Addr, err)
	}
	cfg.Log.Info("Starting gRPC server on "+ln.Addr, "network", ln.Network, "addr", ln.Addr,
		"gomaxprocs", runtime.GOMAXPROCS(0), "pid", os.Getpid(), "routes", len(snap.Routes))
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(netutil.LimitListener(nl, frontend.DefaultMaxConns)) }()
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	done := make(chan struct{})
	go func() { srv.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		srv.Stop()
	}
	return err
}

// checkNetns makes sure this process runs in the named namespace: the
// same namespace file as /run/netns/NAME.
func checkNetns(name string, any bool) error {
	if name == "" {
		if any {
			return nil
		}
		return fmt.Errorf("no --netns given: %w", ErrNetns)
	}
	var self, want unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &self); err != nil {
		return fmt.Errorf("own network namespace: %w", err)
	}
	if err := unix.Stat(filepath.Join("/run/netns", filepath.Base(name)), &want); err != nil {
		return fmt.Errorf("namespace %s: %w: %w", name, err, ErrNetns)
	}
	if self.Dev != want.Dev || self.Ino != want.Ino {
		return fmt.Errorf("not running in namespace %s: %w", name, ErrNetns)
	}
	return nil
}
