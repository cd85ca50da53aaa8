package frontend

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/quiltmesh/quilt-runtime/proto/quiltpb"
	"github.com/quiltmesh/quilt-runtime/shared/wire"
)

// helperHealth decides whether the helper is up, from two sources: every
// hello (the poll, the only way back up) and every request that found the
// helper unavailable (down at once, before that request's RPC answers).
// Each change is applied in the order it was reported.
type helperHealth struct {
	mu     sync.Mutex
	known  bool
	up     bool
	change func(err error) // applies a change; called with mu held
}

// report records one observation (nil: the helper answered) and applies
// it if it changes the health. It reports whether it did.
func (h *helperHealth) report(err error) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.known && h.up == (err == nil) {
		return false
	}
	h.known, h.up = true, err == nil
	h.change(err)
	return true
}

// servingStatus sets the health of the agent's service (and the server as
// a whole), which needs the helper. The admin service does not: its
// addresses and views work without it.
func servingStatus(hs *health.Server, up bool) {
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if up {
		st = healthpb.HealthCheckResponse_SERVING
	}
	hs.SetServingStatus("", st)
	hs.SetServingStatus(quiltpb.QuiltRuntime_ServiceDesc.ServiceName, st)
}

// reportingHelper passes every request to the helper and tells health
// what it learnt: a hello's answer either way, and for any other request
// only that the helper is unavailable. A request whose caller's deadline
// had passed proves nothing about the helper, so it is not reported.
type reportingHelper struct {
	RouteHelper
	health *helperHealth
	log    *slog.Logger
}

func (r reportingHelper) Hello(ctx context.Context) error {
	err := r.RouteHelper.Hello(ctx)
	r.health.report(err)
	return err
}

func (r reportingHelper) Apply(ctx context.Context, changes []Change) ([]wire.Result, []error) {
	res, errs := r.RouteHelper.Apply(ctx, changes)
	for _, err := range errs {
		if errors.Is(err, ErrUnavailable) {
			r.lost(ctx, err)
			break
		}
	}
	return res, errs
}

func (r reportingHelper) List(ctx context.Context) ([]Route, error) {
	routes, err := r.RouteHelper.List(ctx)
	if errors.Is(err, ErrUnavailable) {
		r.lost(ctx, err)
	}
	return routes, err
}

// Watch passes the watch through. Its end does not flip health by itself:
// the helper ends a watch for reasons of its own that say nothing about
// whether it answers (it closes a watcher that fell behind, whose next
// watch begins with a resync; a newer watcher replaces an older one), and
// the agent's service must not turn NOT_SERVING for those until the next
// poll. So an end that found the helper unavailable is checked at once
// with one hello, reported either way: a helper that died is NOT_SERVING
// at once, even with no request under way; one that still answers stays
// SERVING.
func (r reportingHelper) Watch(ctx context.Context, report func(resync bool, changed []netip.Prefix)) error {
	err := r.RouteHelper.Watch(ctx, report)
	if errors.Is(err, ErrUnavailable) && ctx.Err() == nil {
		if herr := r.RouteHelper.Hello(ctx); herr != nil {
			r.lost(ctx, herr)
		} else {
			r.health.report(nil)
		}
	}
	return err
}

// lost reports a request that found the helper unavailable.
func (r reportingHelper) lost(ctx context.Context, err error) {
	if d, ok := ctx.Deadline(); ctx.Err() != nil || ok && !time.Now().Before(d) {
		return
	}
	if r.health.report(err) {
		r.log.Warn("route helper unavailable: health NOT_SERVING until a hello succeeds", "err", err)
	}
}
