package api

import (
	"cmp"
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/quiltmesh/quilt-runtime/frontend/internal/quote"
	"github.com/quiltmesh/quilt-runtime/frontend/ipam"
	"github.com/quiltmesh/quilt-runtime/frontend/reconcile"
	"github.com/quiltmesh/quilt-runtime/proto/quiltpb"
)

func (a *Admin) AllocateIP(ctx context.Context, req *quiltpb.AllocateIPRequest) (*quiltpb.AllocateIPResponse, error) {
	k := ipam.Key{ContainerID: req.ContainerId, Ifname: req.InterfaceName}
	ip, pool, existing, err := a.IPAM.Allocate(k, req.Network)
	if err != nil {
		a.Log.Warn("AllocateIP failed", "rpc", "AllocateIP", "container_id", quote.Bound(req.ContainerId, logBound),
			"interface", quote.Bound(req.InterfaceName, logBound), "network", quote.Bound(req.Network, logBound), "err", err)
		return nil, ipamStatus(err)
	}
	a.Log.Info(fmt.Sprintf("Allocated IP %v to %s", ip, describe(k)), "rpc", "AllocateIP", "container_id", k.ContainerID, "interface", k.Ifname,
		"network", req.Network, "ip", ip, "existing", existing)
	return &quiltpb.AllocateIPResponse{Ip: ip.String(), PrefixLength: int32(pool.Subnet.Bits()), Gateway: pool.Gateway.String(),
		Subnet: pool.Subnet.String(), Existing: existing, ClusterCidr: a.Policy.Cluster.String()}, nil
}

func (a *Admin) ReleaseIP(ctx context.Context, req *quiltpb.ReleaseIPRequest) (*quiltpb.ReleaseIPResponse, error) {
	k := ipam.Key{ContainerID: req.ContainerId, Ifname: req.InterfaceName}
	ip, released, err := a.IPAM.Release(k)
	if err != nil {
		a.Log.Warn("ReleaseIP failed", "rpc", "ReleaseIP", "container_id", quote.Bound(req.ContainerId, logBound),
			"interface", quote.Bound(req.InterfaceName, logBound), "err", err)
		return nil, ipamStatus(err)
	}
	if released {
		a.Log.Info(fmt.Sprintf("Released IP %v of %s", ip, describe(k)), "rpc", "ReleaseIP", "container_id", k.ContainerID, "interface", k.Ifname, "ip", ip)
		return &quiltpb.ReleaseIPResponse{Released: true, Ip: ip.String()}, nil
	}
	a.Log.Info("No IP to release for "+describe(k), "rpc", "ReleaseIP", "container_id", k.ContainerID, "interface", k.Ifname)
	return &quiltpb.ReleaseIPResponse{}, nil
}

// describe names an allocation's key in a log message.
func describe(k ipam.Key) string {
	if k.Ifname == "" {
		return "container " + k.ContainerID
	}
	return "container " + k.ContainerID + " interface " + k.Ifname
}

// GarbageCollectIPs releases the network's allocations that no valid
// attachment names and that are older than the grace period.
func (a *Admin) GarbageCollectIPs(ctx context.Context, req *quiltpb.GarbageCollectIPsRequest) (*quiltpb.GarbageCollectIPsResponse, error) {
	grace := time.Duration(req.GraceSeconds * float64(time.Second))
	keep := make(map[ipam.Key]bool, len(req.Valid))
	for _, v := range req.Valid {
		k := ipam.Key{ContainerID: v.ContainerId, Ifname: v.InterfaceName}
		if err := k.Check(); err != nil {
			return nil, status.Error(codes.InvalidArgument, "valid attachment: "+err.Error())
		}
		keep[k] = true
	}
	if req.GraceSeconds < 0 || grace < 0 {
		return nil, status.Errorf(codes.InvalidArgument, "grace_seconds %v: want zero or more", req.GraceSeconds)
	}
	released, err := a.IPAM.Collect(req.Network, keep, time.Now().Add(-grace))
	if err != nil {
		a.Log.Warn("GarbageCollectIPs failed", "rpc", "GarbageCollectIPs", "network", quote.Bound(req.Network, logBound), "err", err)
		return nil, ipamStatus(err)
	}
	resp := &quiltpb.GarbageCollectIPsResponse{}
	for _, al := range released {
		a.Log.Info(fmt.Sprintf("Released IP %v of %s: not a valid attachment of network %s", al.IP, describe(al.Key), al.Network),
			"rpc", "GarbageCollectIPs", "container_id", al.ContainerID, "interface", al.Ifname, "network", al.Network, "ip", al.IP)
		resp.Released = append(resp.Released, allocationPB(al))
	}
	for _, al := range a.IPAM.List() {
		if al.Network == req.Network {
			resp.Kept++
		}
	}
	a.Log.Info("GarbageCollectIPs done", "rpc", "GarbageCollectIPs", "network", req.Network, "valid", len(keep), "released", len(released),
		"kept", resp.Kept, "grace", grace)
	return resp, nil
}

