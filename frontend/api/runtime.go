package api

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/quiltmesh/quilt-runtime/frontend/internal/quote"
	"github.com/quiltmesh/quilt-runtime/frontend/reconcile"
	"github.com/quiltmesh/quilt-runtime/frontend/route"
	"github.com/quiltmesh/quilt-runtime/proto/quiltpb"
	"github.com/quiltmesh/quilt-runtime/shared/wire"
)

func (s *Runtime) ConfigureNodeSubnet(ctx context.Context, req *quiltpb.ConfigureNodeSubnetRequest) (*quiltpb.ConfigureNodeSubnetResponse, error) {
	e, err := s.configure(req.Subnet)
	subnet := quote.Bound(req.Subnet, logBound)
	msg := s.logCall(ctx, "ConfigureNodeSubnet", fmt.Sprintf("RPC: ConfigureNodeSubnet(subnet=%s)", subnet), []any{"subnet", subnet}, e, err)
	return &quiltpb.ConfigureNodeSubnetResponse{Success: err == nil, Error: msg}, nil
}

func (s *Runtime) configure(raw string) (effect, error) {
	subnet, err := ParseDestination(s.Policy, "subnet", raw)
	if err != nil {
		return effect{}, err
	}
	// The subnet's route lock keeps an InjectRoute of the same prefix out
	// while the two are compared.
	defer s.Routes.Lock(subnet)()
	if via, ok := s.Routes.Desired(subnet); ok {
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

func (s *Runtime) InjectRoute(ctx context.Context, req *quiltpb.InjectRouteRequest) (*quiltpb.InjectRouteResponse, error) {
	e, err := s.inject(ctx, req.Destination, req.ViaInterface)
	dst, via := quote.Bound(req.Destination, logBound), quote.Bound(req.ViaInterface, logBound)
	msg := s.logCall(ctx, "InjectRoute", fmt.Sprintf("RPC: InjectRoute(destination=%s, via=%s)", dst, via), []any{"destination", dst, "via", via}, e, err)
	return &quiltpb.InjectRouteResponse{Success: err == nil, Error: msg}, nil
}

// inject records the route as desired, then asks the helper for it. The
// record stays whatever the helper answers, so a resync retries a route
// the helper could not add now.
func (s *Runtime) inject(ctx context.Context, rawDst, rawIf string) (effect, error) {
	dst, err := ParseDestination(s.Policy, "destination", rawDst)
	if err != nil {
		return effect{}, err
	}
	ifname, err := ParseInterface(s.Policy, rawIf)
	if err != nil {
		return effect{}, err
	}
	c := route.Route{Dst: dst, Ifname: ifname}
	a, err := s.Routes.Apply(ctx, reconcile.Batch{Changes: []route.Route{c}, Check: func() error {
		if err := s.notOwnSubnet(dst); err != nil {
			return err
		}
		s.Routes.AgentCalled()
		return nil
	}})
	switch {
	case errors.Is(err, reconcile.ErrNotRecorded):
		return effect{}, fmt.Errorf("route %v dev %s not recorded, nothing changed: %w", dst, ifname, err)
	case err != nil:
		return effect{}, err
	case a.Errs[0] != nil:
		return effect{}, helperError(c, a.Errs[0])
	}
	res, recorded := a.Results[0], a.Recorded > 0
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

func (s *Runtime) RemoveRoute(ctx context.Context, req *quiltpb.RemoveRouteRequest) (*quiltpb.RemoveRouteResponse, error) {
	e, err := s.remove(ctx, req.Destination)
	dst := quote.Bound(req.Destination, logBound)
	msg := s.logCall(ctx, "RemoveRoute", fmt.Sprintf("RPC: RemoveRoute(destination=%s)", dst), []any{"destination", dst}, e, err)
	return &quiltpb.RemoveRouteResponse{Success: err == nil, Error: msg}, nil
}

// remove forgets the route, then asks the helper to delete it. If the
// helper cannot, the route is ours and no longer desired, so a resync
// removes it.
func (s *Runtime) remove(ctx context.Context, rawDst string) (effect, error) {
	dst, err := ParseDestination(s.Policy, "destination", rawDst)
	if err != nil {
		return effect{}, err
	}
	c := route.Route{Dst: dst}
	a, err := s.Routes.Apply(ctx, reconcile.Batch{Changes: []route.Route{c}, Check: func() error { return s.notOwnSubnet(dst) }})
	switch {
	case errors.Is(err, reconcile.ErrNotRecorded):
		return effect{}, fmt.Errorf("removal of route %v not recorded, nothing changed: %w", dst, err)
	case err != nil:
		return effect{}, err
	case a.Errs[0] != nil:
		return effect{}, helperError(c, a.Errs[0])
	}
	res, forgot := a.Results[0], a.Recorded > 0
	e := effect{changed: true, msg: fmt.Sprintf("Removed route: %v", dst), attrs: []any{"destination", dst, "result", res, "recorded", forgot}}
	if res == wire.ResultAbsent { // a change only if it was desired until now
		e.msg, e.changed = fmt.Sprintf("Route already absent: %v", dst), forgot
	}
	return e, nil
}

// notOwnSubnet refuses this node's own subnet as a destination.
func (s *Runtime) notOwnSubnet(dst netip.Prefix) error {
	if dst == s.subnet() {
		return fmt.Errorf("destination %v %w", dst, ErrOwnSubnet)
	}
	return nil
}
