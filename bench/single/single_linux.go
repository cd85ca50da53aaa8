package single

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/quiltmesh/quilt-runtime/frontend"
	"github.com/quiltmesh/quilt-runtime/frontend/helperclient"
	"github.com/quiltmesh/quilt-runtime/frontend/route"
	"github.com/quiltmesh/quilt-runtime/helper"
	"github.com/quiltmesh/quilt-runtime/shared/wire"
)

// Config is what the baseline server is started with: quilt-runtime's own
// configuration, and where it must run.
type Config struct {
	frontend.Config
	// Netns names the namespace (`ip netns`, /run/netns/NAME) this process
	// must be running in; Serve refuses to start anywhere else. Empty:
	// no check (AllowAnyNetns must say so).
	Netns         string
	AllowAnyNetns bool
}

// Helper is a helperclient.RouteHelper that calls helper.Routes in this
// process, MaxBatch records at a time as quilt-route-helper takes them
// from a message. helper.Routes is not safe for concurrent use, so calls
// take turns, as they do in quilt-route-helper; it checks every request
// against the same policy as the frontend.
type Helper struct {
	mu     sync.Mutex
	Routes *helper.Routes
}

// Hello always succeeds: there is nothing between us and the kernel.
func (h *Helper) Hello(context.Context) error { return nil }

// Apply carries out the changes.
func (h *Helper) Apply(_ context.Context, changes []route.Route) ([]wire.Result, []error) {
	reqs := make([]wire.Record, len(changes))
	for i, c := range changes {
		reqs[i] = wire.Record{Op: wire.OpDelete, Dst: c.Dst}
		if !c.IsRemoval() {
			reqs[i] = wire.Record{Op: wire.OpAdd, Dst: c.Dst, Ifname: c.Ifname}
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for start := 0; start < len(reqs); start += wire.MaxBatch {
		h.Routes.Apply(reqs[start:min(len(reqs), start+wire.MaxBatch)])
	}
	res, errs := make([]wire.Result, len(reqs)), make([]error, len(reqs))
	for i, r := range reqs {
		res[i], errs[i] = r.Result, helperclient.StatusError(r)
	}
	return res, errs
}

// List reports our routes.
func (h *Helper) List(_ context.Context, each func(route.Route)) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.Routes.List(&wire.Record{Op: wire.OpList}, func(r wire.Record) {
		each(route.Route{Dst: r.Dst, Ifname: r.Ifname})
	})
}

// Watch reports one resync, then nothing until ctx ends: the one-process
// baseline has no watch, so its drift repair is the periodic resync.
func (h *Helper) Watch(ctx context.Context, report func(bool, []netip.Prefix)) error {
	report(true, nil)
	<-ctx.Done()
	return ctx.Err()
}

// ErrNetns means Serve was not started inside the namespace it was told
// to expect.
var ErrNetns = errors.New("this benchmark server changes routes directly, so it runs only inside a throwaway network namespace: start it with `ip netns exec NAME` and --netns NAME (quilt-bench does)")

// Serve runs quilt-runtime's own frontend.Run with the in-process Helper,
// until ctx ends.
func Serve(ctx context.Context, cfg Config) error {
	if err := checkNetns(cfg.Netns, cfg.AllowAnyNetns); err != nil {
		return err
	}
	for _, a := range cfg.Addrs {
		if ln, err := frontend.ParseAddr(a); err != nil || !ln.Loopback() || ln.Network == "vsock" {
			return fmt.Errorf("--grpc-addr %s: the benchmark server serves plaintext on loopback or a unix socket only", a)
		}
	}
	routes, err := helper.OpenRoutes(cfg.Policy)
	if err != nil {
		return fmt.Errorf("open rtnetlink: %w", err)
	}
	cfg.Config.Helper = &Helper{Routes: routes}
	return frontend.Run(ctx, cfg.Config)
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
