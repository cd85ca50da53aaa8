package frontend

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/quiltmesh/quilt-runtime/frontend/ipam"
	"github.com/quiltmesh/quilt-runtime/proto/quiltpb"
	"github.com/quiltmesh/quilt-runtime/shared/policy"
	"github.com/quiltmesh/quilt-runtime/shared/wire"
)

// Service answers the agent's three RPCs, and through Admin the
// operators' QuiltAdmin service.
type Service struct {
	quiltpb.UnimplementedQuiltRuntimeServer
	Policy policy.Policy
	Helper RouteHelper
	IPAM   *ipam.Allocator
	Routes *Desired
	Log    *slog.Logger
	// AdoptGrace is how long the agent may call without confirming a route
	// adopted from the kernel before it is no longer desired.
	AdoptGrace time.Duration
	// RemovalLimit bounds the routes a resync removes unasked; nil:
	// DefaultRemovalLimit.
	RemovalLimit *RemovalLimit

	mu           sync.Mutex
	adoptPending bool                    // the state file was new: the first resync adopts what the kernel holds
	agentSince   time.Time               // the agent's first call since routes were adopted
	conflicts    map[netip.Prefix]string // desired routes a foreign route holds: why
	helperErr    error                   // the helper's health, as last seen by Watch
	helperSet    bool
	resync       ResyncResult // the last one
	counters     resyncCounters
	calls        callCounts // route calls since the last summary
}

// Subnet returns the configured node subnet, if any.
func (s *Service) Subnet() netip.Prefix {
	pool, _ := s.IPAM.Pool()
	return pool.Subnet
}

// SetHelperHealth records the helper's health as last seen (nil: up).
func (s *Service) SetHelperHealth(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.helperErr, s.helperSet = err, true
}

// HelperHealth returns whether the helper answered when last asked, and
// if not, why.
func (s *Service) HelperHealth() (up bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.helperSet {
		return false, errors.New("route helper not checked yet")
	}
	return s.helperErr == nil, s.helperErr
}

// Conflicts returns the number of desired routes a foreign route holds.
func (s *Service) Conflicts() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conflicts)
}

func (s *Service) ConfigureNodeSubnet(ctx context.Context, req *quiltpb.ConfigureNodeSubnetRequest) (*quiltpb.ConfigureNodeSubnetResponse, error) {
	e, err := s.configure(req.Subnet)
	msg := s.logCall(ctx, "ConfigureNodeSubnet", fmt.Sprintf("RPC: ConfigureNodeSubnet(subnet=%s)", clip(req.Subnet)), []any{"subnet", clip(req.Subnet)}, e, err)
	return &quiltpb.ConfigureNodeSubnetResponse{Success: err == nil, Error: msg}, nil
}

func (s *Service) configure(raw string) (effect, error) {
	subnet, err := ParseDestination(s.Policy, "subnet", raw)
	if err != nil {
		return effect{}, err
	}
	// The subnet's route lock keeps an InjectRoute of the same prefix out
	// while the two are compared.
	defer s.Routes.Lock(subnet)()
	if via, ok := s.Routes.Get(subnet); ok {
		return effect{}, fmt.Errorf("subnet %v is routed to a peer node via %s (InjectRoute); it cannot also be this node's: remove that route first", subnet, via)
	}
	changed, err := s.IPAM.SetSubnet(subnet)
	if err != nil {
		return effect{}, err
	}
	e := effect{changed: changed, msg: "IPAM configured with subnet: " + subnet.String(), attrs: []any{"subnet", subnet}}
	if !changed {
		e.msg = "IPAM already configured with subnet: " + subnet.String()
	}
	return e, nil
}

func (s *Service) InjectRoute(ctx context.Context, req *quiltpb.InjectRouteRequest) (*quiltpb.InjectRouteResponse, error) {
	e, err := s.inject(ctx, req.Destination, req.ViaInterface)
	msg := s.logCall(ctx, "InjectRoute", fmt.Sprintf("RPC: InjectRoute(destination=%s, via=%s)", clip(req.Destination), clip(req.ViaInterface)),
		[]any{"destination", clip(req.Destination), "via", clip(req.ViaInterface)}, e, err)
	return &quiltpb.InjectRouteResponse{Success: err == nil, Error: msg}, nil
}

