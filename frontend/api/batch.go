package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/quiltmesh/quilt-runtime/frontend/reconcile"
	"github.com/quiltmesh/quilt-runtime/frontend/route"
	"github.com/quiltmesh/quilt-runtime/proto/quiltpb"
)

// Limits of the batch RPCs: changes in one message (so a message stays
// under the server's largest message), and in one stream (twice the
// 65,536 node subnets of a /8 cluster).
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

// applyBatch validates every change, then has the reconciler record them
// as desired in one transaction and the helper carry them out. For a
// sync, desired routes not in the set are removed. One invalid change
// applies nothing: the error names it and its rule.
func (a *Admin) applyBatch(ctx context.Context, rpc string, in []*quiltpb.RouteChange, sync bool) (*quiltpb.ApplyRoutesResponse, error) {
	start := time.Now()
	changes := make([]route.Route, len(in))
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
	a.Routes.AgentCalled()
	applied, err := a.Routes.Apply(ctx, reconcile.Batch{Changes: changes, Sync: sync, Check: func() error {
		if sub := a.subnet(); sub.IsValid() {
			if i, ok := seen[sub]; ok && !changes[i].IsRemoval() {
				return status.Errorf(codes.InvalidArgument, "changes[%d].destination %v %v", i, sub, ErrOwnSubnet)
			}
		}
		return nil
	}})
	switch {
	case errors.Is(err, reconcile.ErrNotRecorded):
		return nil, status.Errorf(codes.Internal, "%d route changes not recorded, nothing changed: %v", len(applied.Changes), err)
	case err != nil:
		return nil, err
	}
	resp := &quiltpb.ApplyRoutesResponse{Results: make([]*quiltpb.RouteChangeResult, len(applied.Changes))}
	count := map[quiltpb.RouteResult]int{}
	for i, c := range applied.Changes {
		r := &quiltpb.RouteChangeResult{Destination: c.Dst.String(), Result: routeResult(applied.Results[i])}
		if err := applied.Errs[i]; err != nil {
			r.Result, r.Error = quiltpb.RouteResult_ROUTE_RESULT_FAILED, helperError(c, err).Error()
			if resp.Failed++; resp.Failed <= 10 {
				a.Log.Warn(rpc+": route change failed", "rpc", rpc, "destination", c.Dst, "dev", c.Ifname, "err", r.Error)
			}
		}
		resp.Results[i] = r
		count[r.Result]++
	}
	// A batch that found everything as asked is logged at DEBUG, as a
	// no-op InjectRoute is, and counted for the summary.
	n := len(applied.Changes)
	changed := applied.Recorded > 0 || count[quiltpb.RouteResult_ROUTE_RESULT_UNCHANGED] < n
	a.calls.count(changed, resp.Failed > 0)
	level := slog.LevelDebug
	if changed {
		level = slog.LevelInfo
	}
	a.Log.Log(ctx, level, fmt.Sprintf("%s: %d changes", rpc, n), "rpc", rpc, "changes", n, "created", count[quiltpb.RouteResult_ROUTE_RESULT_CREATED],
		"unchanged", count[quiltpb.RouteResult_ROUTE_RESULT_UNCHANGED], "moved", count[quiltpb.RouteResult_ROUTE_RESULT_MOVED],
		"deleted", count[quiltpb.RouteResult_ROUTE_RESULT_DELETED], "failed", resp.Failed, "recorded", applied.Recorded, "took", time.Since(start).Round(time.Microsecond))
	return resp, nil
}
