package overlay

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/quiltmesh/quilt-runtime/proto/quiltpb"
)

// ErrRefused means quilt-runtime answered success=false.
var ErrRefused = errors.New("refused")

// zeroMAC is the FDB address that matches every frame VXLAN has no better
// entry for: broadcast (ARP), multicast and unknown unicast. One such entry
// per peer makes the node send those frames to every peer (head-end
// replication), which is all the data plane needs with nolearning.
const zeroMAC = "00:00:00:00:00:00"

// agent stands in for the Quilt Mesh agent: it calls each node's
// QuiltRuntime over gRPC exactly as the agent does, and writes the VXLAN
// FDB entries itself, as the agent does (our API has no call for them). It
// also plays the container runtime, which asks QuiltAdmin for addresses.
type agent struct {
	c     *cluster
	mu    sync.Mutex
	calls []Call // since the last take
	rpcs  int    // QuiltRuntime calls made, ever
}

// take returns the calls recorded since the last take.
func (a *agent) take() []Call {
	a.mu.Lock()
	defer a.mu.Unlock()
	calls := a.calls
	a.calls = nil
	return calls
}

// rpcCount returns how many QuiltRuntime calls the agent has made.
func (a *agent) rpcCount() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.rpcs
}

func (a *agent) record(c Call, rpc bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls = append(a.calls, c)
	if rpc {
		a.rpcs++
	}
}

// answer is what every QuiltRuntime response has.
type answer interface {
	GetSuccess() bool
	GetError() string
}

// rpc makes one QuiltRuntime call with a deadline and records it.
func (a *agent) rpc(ctx context.Context, n *node, what string, f func(context.Context) (answer, error)) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	r, err := f(ctx)
	call := Call{Node: n.name, Call: "QuiltRuntime." + what}
	switch {
	case err != nil:
		call.Answer = err.Error()
		err = fmt.Errorf("%s on %s: %w", what, n.name, err)
	case !r.GetSuccess():
		call.Answer = r.GetError()
		err = fmt.Errorf("%s on %s: %w: %s", what, n.name, ErrRefused, r.GetError())
	default:
		call.Success = true
	}
	a.record(call, true)
	return err
}

// configure tells the node its container subnet.
func (a *agent) configure(ctx context.Context, n *node) error {
	return a.rpc(ctx, n, fmt.Sprintf("ConfigureNodeSubnet(%v)", n.subnet), func(ctx context.Context) (answer, error) {
		return n.rt.ConfigureNodeSubnet(ctx, &quiltpb.ConfigureNodeSubnetRequest{Subnet: n.subnet.String()})
	})
}

// inject routes peer's subnet through the overlay on n.
func (a *agent) inject(ctx context.Context, n, peer *node) error {
	return a.rpc(ctx, n, fmt.Sprintf("InjectRoute(%v, %s)", peer.subnet, overlayDev), func(ctx context.Context) (answer, error) {
		return n.rt.InjectRoute(ctx, &quiltpb.InjectRouteRequest{Destination: peer.subnet.String(), ViaInterface: overlayDev})
	})
}

// remove removes the route to peer's subnet on n.
func (a *agent) remove(ctx context.Context, n, peer *node) error {
	return a.rpc(ctx, n, fmt.Sprintf("RemoveRoute(%v)", peer.subnet), func(ctx context.Context) (answer, error) {
		return n.rt.RemoveRoute(ctx, &quiltpb.RemoveRouteRequest{Destination: peer.subnet.String()})
	})
}

// fdb appends or deletes n's all-zero FDB entry towards peer's underlay
// address, the way the agent does with `bridge fdb`.
func (a *agent) fdb(ctx context.Context, n, peer *node, op string) error {
	args := []string{"fdb", op, zeroMAC, "dev", overlayDev, "dst", peer.underlay.String()}
	_, err := command(ctx, "bridge", append([]string{"-n", n.ns}, args...)...)
	call := Call{Node: n.name, Call: "bridge " + strings.Join(args, " "), Success: err == nil}
	if err != nil {
		call.Answer = err.Error()
	}
	a.record(call, false)
	return err
}

// allocate asks the node's IPAM for an address for a container, as the
// container runtime does.
func (a *agent) allocate(ctx context.Context, n *node, id string) (netip.Prefix, netip.Addr, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	call := Call{Node: n.name, Call: fmt.Sprintf("QuiltAdmin.AllocateIP(%s)", id)}
	r, err := n.admin.AllocateIP(ctx, &quiltpb.AllocateIPRequest{ContainerId: id})
	var ip netip.Addr
	var gw netip.Addr
	if err == nil {
		ip, err = netip.ParseAddr(r.Ip)
	}
	if err == nil {
		gw, err = netip.ParseAddr(r.Gateway)
	}
	var pfx netip.Prefix
	if err == nil {
		pfx, err = ip.Prefix(int(r.PrefixLength))
		pfx = netip.PrefixFrom(ip, pfx.Bits())
	}
	if err != nil {
		call.Answer = err.Error()
		a.record(call, false)
		return netip.Prefix{}, netip.Addr{}, fmt.Errorf("AllocateIP(%s) on %s: %w", id, n.name, err)
	}
	call.Success, call.Answer = true, fmt.Sprintf("%v gateway %v", pfx, gw)
	a.record(call, false)
	return pfx, gw, nil
}