// inject records the route as desired, then asks the helper for it. The
// record stays whatever the helper answers, so a resync retries a route
// the helper could not add now.
func (s *Service) inject(ctx context.Context, rawDst, rawIf string) (effect, error) {
	dst, err := ParseDestination(s.Policy, "destination", rawDst)
	if err != nil {
		return effect{}, err
	}
	ifname, err := ParseInterface(s.Policy, rawIf)
	if err != nil {
		return effect{}, err
	}
	defer s.Routes.Lock(dst)()
	if dst == s.Subnet() {
		return effect{}, fmt.Errorf("destination %v %w", dst, ErrOwnSubnet)
	}
	s.agentCalled()
	recorded, err := s.Routes.Set(dst, ifname)
	if err != nil {
		return effect{}, fmt.Errorf("route %v dev %s not recorded, nothing changed: %w", dst, ifname, err)
	}
	res, err := s.one(ctx, Change{dst, ifname})
	s.noteConflict(dst, err)
	if err != nil {
		return effect{}, helperError("add", dst, ifname, err)
	}
	e := effect{changed: true, attrs: []any{"destination", dst, "dev", ifname, "result", res, "recorded", recorded}}
	switch res {
	case wire.ResultCreated:
		e.msg = fmt.Sprintf("Added route: %v dev %s", dst, ifname)
	case wire.ResultMoved:
		e.msg = fmt.Sprintf("Moved route: %v dev %s", dst, ifname)
	default: // unchanged: a change only if it was not desired so yet
		e.msg, e.changed = fmt.Sprintf("Route already present: %v dev %s", dst, ifname), recorded
	}
	return e, nil
}

func (s *Service) RemoveRoute(ctx context.Context, req *quiltpb.RemoveRouteRequest) (*quiltpb.RemoveRouteResponse, error) {
	e, err := s.remove(ctx, req.Destination)
	msg := s.logCall(ctx, "RemoveRoute", fmt.Sprintf("RPC: RemoveRoute(destination=%s)", clip(req.Destination)), []any{"destination", clip(req.Destination)}, e, err)
	return &quiltpb.RemoveRouteResponse{Success: err == nil, Error: msg}, nil
}

// remove forgets the route, then asks the helper to delete it. If the
// helper cannot, the route is ours and no longer desired, so a resync
// removes it.
func (s *Service) remove(ctx context.Context, rawDst string) (effect, error) {
	dst, err := ParseDestination(s.Policy, "destination", rawDst)
	if err != nil {
		return effect{}, err
	}
	defer s.Routes.Lock(dst)()
	if dst == s.Subnet() {
		return effect{}, fmt.Errorf("destination %v %w", dst, ErrOwnSubnet)
	}
	forgot, err := s.Routes.Delete(dst)
	if err != nil {
		return effect{}, fmt.Errorf("removal of route %v not recorded, nothing changed: %w", dst, err)
	}
	s.noteConflict(dst, nil)
	res, err := s.one(ctx, Change{Dst: dst})
	if err != nil {
		return effect{}, helperError("delete", dst, "", err)
	}
	e := effect{changed: true, msg: fmt.Sprintf("Removed route: %v", dst), attrs: []any{"destination", dst, "result", res, "recorded", forgot}}
	if res == wire.ResultAbsent { // a change only if it was desired until now
		e.msg, e.changed = fmt.Sprintf("Route already absent: %v", dst), forgot
	}
	return e, nil
}

// one asks the helper for a single change.
func (s *Service) one(ctx context.Context, c Change) (wire.Result, error) {
	res, errs := s.Helper.Apply(ctx, []Change{c})
	return res[0], errs[0]
}

// noteConflict remembers whether a foreign route holds dst, from the
// helper's answer to an add (nil: it does not, or dst is no longer
// desired).
func (s *Service) noteConflict(dst netip.Prefix, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if errors.Is(err, wire.StatusConflict) {
		if s.conflicts == nil {
			s.conflicts = map[netip.Prefix]string{}
		}
		s.conflicts[dst] = fmt.Sprintf("a route for %v exists and is not quilt's; left alone", dst)
	} else if !errors.Is(err, ErrUnavailable) {
		delete(s.conflicts, dst)
	}
}

// helperError turns the helper's answer into a message naming the route.
func helperError(op string, dst netip.Prefix, ifname string, err error) error {
	route := dst.String()
	if ifname != "" {
		route += " dev " + ifname
	}
	var st wire.Status
	var errno unix.Errno
	switch {
	case errors.Is(err, ErrUnavailable) && op == "add":
		return fmt.Errorf("%w; route %s is recorded and the next resync adds it", err, route)
	case errors.Is(err, ErrUnavailable):
		return fmt.Errorf("%w; the removal of %v is recorded and the next resync deletes the route", err, dst)
	case errors.Is(err, wire.StatusConflict):
		return fmt.Errorf("route %v exists and is not managed by quilt; refusing to replace it; the request is kept and reported as a conflict (%w)", dst, err)
	case errors.Is(err, wire.StatusNotOwned):
		return fmt.Errorf("route %v is not managed by quilt; refusing to delete it (%w)", dst, err)
	case errors.Is(err, wire.StatusNoIface):
		return fmt.Errorf("interface %q does not exist on this node (%w)", ifname, err)
	case errors.As(err, &errno):
		return fmt.Errorf("kernel refused to %s %s: %w", op, route, errno)
	case errors.As(err, &st):
		return fmt.Errorf("route helper refused to %s %s: %w", op, route, err)
	}
	return fmt.Errorf("%s %s: %w", op, route, err)
}

// clip bounds a client-supplied value for a log line.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
