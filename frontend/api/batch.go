package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
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
	in, err := receive(a, stream, changes, sync)
	if err == nil {
		resp, err = a.applyBatch(stream.Context(), rpc, in, sync)
	}
	if err != nil {
		a.Log.Warn(rpc+" refused", "rpc", rpc, "changes", in.n, "err", err)
		a.calls.count(false, true)
		return err
	}
	return stream.SendAndClose(resp)
}

// batch is a stream's changes, validated as they arrive: the protos of a
// message are not kept past it.
type batch struct {
	changes []route.Route // every change up to the first refused one
	n       int           // changes received, past a refused one too
	refused error         // why the first change refused was, if one was
}

// receive reads a stream's messages within the batch limits and validates
// each change as it comes; a stream the limits refuse is no batch at all.
// The changes are kept a message's worth at a time, and put together once
// the stream ends, in one allocation of their exact size.
func receive[M any](a *Admin, stream grpc.ClientStreamingServer[M, quiltpb.ApplyRoutesResponse], changes func(*M) []*quiltpb.RouteChange, sync bool) (batch, error) {
	var b batch
	var parts [][]route.Route
	for {
		m, err := stream.Recv()
		switch {
		case errors.Is(err, io.EOF):
			b.changes = slices.Concat(parts...)
			return b, nil
		case err != nil:
			return batch{}, err
		case len(changes(m)) > MaxChangesPerMessage:
			return batch{}, status.Errorf(codes.InvalidArgument, "a message carries %d changes; at most %d per message", len(changes(m)), MaxChangesPerMessage)
		}
		var part []route.Route
		for _, c := range changes(m) {
			if b.refused == nil {
				var rc route.Route
				if rc, b.refused = a.parseChange(b.n, c, sync); b.refused == nil {
					part = append(part, rc)
				}
			}
			b.n++
		}
		parts = append(parts, slices.Clip(part))
		if b.n > MaxChangesPerStream {
			return batch{}, status.Errorf(codes.ResourceExhausted, "more than %d changes in one stream; split it", MaxChangesPerStream)
		}
	}
}

// parseChange validates the ith change of a batch: a destination, and an
// interface for an add (every change of a sync is one). The message names
// the change: changes[i].destination, changes[i].via_interface.
func (a *Admin) parseChange(i int, c *quiltpb.RouteChange, sync bool) (route.Route, error) {
	dst, err := ParseDestination(a.Policy, "destination", c.Destination)
	if err != nil {
		return route.Route{}, fmt.Errorf("changes[%d].%w", i, err)
	}
	rc := route.Route{Dst: dst}
	if c.ViaInterface != "" || sync {
		if rc.Ifname, err = ParseInterface(a.Policy, c.ViaInterface); err != nil {
			return route.Route{}, fmt.Errorf("changes[%d].%w", i, err)
		}
	}
	return rc, nil
}

// firstDuplicate returns the first change (in the batch's order) whose
// destination an earlier change has too, and that earlier one, or -1.
func firstDuplicate(changes []route.Route) (i, earlier int) {
	order := make([]int32, len(changes))
	for j := range order {
		order[j] = int32(j)
	}
	slices.SortStableFunc(order, func(x, y int32) int { return route.Compare(changes[x].Dst, changes[y].Dst) })
	i, earlier = -1, -1
	for j := 1; j < len(order); j++ {
		if changes[order[j]].Dst == changes[order[j-1]].Dst && (i < 0 || int(order[j]) < i) && (j < 2 || changes[order[j-2]].Dst != changes[order[j]].Dst) {
			i, earlier = int(order[j]), int(order[j-1])
		}
	}
	return i, earlier
}

// applyBatch validates every change, then has the reconciler record them
// as desired in one transaction and the helper carry them out. For a
// sync, desired routes not in the set are removed. One invalid change
// applies nothing: the error names it and its rule.
func (a *Admin) applyBatch(ctx context.Context, rpc string, in batch, sync bool) (*quiltpb.ApplyRoutesResponse, error) {
	start := time.Now()
	changes := in.changes
	if i, j := firstDuplicate(changes); i >= 0 {
		return nil, status.Errorf(codes.InvalidArgument, "changes[%d].destination %v appears twice (also changes[%d]); give each destination once", i, changes[i].Dst, j)
	}
	if in.refused != nil {
		return nil, status.Error(codes.InvalidArgument, in.refused.Error())
	}
	a.Routes.AgentCalled()
	applied, err := a.Routes.Apply(ctx, reconcile.Batch{Changes: changes, Sync: sync, Check: func() error {
		sub := a.subnet()
		if i := slices.IndexFunc(changes, func(c route.Route) bool { return c.Dst == sub && !c.IsRemoval() }); sub.IsValid() && i >= 0 {
			return status.Errorf(codes.InvalidArgument, "changes[%d].destination %v %v", i, sub, ErrOwnSubnet)
		}
		return nil
	}})
	switch {
	case errors.Is(err, reconcile.ErrNotRecorded):
		return nil, status.Errorf(codes.Internal, "%d route changes not recorded, nothing changed: %v", len(applied.Changes), err)
	case err != nil:
		return nil, err
	}
	resp := &quiltpb.ApplyRoutesResponse{}
	results := newRepeated(resp, "results")
	count := map[quiltpb.RouteResult]int{}
	var r quiltpb.RouteChangeResult
	for i, c := range applied.Changes {
		r.Destination, r.Result, r.Error = c.Dst.String(), routeResult(applied.Results[i]), ""
		if err := applied.Errs[i]; err != nil {
			r.Result, r.Error = quiltpb.RouteResult_ROUTE_RESULT_FAILED, helperError(c, err).Error()
			if resp.Failed++; resp.Failed <= 10 {
				a.Log.Warn(rpc+": route change failed", "rpc", rpc, "destination", c.Dst, "dev", c.Ifname, "err", r.Error)
			}
		}
		results.add(&r)
		count[r.Result]++
	}
	results.into(resp)
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