func allocationPB(al ipam.Allocation) *quiltpb.Allocation {
	return &quiltpb.Allocation{ContainerId: al.ContainerID, InterfaceName: al.Ifname, Ip: al.IP.String(), Network: al.Network}
}

func (a *Admin) ListAllocations(ctx context.Context, req *quiltpb.ListAllocationsRequest) (*quiltpb.ListAllocationsResponse, error) {
	resp := &quiltpb.ListAllocationsResponse{}
	if pool, ok := a.IPAM.Pool(); ok {
		resp.Subnet, resp.Gateway, resp.RangeFirst, resp.RangeLast = pool.Subnet.String(), pool.Gateway.String(), pool.First.String(), pool.Last.String()
	}
	for _, al := range a.IPAM.List() {
		if req.ContainerId == "" || req.ContainerId == al.ContainerID {
			resp.Allocations = append(resp.Allocations, allocationPB(al))
		}
	}
	return resp, nil
}

// ListRoutes asks the helper for our routes now and sets them beside the
// desired ones. Without the helper it still lists what is desired.
func (a *Admin) ListRoutes(ctx context.Context, _ *quiltpb.ListRoutesRequest) (*quiltpb.ListRoutesResponse, error) {
	resp := &quiltpb.ListRoutesResponse{HelperAvailable: true}
	statuses, err := a.Routes.Statuses(ctx)
	if err != nil {
		resp.HelperAvailable, resp.HelperError = false, err.Error()
	}
	routes := newRepeated(resp, "routes")
	var rs quiltpb.RouteStatus
	for st := range statuses {
		rs.Destination, rs.DesiredInterface, rs.InstalledInterface, rs.Detail = st.Dst.String(), st.Want, st.Have, ""
		switch {
		case st.Want == "":
			rs.State = quiltpb.RouteState_ROUTE_STATE_STRAY
		case !resp.HelperAvailable:
			rs.State, rs.Detail = quiltpb.RouteState_ROUTE_STATE_UNSPECIFIED, "route helper unavailable"
		case st.Have == st.Want:
			rs.State = quiltpb.RouteState_ROUTE_STATE_IN_SYNC
			if st.Adopted {
				rs.Detail = "adopted from the kernel (the state file was new); not yet confirmed by the agent"
			}
		case st.Conflict != "":
			rs.State, rs.Detail = quiltpb.RouteState_ROUTE_STATE_CONFLICT, st.Conflict
		case st.Have == "":
			rs.State = quiltpb.RouteState_ROUTE_STATE_MISSING
		default:
			rs.State = quiltpb.RouteState_ROUTE_STATE_MISROUTED
		}
		routes.add(&rs)
	}
	routes.into(resp)
	return resp, nil
}

