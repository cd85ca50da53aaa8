package frontend

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/quiltmesh/quilt-runtime/proto/quiltpb"
	"github.com/quiltmesh/quilt-runtime/shared/wire"
)

// Limits of the batch RPCs: changes in one message (so a message stays
// under MaxRecvMsgSize), and in one stream (twice the 65,536 node
// subnets of a /8 cluster).
const (
	MaxChangesPerMessage = 256
	MaxChangesPerStream  = 1 << 17
)

func (a *Admin) ApplyRoutes(stream grpc.ClientStreamingServer[quiltpb.ApplyRoutesRequest, quiltpb.ApplyRoutesResponse]) error {
	return serveBatch(a, stream, "ApplyRoutes", false, func(m *quiltpb.ApplyRoutesRequest) []*quiltpb.RouteChange { return m.Changes })
}

func (a *Admin) SyncRoutes(stream grpc.ClientStreamingServer[quiltpb.SyncRoutesRequest, quiltpb.ApplyRoutesResponse]) error {
	return serveBatch(a, stream, "SyncRoutes", true, func(m *quiltpb.SyncRoutesRequest) []*quiltpb.RouteChange { return m.Routes })
}

// serveBatch receives a batch stream, applies it, and answers.
func serveBatch[M any](a *Admin, stream grpc.ClientStreamingServer[M, quiltpb.ApplyRoutesResponse], rpc string, sync bool, changes func(*M) []*quiltpb.RouteChange) error {
	var resp *quiltpb.ApplyRoutesResponse
	in, err := receive(stream, changes)
	if err == nil {
		resp, err = a.applyBatch(stream.Context(), rpc, in, sync)
	}
	if err != nil {
		a.Log.Warn(rpc+" refused", "rpc", rpc, "changes", len(in), "err", err)
		a.calls.count(false, true)
		return err
	}
	return stream.SendAndClose(resp)
}

// receive reads a stream's messages within the batch limits.
func receive[M any](stream grpc.ClientStreamingServer[M, quiltpb.ApplyRoutesResponse], changes func(*M) []*quiltpb.RouteChange) ([]*quiltpb.RouteChange, error) {
	var all []*quiltpb.RouteChange
	for {
		m, err := stream.Recv()
		switch {
		case errors.Is(err, io.EOF):
			return all, nil
		case err != nil:
			return nil, err
		case len(changes(m)) > MaxChangesPerMessage:
			return nil, status.Errorf(codes.InvalidArgument, "a message carries %d changes; at most %d per message", len(changes(m)), MaxChangesPerMessage)
		}
		if all = append(all, changes(m)...); len(all) > MaxChangesPerStream {
			return nil, status.Errorf(codes.ResourceExhausted, "more than %d changes in one stream; split it", MaxChangesPerStream)
		}
	}
}

