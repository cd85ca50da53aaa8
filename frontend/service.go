package frontend

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/quiltmesh/quilt-runtime/proto/quiltpb"
	"github.com/quiltmesh/quilt-runtime/shared/policy"
	"github.com/quiltmesh/quilt-runtime/shared/wire"
)

// Allocations is the seam for IPAM: how many container IPs are allocated
// from a subnet. A nil Allocations means none ever are.
type Allocations interface {
	Count(subnet netip.Prefix) int
}

// Service answers the agent's three RPCs.
type Service struct {
	quiltpb.UnimplementedQuiltRuntimeServer
	Policy      policy.Policy
	Helper      RouteHelper
	Allocations Allocations
	Log         *slog.Logger

	mu     sync.Mutex
	subnet netip.Prefix // this node's container subnet, once configured
}

// Subnet returns the configured node subnet, if any.
func (s *Service) Subnet() netip.Prefix {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.subnet
}

func (s *Service) ConfigureNodeSubnet(ctx context.Context, req *quiltpb.ConfigureNodeSubnetRequest) (*quiltpb.ConfigureNodeSubnetResponse, error) {
	s.Log.Info(fmt.Sprintf("RPC: ConfigureNodeSubnet(subnet=%s)", clip(req.Subnet)), "rpc", "ConfigureNodeSubnet", "subnet", clip(req.Subnet))
	err := s.configure(req.Subnet)
	return &quiltpb.ConfigureNodeSubnetResponse{Success: err == nil, Error: s.outcome("ConfigureNodeSubnet", err)}, nil
}

func (s *Service) configure(raw string) error {
	subnet, err := ParseDestination(s.Policy, "subnet", raw)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if subnet == s.subnet {
		s.Log.Info("IPAM already configured with subnet: "+subnet.String(), "subnet", subnet)
		return nil
	}
	if s.subnet.IsValid() && s.Allocations != nil {
		if n := s.Allocations.Count(s.subnet); n > 0 {
			return fmt.Errorf("subnet %v: this node already allocates from %v and %d container IPs are live; release them first", subnet, s.subnet, n)
		}
	}
	s.subnet = subnet
	s.Log.Info("IPAM configured with subnet: "+subnet.String(), "subnet", subnet)
	return nil
}

func (s *Service) InjectRoute(ctx context.Context, req *quiltpb.InjectRouteRequest) (*quiltpb.InjectRouteResponse, error) {
	s.Log.Info(fmt.Sprintf("RPC: InjectRoute(destination=%s, via=%s)", clip(req.Destination), clip(req.ViaInterface)),
		"rpc", "InjectRoute", "destination", clip(req.Destination), "via", clip(req.ViaInterface))
	err := s.inject(ctx, req.Destination, req.ViaInterface)
	return &quiltpb.InjectRouteResponse{Success: err == nil, Error: s.outcome("InjectRoute", err)}, nil
}

func (s *Service) inject(ctx context.Context, rawDst, rawIf string) error {
	dst, err := s.destination(rawDst)
	if err != nil {
		return err
	}
	ifname, err := ParseInterface(s.Policy, rawIf)
	if err != nil {
		return err
	}
	res, err := s.Helper.Add(ctx, dst, ifname)
	if err != nil {
		return helperError("add", dst, ifname, err)
	}
	msg := map[wire.Result]string{wire.ResultCreated: "Added route", wire.ResultUnchanged: "Route already present", wire.ResultReplaced: "Moved route"}[res]
	s.Log.Info(fmt.Sprintf("%s: %v dev %s", msg, dst, ifname), "destination", dst, "dev", ifname, "result", res)
	return nil
}

func (s *Service) RemoveRoute(ctx context.Context, req *quiltpb.RemoveRouteRequest) (*quiltpb.RemoveRouteResponse, error) {
	s.Log.Info(fmt.Sprintf("RPC: RemoveRoute(destination=%s)", clip(req.Destination)), "rpc", "RemoveRoute", "destination", clip(req.Destination))
	err := s.remove(ctx, req.Destination)
	return &quiltpb.RemoveRouteResponse{Success: err == nil, Error: s.outcome("RemoveRoute", err)}, nil
}

func (s *Service) remove(ctx context.Context, rawDst string) error {
	dst, err := s.destination(rawDst)
	if err != nil {
		return err
	}
	res, err := s.Helper.Delete(ctx, dst)
	if err != nil {
		return helperError("delete", dst, "", err)
	}
	msg := map[wire.Result]string{wire.ResultDeleted: "Removed route", wire.ResultAbsent: "Route already absent"}[res]
	s.Log.Info(fmt.Sprintf("%s: %v", msg, dst), "destination", dst, "result", res)
	return nil
}

// destination parses a peer's subnet and refuses this node's own.
func (s *Service) destination(raw string) (netip.Prefix, error) {
	dst, err := ParseDestination(s.Policy, "destination", raw)
	if err == nil && dst == s.Subnet() {
		err = fmt.Errorf("destination %v %w", dst, ErrOwnSubnet)
	}
	return dst, err
}

// outcome logs a failure and returns the message for the reply.
func (s *Service) outcome(rpc string, err error) string {
	if err == nil {
		return ""
	}
	s.Log.Warn(rpc+" failed", "rpc", rpc, "err", err)
	return err.Error()
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
	case errors.Is(err, ErrUnavailable):
		return err
	case errors.Is(err, wire.StatusConflict):
		return fmt.Errorf("route %v exists and is not managed by quilt; refusing to replace it (%w)", dst, err)
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
