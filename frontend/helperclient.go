package frontend

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/quiltmesh/quilt-runtime/shared/wire"
)

// ErrUnavailable means the route helper could not be asked: not running,
// not reachable, too slow, or speaking another protocol.
var ErrUnavailable = errors.New("route helper unavailable")

// Route is one route the helper reports as ours.
type Route struct {
	Dst    netip.Prefix
	Ifname string
}

// RouteHelper is what the service needs from the privileged helper.
type RouteHelper interface {
	Hello(ctx context.Context) error
	Add(ctx context.Context, dst netip.Prefix, ifname string) (wire.Result, error)
	Delete(ctx context.Context, dst netip.Prefix) (wire.Result, error)
	List(ctx context.Context) ([]Route, error)
}

// HelperClient speaks shared/wire to the helper over one Unix
// SOCK_SEQPACKET connection, one request at a time. A broken connection is
// re-dialled on the next request, no sooner than the backoff allows.
type HelperClient struct {
	Path    string
	Timeout time.Duration // deadline of each request

	mu      sync.Mutex
	conn    *net.UnixConn
	tag     uint32
	backoff time.Duration
	retry   time.Time // no dial before this
	lastErr error
}

// Backoff between dials after a failure: doubling from min to max.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 5 * time.Second
)

// Hello checks the helper answers and speaks our protocol version.
func (h *HelperClient) Hello(ctx context.Context) error {
	_, err := h.do(ctx, wire.Record{Op: wire.OpHello})
	return err
}

// Add asks the helper to route dst via ifname.
func (h *HelperClient) Add(ctx context.Context, dst netip.Prefix, ifname string) (wire.Result, error) {
	recs, err := h.do(ctx, wire.Record{Op: wire.OpAdd, Dst: dst, Ifname: ifname})
	return last(recs), err
}

// Delete asks the helper to remove our route to dst.
func (h *HelperClient) Delete(ctx context.Context, dst netip.Prefix) (wire.Result, error) {
	recs, err := h.do(ctx, wire.Record{Op: wire.OpDelete, Dst: dst})
	return last(recs), err
}

// List returns the routes the helper reports as ours.
func (h *HelperClient) List(ctx context.Context) ([]Route, error) {
	recs, err := h.do(ctx, wire.Record{Op: wire.OpList})
	var routes []Route
	for _, r := range recs {
		if r.Result == wire.ResultRoute {
			routes = append(routes, Route{r.Dst, r.Ifname})
		}
	}
	return routes, err
}

func last(recs []wire.Record) wire.Result {
	if len(recs) == 0 {
		return wire.ResultNone
	}
	return recs[len(recs)-1].Result
}

// Close drops the connection.
func (h *HelperClient) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.drop(net.ErrClosed)
	return nil
}

// do sends one request and reads its answer: one record, or for a list
// the route records up to the done record. A helper status becomes an
// error wrapping the wire.Status (and the errno for kernel errors); any
// transport trouble becomes ErrUnavailable and drops the connection.
func (h *HelperClient) do(ctx context.Context, req wire.Record) ([]wire.Record, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	deadline := time.Now().Add(h.Timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if err := h.connect(deadline); err != nil {
		return nil, err
	}
	recs, err := h.exchange(req, deadline)
	if err != nil {
		h.drop(err)
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	if st := recs[len(recs)-1].Status; st != wire.StatusOK {
		if st == wire.StatusKernel && recs[len(recs)-1].Errno != 0 {
			return recs, fmt.Errorf("%w: %w", st, unix.Errno(recs[len(recs)-1].Errno))
		}
		return recs, st
	}
	return recs, nil
}

// connect dials if there is no connection and the backoff allows, then
// checks the protocol version with a hello.
func (h *HelperClient) connect(deadline time.Time) error {
	if h.conn != nil {
		return nil
	}
	if time.Now().Before(h.retry) {
		return fmt.Errorf("%w: %w (retrying in %v)", ErrUnavailable, h.lastErr, time.Until(h.retry).Round(time.Millisecond))
	}
	c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: h.Path, Net: "unixpacket"})
	if err == nil {
		h.conn = c
		var recs []wire.Record
		if recs, err = h.exchange(wire.Record{Op: wire.OpHello}, deadline); err == nil && recs[0].Status != wire.StatusOK {
			err = fmt.Errorf("hello refused: %w (the helper speaks another protocol version?)", recs[0].Status)
		}
	}
	if err != nil {
		h.drop(err)
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	h.backoff = 0
	return nil
}

// drop closes the connection and sets the backoff for the next dial.
func (h *HelperClient) drop(err error) {
	if h.conn != nil {
		h.conn.Close()
		h.conn = nil
	}
	h.backoff = min(max(2*h.backoff, minBackoff), maxBackoff)
	h.retry, h.lastErr = time.Now().Add(h.backoff), err
}

// exchange writes req with a fresh tag and reads records until the answer
// is complete. A record with another tag is a protocol error.
func (h *HelperClient) exchange(req wire.Record, deadline time.Time) ([]wire.Record, error) {
	h.tag++
	req.Tag = h.tag
	h.conn.SetDeadline(deadline)
	if _, err := h.conn.Write(req.Encode()); err != nil {
		return nil, err
	}
	buf := make([]byte, wire.Size+1)
	var recs []wire.Record
	for {
		n, err := h.conn.Read(buf)
		if err != nil {
			return nil, err
		}
		r, err := wire.Decode(buf[:n])
		if err != nil {
			return nil, fmt.Errorf("malformed reply: %w", err)
		}
		if r.Tag != req.Tag || r.Op != req.Op {
			return nil, fmt.Errorf("reply for tag %d op %v, want tag %d op %v", r.Tag, r.Op, req.Tag, req.Op)
		}
		recs = append(recs, r)
		if req.Op != wire.OpList || r.Result != wire.ResultRoute {
			return recs, nil
		}
	}
}

// Watch asks the helper for a hello every interval until ctx ends, and
// reports each change of its health (nil: up). It also keeps the
// connection from idling out.
func (h *HelperClient) Watch(ctx context.Context, interval time.Duration, log *slog.Logger, report func(error)) {
	healthy := -1
	for {
		err := h.Hello(ctx)
		if now := map[bool]int{true: 1, false: 0}[err == nil]; now != healthy {
			healthy = now
			if err != nil {
				log.Warn("route helper unavailable", "socket", h.Path, "err", err)
			} else {
				log.Info("route helper connected", "socket", h.Path)
			}
			report(err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(interval):
		}
	}
}