// applyBatch validates every change, then, holding every route lock,
// records them as desired in one transaction and has the helper carry them
// out in batches. For a sync, desired routes not in the set are removed.
// One invalid change applies nothing: the error names it and its rule.
func (a *Admin) applyBatch(ctx context.Context, rpc string, in []*quiltpb.RouteChange, sync bool) (*quiltpb.ApplyRoutesResponse, error) {
	start := time.Now()
	changes := make([]Change, len(in))
	seen := make(map[netip.Prefix]int, len(in))
	for i, c := range in {
		dst, err := ParseDestination(a.Policy, fmt.Sprintf("changes[%d].destination", i), c.Destination)
		if err == nil && (c.ViaInterface != "" || sync) {
			if changes[i].Ifname, err = ParseInterface(a.Policy, c.ViaInterface); err != nil {
				err = fmt.Errorf("changes[%d].%w", i, err)
			}
		}
		if j, dup := seen[dst]; err == nil && dup {
			err = fmt.Errorf("changes[%d].destination %v appears twice (also changes[%d]); give each destination once", i, dst, j)
		}
		if err != nil {
			return nil, status.Error(codes.InvalidArgument, err.Error())
		}
		changes[i].Dst, seen[dst] = dst, i
	}
	a.agentCalled()
	defer a.Routes.LockAll()()
	if sub := a.Subnet(); sub.IsValid() {
		if i, ok := seen[sub]; ok && changes[i].Ifname != "" {
			return nil, status.Errorf(codes.InvalidArgument, "changes[%d].destination %v %v", i, sub, ErrOwnSubnet)
		}
	}
	if sync {
		// The complete set: every route not in it goes, desired or not (a
		// route of ours nobody desires is the agent's to remove too, past
		// any limit of the resync's).
		gone := map[netip.Prefix]bool{}
		for dst := range a.Routes.All() {
			gone[dst] = true
		}
		if owned, err := a.Helper.List(ctx); err == nil {
			for _, rt := range owned {
				gone[rt.Dst] = true
			}
		}
		for _, dst := range slices.SortedFunc(maps.Keys(gone), comparePrefixes) {
			if _, ok := seen[dst]; !ok {
				changes = append(changes, Change{Dst: dst})
			}
		}
	}
	recorded, err := a.Routes.SetMany(changes)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "%d route changes not recorded, nothing changed: %v", len(changes), err)
	}
	res, errs := a.Helper.Apply(ctx, changes)
	resp := &quiltpb.ApplyRoutesResponse{Results: make([]*quiltpb.RouteChangeResult, len(changes))}
	count := map[quiltpb.RouteResult]int{}
	for i, c := range changes {
		r := &quiltpb.RouteChangeResult{Destination: c.Dst.String(), Result: batchResult[res[i]]}
		if c.Ifname != "" || errs[i] == nil {
			a.noteConflict(c.Dst, errs[i])
		}
		if errs[i] != nil {
			op := map[bool]string{true: "add", false: "delete"}[c.Ifname != ""]
			r.Result, r.Error = quiltpb.RouteResult_ROUTE_RESULT_FAILED, helperError(op, c.Dst, c.Ifname, errs[i]).Error()
			if resp.Failed++; resp.Failed <= 10 {
				a.Log.Warn(rpc+": route change failed", "rpc", rpc, "destination", c.Dst, "dev", c.Ifname, "err", r.Error)
			}
		}
		resp.Results[i] = r
		count[r.Result]++
	}
	// A batch that found everything as asked is logged at DEBUG, as a
	// no-op InjectRoute is, and counted for the summary.
	changed := recorded > 0 || count[quiltpb.RouteResult_ROUTE_RESULT_UNCHANGED] < len(changes)
	a.calls.count(changed, resp.Failed > 0)
	level := slog.LevelDebug
	if changed {
		level = slog.LevelInfo
	}
	a.Log.Log(ctx, level, fmt.Sprintf("%s: %d changes", rpc, len(changes)), "rpc", rpc, "changes", len(changes), "created", count[quiltpb.RouteResult_ROUTE_RESULT_CREATED],
		"unchanged", count[quiltpb.RouteResult_ROUTE_RESULT_UNCHANGED], "moved", count[quiltpb.RouteResult_ROUTE_RESULT_MOVED],
		"deleted", count[quiltpb.RouteResult_ROUTE_RESULT_DELETED], "failed", resp.Failed, "recorded", recorded, "took", time.Since(start).Round(time.Microsecond))
	return resp, nil
}

// batchResult names the helper's results in the batch RPCs' terms.
var batchResult = map[wire.Result]quiltpb.RouteResult{
	wire.ResultCreated: quiltpb.RouteResult_ROUTE_RESULT_CREATED, wire.ResultUnchanged: quiltpb.RouteResult_ROUTE_RESULT_UNCHANGED,
	wire.ResultMoved: quiltpb.RouteResult_ROUTE_RESULT_MOVED, wire.ResultDeleted: quiltpb.RouteResult_ROUTE_RESULT_DELETED,
	wire.ResultAbsent: quiltpb.RouteResult_ROUTE_RESULT_UNCHANGED,
}