func (a *Admin) GetStatus(ctx context.Context, _ *quiltpb.GetStatusRequest) (*quiltpb.GetStatusResponse, error) {
	resp := &quiltpb.GetStatusResponse{Version: a.Version, StateDir: a.StateDir, ResyncIntervalSeconds: a.ResyncInterval.Seconds(),
		Allocations: int32(a.IPAM.Count()), DesiredRoutes: int32(a.Routes.DesiredLen())}
	if pool, ok := a.IPAM.Pool(); ok {
		resp.Subnet, resp.Gateway, resp.Capacity = pool.Subnet.String(), pool.Gateway.String(), int32(pool.Capacity())
	}
	up, herr := a.Helper.Health()
	resp.HelperAvailable = up
	if herr != nil {
		resp.HelperError = herr.Error()
	}
	// What the helper holds now: a route injected since the last resync
	// must not read as missing.
	if n, inSync, err := a.Routes.Installed(ctx); err != nil {
		resp.RoutesNowError = err.Error()
	} else {
		resp.InstalledRoutesNow, resp.InSyncRoutesNow = int32(n), int32(inSync)
	}
	r := a.Routes.LastResync()
	resp.InstalledRoutes = int32(r.Installed)
	resp.LastResync = resyncStatus(r)
	resp.AdoptedRoutes = int32(a.Routes.AdoptedLen())
	resp.AdoptGraceSeconds = a.Routes.AdoptGrace().Seconds()
	limit := a.Routes.RemovalLimit()
	resp.RemovalLimit = int32(limit.Of(int(cmp.Or(resp.InstalledRoutesNow, resp.InstalledRoutes))))
	resp.ResyncMaxRemovals = limit.String()
	return resp, nil
}

// resyncStatus is what the admin service shows of a resync.
func resyncStatus(r reconcile.ResyncResult) *quiltpb.ResyncStatus {
	st := &quiltpb.ResyncStatus{DurationSeconds: r.Duration.Seconds(), Ok: r.OK(), Added: int32(r.Added), Moved: int32(r.Moved),
		Removed: int32(r.Removed), Conflicts: int32(r.Conflicts), Failed: int32(r.Failed), Adopted: int32(r.Adopted),
		Forgotten: int32(r.Forgotten), Held: int32(r.Held)}
	if !r.Start.IsZero() {
		st.Time = r.Start.UTC().Format(time.RFC3339Nano)
	}
	if r.Err != nil {
		st.Error = r.Err.Error()
	}
	return st
}

// Resync runs a resync now, or with DryRun says what one would do. With
// AllowRemovals it removes routes nobody asked to remove past the removal
// limit: an operator's explicit ask.
func (a *Admin) Resync(ctx context.Context, req *quiltpb.ResyncRequest) (*quiltpb.ResyncResponse, error) {
	var p *reconcile.Plan
	resp := &quiltpb.ResyncResponse{}
	if req.DryRun {
		var err error
		if p, err = a.Routes.Plan(ctx, req.AllowRemovals); err != nil {
			return nil, status.Error(codes.Unavailable, err.Error())
		}
	} else {
		var r reconcile.ResyncResult
		r, p = a.Routes.ResyncWith(ctx, req.AllowRemovals)
		resp.Result = resyncStatus(r)
	}
	if p == nil { // the helper did not list: nothing was planned
		return resp, nil
	}
	for _, c := range p.Adopt {
		resp.Adopt = append(resp.Adopt, &quiltpb.RouteStatus{Destination: c.Dst.String(), DesiredInterface: c.Ifname, InstalledInterface: c.Ifname})
	}
	for _, dst := range p.Forget {
		resp.Forget = append(resp.Forget, dst.String())
	}
	for c := range p.Changes() {
		rs := &quiltpb.RouteStatus{Destination: c.Dst.String(), DesiredInterface: c.Want, InstalledInterface: c.Have}
		switch {
		case c.Held:
			rs.Detail = "held back: more removals than the limit"
			resp.Remove = append(resp.Remove, rs)
		case c.Want == "":
			resp.Remove = append(resp.Remove, rs)
		case c.Have == "":
			resp.Add = append(resp.Add, rs)
		default:
			resp.Move = append(resp.Move, rs)
		}
	}
	resp.RemovalLimit = int32(p.Limit)
	resp.RemovalsHeld = p.Held
	return resp, nil
}
