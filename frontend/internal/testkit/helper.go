package testkit

import (
	"context"
	"maps"
	"net/netip"
	"sync"

	"github.com/quiltmesh/quilt-runtime/frontend/route"
	"github.com/quiltmesh/quilt-runtime/shared/wire"
)

// Helper answers as the route helper would for a kernel that holds only
// its routes, and changes only by its requests. It is safe for concurrent
// use.
type Helper struct {
	mu       sync.Mutex
	routes   map[netip.Prefix]string
	err      error                 // returned by every call when set
	conflict map[netip.Prefix]bool // foreign routes: adds are refused
	watchErr error                 // Watch ends with it at once when set
}

// New returns a helper whose kernel holds routes.
func New(routes ...route.Route) *Helper {
	h := &Helper{routes: map[netip.Prefix]string{}, conflict: map[netip.Prefix]bool{}}
	for _, r := range routes {
		h.routes[r.Dst] = r.Ifname
	}
	return h
}

// Routes returns a copy of the routes in its kernel.
func (h *Helper) Routes() map[netip.Prefix]string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return maps.Clone(h.routes)
}

// Put puts a route of ours in its kernel, as if it had been added, and
// Remove takes one out, as `ip route del` would: neither is reported.
func (h *Helper) Put(dst netip.Prefix, ifname string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.routes[dst] = ifname
}

// Remove takes the route to dst out of its kernel, unreported.
func (h *Helper) Remove(dst netip.Prefix) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.routes, dst)
}

// Fail makes every call fail with err from now on; nil: none.
func (h *Helper) Fail(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.err = err
}

// FailWatch makes Watch end at once with err; nil: it watches.
func (h *Helper) FailWatch(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.watchErr = err
}

// Conflict puts foreign routes at dsts: adds there are refused, as
// StatusConflict. With none, it clears them all.
func (h *Helper) Conflict(dsts ...netip.Prefix) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(dsts) == 0 {
		clear(h.conflict)
	}
	for _, dst := range dsts {
		h.conflict[dst] = true
	}
}

// Hello fails as every call does, or succeeds.
func (h *Helper) Hello(context.Context) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.err
}

// Apply carries out each change on its kernel.
func (h *Helper) Apply(_ context.Context, changes []route.Route) ([]wire.Result, []error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	res, errs := make([]wire.Result, len(changes)), make([]error, len(changes))
	for i, c := range changes {
		if c.IsRemoval() {
			res[i], errs[i] = h.delete(c.Dst)
		} else {
			res[i], errs[i] = h.add(c.Dst, c.Ifname)
		}
	}
	return res, errs
}

func (h *Helper) add(dst netip.Prefix, ifname string) (wire.Result, error) {
	if h.err != nil {
		return 0, h.err
	}
	if h.conflict[dst] {
		return 0, wire.StatusConflict
	}
	old, ok := h.routes[dst]
	h.routes[dst] = ifname
	switch {
	case !ok:
		return wire.ResultCreated, nil
	case old == ifname:
		return wire.ResultUnchanged, nil
	}
	return wire.ResultMoved, nil
}

func (h *Helper) delete(dst netip.Prefix) (wire.Result, error) {
	if h.err != nil {
		return 0, h.err
	}
	if _, ok := h.routes[dst]; !ok {
		return wire.ResultAbsent, nil
	}
	delete(h.routes, dst)
	return wire.ResultDeleted, nil
}

// List reports every route of its kernel, or fails.
func (h *Helper) List(_ context.Context, each func(route.Route)) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.err != nil {
		return h.err
	}
	for dst, ifname := range h.routes {
		each(route.Route{Dst: dst, Ifname: ifname})
	}
	return nil
}

// Watch reports one resync and then nothing until ctx ends: its kernel
// never changes by itself. With FailWatch's error, or else Fail's, it
// ends at once with that.
func (h *Helper) Watch(ctx context.Context, report func(bool, []netip.Prefix)) error {
	h.mu.Lock()
	err := h.watchErr
	if err == nil {
		err = h.err
	}
	h.mu.Unlock()
	if err != nil {
		return err
	}
	report(true, nil)
	<-ctx.Done()
	return ctx.Err()
}
