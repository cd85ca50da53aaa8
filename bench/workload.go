package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/quiltmesh/quilt-runtime/proto/quiltpb"
)

// rpcTimeout bounds one RPC; a phase's limit stops new ones, never one in
// flight.
const rpcTimeout = time.Minute

// ApplyChunk is the most route changes one ApplyRoutes message may carry
// (proto/admin.proto), and what the batch workloads send.
const ApplyChunk = 256

// clients are the connections one gRPC system is driven through: one per
// concurrent client, the first also the sequential one.
type clients struct {
	conns  []*grpc.ClientConn
	rt     []quiltpb.QuiltRuntimeClient
	admin  quiltpb.QuiltAdminClient
	health healthpb.HealthClient
}

func (c *clients) close() {
	for _, cc := range c.conns {
		cc.Close()
	}
}

// outcome is what a phase of RPCs did: which of its routes completed,
// how long each took, and the first failure.
type outcome struct {
	done []int // indices into the plan's peers, in the order given
	lat  []time.Duration
	took time.Duration
	err  error
}

// phase calls op for each route index with the given number of workers,
// each with its own client, until all are done, one fails, ctx ends or the
// deadline passes (no new call starts after it).
func phase(ctx context.Context, idx []int, workers int, deadline time.Time, op func(ctx context.Context, worker, i int) error) outcome {
	lat := make([]time.Duration, len(idx))
	ok := make([]bool, len(idx))
	var next atomic.Int64
	var stop atomic.Bool
	var once sync.Once
	var first error
	var wg sync.WaitGroup
	start := time.Now()
	for w := range min(workers, len(idx)) {
		wg.Go(func() {
			for !stop.Load() && ctx.Err() == nil && time.Now().Before(deadline) {
				k := int(next.Add(1) - 1)
				if k >= len(idx) {
					return
				}
				t0 := time.Now()
				err := op(ctx, w, idx[k])
				lat[k] = time.Since(t0)
				if err != nil && ctx.Err() != nil {
					return // interrupted: not the server's failure
				}
				if err != nil {
					once.Do(func() { first = err })
					stop.Store(true)
					return
				}
				ok[k] = true
			}
		})
	}
	wg.Wait()
	o := outcome{took: time.Since(start), err: first}
	for k, i := range idx {
		if ok[k] {
			o.done = append(o.done, i)
			o.lat = append(o.lat, lat[k])
		}
	}
	if o.err == nil {
		o.err = ctx.Err()
	}
	return o
}

// inject calls InjectRoute for one route.
func (c *clients) inject(ctx context.Context, w int, dst, dev string) error {
	ctx, cancel := context.WithTimeout(ctx, rpcTimeout)
	defer cancel()
	r, err := c.rt[w].InjectRoute(ctx, &quiltpb.InjectRouteRequest{Destination: dst, ViaInterface: dev})
	if err == nil && !r.Success {
		err = fmt.Errorf("InjectRoute(%s, %s): %s", dst, dev, r.Error)
	}
	return err
}

// check calls Health.Check: a round trip through gRPC that changes nothing.
func (c *clients) check(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, rpcTimeout)
	defer cancel()
	_, err := c.health.Check(ctx, &healthpb.HealthCheckRequest{Service: quiltpb.QuiltRuntime_ServiceDesc.ServiceName})
	return err
}

// remove calls RemoveRoute for one route.
func (c *clients) remove(ctx context.Context, w int, dst string) error {
	ctx, cancel := context.WithTimeout(ctx, rpcTimeout)
	defer cancel()
	r, err := c.rt[w].RemoveRoute(ctx, &quiltpb.RemoveRouteRequest{Destination: dst})
	if err == nil && !r.Success {
		err = fmt.Errorf("RemoveRoute(%s): %s", dst, r.Error)
	}
	return err
}

// errUnimplemented marks a server that answered codes.Unimplemented.
var errUnimplemented = errors.New("the server answered Unimplemented")

// apply streams the changes to ApplyRoutes, ApplyChunk per message, and
// waits for the answer; the time covers the whole call. It checks there is
// one result per change, none failed and each is what the change asked for
// (want); a server without the RPC gives errUnimplemented.
func (c *clients) apply(ctx context.Context, changes []*quiltpb.RouteChange, want quiltpb.RouteResult, limit time.Duration) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	start := time.Now()
	stream, err := c.admin.ApplyRoutes(ctx)
	for i := 0; err == nil && i < len(changes); i += ApplyChunk {
		err = stream.Send(&quiltpb.ApplyRoutesRequest{Changes: changes[i:min(i+ApplyChunk, len(changes))]})
	}
	var resp *quiltpb.ApplyRoutesResponse
	if err == nil || errors.Is(err, io.EOF) { // io.EOF: the server ended the stream; its status says why
		resp, err = stream.CloseAndRecv()
	}
	took := time.Since(start)
	switch {
	case status.Code(err) == codes.Unimplemented:
		return took, errUnimplemented
	case status.Code(err) == codes.DeadlineExceeded && ctx.Err() != nil:
		return took, fmt.Errorf("ApplyRoutes did not answer within the limit of %v", limit)
	case err != nil:
		return took, fmt.Errorf("ApplyRoutes: %w", err)
	case len(resp.Results) != len(changes) || resp.Failed != 0:
		return took, fmt.Errorf("ApplyRoutes: %d results for %d changes, %d failed%s", len(resp.Results), len(changes), resp.Failed, firstFailure(resp))
	}
	for i, r := range resp.Results {
		if r.Destination != changes[i].Destination || r.Result != want {
			return took, fmt.Errorf("ApplyRoutes: result %d is %s %v, want %s %v", i, r.Destination, r.Result, changes[i].Destination, want)
		}
	}
	return took, nil
}

func firstFailure(resp *quiltpb.ApplyRoutesResponse) string {
	for _, r := range resp.Results {
		if r.Result == quiltpb.RouteResult_ROUTE_RESULT_FAILED {
			return fmt.Sprintf(" (first: %s: %s)", r.Destination, r.Error)
		}
	}
	return ""
}

// changes builds the route changes for the given peers: adds via dev, or
// removals when dev is empty.
func changes(peers []netip.Prefix, idx []int, dev string) []*quiltpb.RouteChange {
	out := make([]*quiltpb.RouteChange, len(idx))
	for k, i := range idx {
		out[k] = &quiltpb.RouteChange{Destination: peers[i].String(), ViaInterface: dev}
	}
	return out
}
