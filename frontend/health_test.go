package frontend

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/quiltmesh/quilt-runtime/proto/quiltpb"
)

// TestHealthFlipsAtOnce: a request that finds the helper unavailable sets
// the agent's service NOT_SERVING before it returns; only a hello brings
// it back; a request whose caller's deadline had passed, or one the helper
// refused, changes nothing.
func TestHealthFlipsAtOnce(t *testing.T) {
	hs := health.NewServer()
	changes := 0
	hh := &helperHealth{change: func(err error) { changes++; servingStatus(hs, err == nil) }}
	f := &fakeHelper{routes: map[netip.Prefix]string{}, conflict: map[netip.Prefix]bool{netip.MustParsePrefix("10.42.9.0/24"): true}}
	r := reportingHelper{RouteHelper: f, health: hh, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	ctx := context.Background()
	status := func() healthpb.HealthCheckResponse_ServingStatus {
		t.Helper()
		resp, err := hs.Check(ctx, &healthpb.HealthCheckRequest{Service: quiltpb.QuiltRuntime_ServiceDesc.ServiceName})
		if err != nil {
			t.Fatal(err)
		}
		return resp.Status
	}
	expect := func(step string, want healthpb.HealthCheckResponse_ServingStatus) {
		t.Helper()
		if got := status(); got != want {
			t.Fatalf("%s: health %v, want %v", step, got, want)
		}
	}
	add := []Change{{netip.MustParsePrefix("10.42.2.0/24"), "vxlan100"}}
	gone := fmt.Errorf("%w: read: connection reset by peer", ErrUnavailable)

	r.Hello(ctx)
	expect("after a hello", healthpb.HealthCheckResponse_SERVING)
	if _, errs := r.Apply(ctx, []Change{{netip.MustParsePrefix("10.42.9.0/24"), "vxlan100"}}); errs[0] == nil {
		t.Fatal("the fake did not refuse the conflicting add")
	}
	expect("after a refused add (the helper answered)", healthpb.HealthCheckResponse_SERVING)

	f.err = gone
	expired, cancel := context.WithDeadline(ctx, time.Now().Add(-time.Second))
	defer cancel()
	r.Apply(expired, add)
	expect("after an unavailable answer past the caller's deadline", healthpb.HealthCheckResponse_SERVING)
	r.Apply(ctx, add)
	expect("right after an add found the helper unavailable", healthpb.HealthCheckResponse_NOT_SERVING)

	f.err = nil
	if _, errs := r.Apply(ctx, add); errs[0] != nil {
		t.Fatal(errs[0])
	}
	expect("after a successful add: the hello poll is the way back", healthpb.HealthCheckResponse_NOT_SERVING)
	r.Hello(ctx)
	expect("after a hello", healthpb.HealthCheckResponse_SERVING)

	f.err = gone
	r.List(ctx)
	expect("right after a list found the helper unavailable", healthpb.HealthCheckResponse_NOT_SERVING)
	r.Apply(ctx, add)
	r.Hello(ctx)
	if changes != 4 {
		t.Errorf("%d changes applied, want 4 (up, down, up, down): repeated observations must not re-apply", changes)
	}
}

// TestWatchEndChecksHealth: a watch that ends finding the helper
// unavailable flips health only if a hello, sent at once, fails too; a
// watch ended by its own context sends none.
func TestWatchEndChecksHealth(t *testing.T) {
	hs := health.NewServer()
	hh := &helperHealth{change: func(err error) { servingStatus(hs, err == nil) }}
	f := &fakeHelper{routes: map[netip.Prefix]string{}}
	r := reportingHelper{RouteHelper: f, health: hh, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	ctx := context.Background()
	expect := func(step string, want healthpb.HealthCheckResponse_ServingStatus) {
		t.Helper()
		resp, err := hs.Check(ctx, &healthpb.HealthCheckRequest{Service: quiltpb.QuiltRuntime_ServiceDesc.ServiceName})
		if err != nil || resp.Status != want {
			t.Fatalf("%s: health %v, %v; want %v", step, resp.GetStatus(), err, want)
		}
	}
	gone := fmt.Errorf("%w: watch: read: connection reset by peer", ErrUnavailable)
	nop := func(bool, []netip.Prefix) {}

	r.Hello(ctx)
	expect("after a hello", healthpb.HealthCheckResponse_SERVING)
	f.watchErr = gone
	if err := r.Watch(ctx, nop); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("watch: %v, want it passed through", err)
	}
	expect("a watch ended, the helper still answers a hello", healthpb.HealthCheckResponse_SERVING)
	f.err = gone
	r.Watch(ctx, nop)
	expect("a watch ended, and the hello failed", healthpb.HealthCheckResponse_NOT_SERVING)

	f.err, f.watchErr = nil, nil
	r.Hello(ctx)
	expect("a hello again", healthpb.HealthCheckResponse_SERVING)
	stopped, cancel := context.WithCancel(ctx)
	cancel()
	f.err, f.watchErr = gone, fmt.Errorf("%w: %w", ErrUnavailable, context.Canceled)
	r.Watch(stopped, nop)
	expect("a watch ended by its context", healthpb.HealthCheckResponse_SERVING)
}
