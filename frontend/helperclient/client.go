package helperclient

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/quiltmesh/quilt-runtime/frontend/route"
	"github.com/quiltmesh/quilt-runtime/shared/wire"
)

// ErrUnavailable means the route helper could not be asked: not running,
// not reachable, too slow, or speaking another protocol.
var ErrUnavailable = errors.New("route helper unavailable")

// RouteHelper is what the frontend needs from the privileged helper.
type RouteHelper interface {
	// Hello checks the helper answers and speaks our protocol version.
	Hello(ctx context.Context) error
	// Apply carries out changes and returns each one's result and error.
	Apply(ctx context.Context, changes []route.Route) ([]wire.Result, []error)
	// List calls each for every route the helper reports as ours, as its
	// answer arrives; after an error, what each was given is incomplete.
	// each must not call the helper.
	List(ctx context.Context, each func(route.Route)) error
	// Watch reports, until ctx ends or the watch breaks, what changes in
	// the kernel other than by our own requests: the prefixes whose routes
	// changed, or that every route must be compared (resync; the first
	// report always is one).
	Watch(ctx context.Context, report func(resync bool, changed []netip.Prefix)) error
}

// Client speaks shared/wire to the helper over one Unix SOCK_SEQPACKET
// connection, one call at a time. A broken connection is re-dialled on
// the next call, no sooner than the backoff allows.
type Client struct {
	Path    string
	Timeout time.Duration // deadline of each message's answer

	mu      sync.Mutex
	conn    *net.UnixConn
	tag     uint32
	backoff time.Duration
	retry   time.Time // no dial before this
	lastErr error
	buf     []byte
}

// Backoff between dials after a failure, and between watches: doubling
// from min to max.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 5 * time.Second
)

// window is how many messages of a batch may await their answers at once:
// enough to keep the helper busy, few enough that neither side's socket
// buffer fills while the other waits.
const window = 4

// Hello checks the helper answers and speaks our protocol version.
func (h *Client) Hello(ctx context.Context) error {
	_, errs := h.do(ctx, 1, func(int) wire.Record { return wire.Record{Op: wire.OpHello} })
	return errs[0]
}

// Apply sends the changes wire.MaxBatch to a message, up to window
// messages ahead of their answers.
func (h *Client) Apply(ctx context.Context, changes []route.Route) ([]wire.Result, []error) {
	return h.do(ctx, len(changes), func(i int) wire.Record { return request(changes[i]) })
}

// request is the helper's request for a change: an add, or a delete.
func request(c route.Route) wire.Record {
	if c.IsRemoval() {
		return wire.Record{Op: wire.OpDelete, Dst: c.Dst}
	}
	return wire.Record{Op: wire.OpAdd, Dst: c.Dst, Ifname: c.Ifname}
}

// List reports the routes the helper holds as ours, as they arrive.
func (h *Client) List(ctx context.Context, each func(route.Route)) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	req := wire.Record{Op: wire.OpList, Tag: h.nextTag()}
	err := h.connect(h.deadline(ctx))
	if err == nil {
		err = h.write(ctx, req.Append(nil))
	}
	for err == nil {
		var recs []wire.Record
		if recs, err = h.read(ctx, []wire.Record{req}, true); err != nil {
			break
		}
		for _, r := range recs {
			if r.Result != wire.ResultRoute { // the end: done, or an error
				return StatusError(r)
			}
			each(route.Route{Dst: r.Dst, Ifname: r.Ifname})
		}
	}
	h.drop(err)
	return fmt.Errorf("%w: %w", ErrUnavailable, err)
}

// Watch opens a connection of its own, asks the helper to watch, and
// reports each message of events it sends, until ctx ends or the
// connection fails.
func (h *Client) Watch(ctx context.Context, report func(resync bool, changed []netip.Prefix)) error {
	c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: h.Path, Net: "unixpacket"})
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	req := wire.Record{Op: wire.OpWatch, Tag: 1}
	c.SetWriteDeadline(time.Now().Add(h.Timeout))
	if _, err := c.Write(req.Append(nil)); err != nil {
		return fmt.Errorf("%w: watch: %w", ErrUnavailable, err)
	}
	buf := make([]byte, wire.MaxBatch*wire.Size+1)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return cmp.Or(ctx.Err(), fmt.Errorf("%w: watch: %w", ErrUnavailable, err))
		}
		recs, err := decodeReply(buf[:n], []wire.Record{req}, true)
		if err != nil {
			return fmt.Errorf("%w: watch: %w", ErrUnavailable, err)
		}
		resync := false
		var changed []netip.Prefix
		for _, r := range recs {
			switch {
			case r.Status != wire.StatusOK:
				return fmt.Errorf("%w: watch refused: %w", ErrUnavailable, StatusError(r))
			case r.Result == wire.ResultResync:
				resync = true
			case r.Result == wire.ResultChanged:
				changed = append(changed, r.Dst)
			default:
				return fmt.Errorf("%w: watch: unexpected event %v", ErrUnavailable, r.Result)
			}
		}
		report(resync, changed)
	}
}

// do sends n requests, req(i) the ith, MaxBatch to a message and up to
// window messages ahead, and returns each one's result and error. Each
// message is made as it is sent, so a large batch is never held whole. A
// helper status becomes an error wrapping the wire.Status (and the errno
// for kernel errors); any transport trouble fails every request not yet
// answered with ErrUnavailable and drops the connection.
func (h *Client) do(ctx context.Context, n int, req func(i int) wire.Record) ([]wire.Result, []error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	res, errs := make([]wire.Result, n), make([]error, n)
	var pending [window][]wire.Record // the requests of the messages awaiting their answers, by message number
	var msg []byte
	msgs, sent, got := (n+wire.MaxBatch-1)/wire.MaxBatch, 0, 0
	err := h.connect(h.deadline(ctx))
	for err == nil && got < msgs {
		for ; err == nil && sent < msgs && sent < got+window; sent++ {
			reqs := pending[sent%window][:0]
			msg = msg[:0]
			for i := sent * wire.MaxBatch; i < min(n, (sent+1)*wire.MaxBatch); i++ {
				r := req(i)
				r.Tag = h.nextTag()
				reqs, msg = append(reqs, r), r.Append(msg)
			}
			pending[sent%window] = reqs
			err = h.write(ctx, msg)
		}
		var recs []wire.Record
		if err == nil {
			recs, err = h.read(ctx, pending[got%window], false)
		}
		if err != nil {
			break
		}
		for i, r := range recs {
			res[got*wire.MaxBatch+i], errs[got*wire.MaxBatch+i] = r.Result, StatusError(r)
		}
		got++
	}
	if err != nil {
		if !errors.Is(err, ErrUnavailable) {
			h.drop(err)
			err = fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
		for i := got * wire.MaxBatch; i < n; i++ {
			errs[i] = err
		}
	}
	return res, errs
}

// StatusError turns a reply's status into an error: nil for ok, the
// wire.Status, and for kernel errors the errno too.
func StatusError(r wire.Record) error {
	switch {
	case r.Status == wire.StatusOK:
		return nil
	case r.Status == wire.StatusKernel && r.Errno != 0:
		return fmt.Errorf("%w: %w", r.Status, unix.Errno(r.Errno))
	}
	return r.Status
}

func (h *Client) nextTag() uint32 { h.tag++; return h.tag }

// deadline is the time one message may take: the timeout, or the
// context's deadline if sooner.
func (h *Client) deadline(ctx context.Context) time.Time {
	d := time.Now().Add(h.Timeout)
	if cd, ok := ctx.Deadline(); ok && cd.Before(d) {
		return cd
	}
	return d
}

// Close drops the connection.
func (h *Client) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.drop(net.ErrClosed)
	return nil
}

// connect dials if there is no connection and the backoff allows, then
// checks the protocol version with a hello.
func (h *Client) connect(deadline time.Time) error {
	if h.conn != nil {
		return nil
	}
	if time.Now().Before(h.retry) {
		return fmt.Errorf("%w: %w (retrying in %v)", ErrUnavailable, h.lastErr, time.Until(h.retry).Round(time.Millisecond))
	}
	c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: h.Path, Net: "unixpacket"})
	if err == nil {
		h.conn = c
		hello := wire.Record{Op: wire.OpHello, Tag: h.nextTag()}
		var recs []wire.Record
		if err = h.write(context.Background(), hello.Append(nil)); err == nil {
			recs, err = h.read(context.Background(), []wire.Record{hello}, false)
		}
		if err == nil && recs[0].Status != wire.StatusOK {
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
func (h *Client) drop(err error) {
	if h.conn != nil {
		h.conn.Close()
		h.conn = nil
	}
	h.backoff = min(max(2*h.backoff, minBackoff), maxBackoff)
	h.retry, h.lastErr = time.Now().Add(h.backoff), err
}

// write sends one message, within the timeout.
func (h *Client) write(ctx context.Context, msg []byte) error {
	h.conn.SetWriteDeadline(h.deadline(ctx))
	_, err := h.conn.Write(msg)
	return err
}

// read reads one message answering reqs: as many records, with their tags
// and ops, or for a list (part) any number of records with its tag.
func (h *Client) read(ctx context.Context, reqs []wire.Record, part bool) ([]wire.Record, error) {
	if h.buf == nil {
		h.buf = make([]byte, wire.MaxBatch*wire.Size+1)
	}
	h.conn.SetReadDeadline(h.deadline(ctx))
	n, err := h.conn.Read(h.buf)
	if err != nil {
		return nil, err
	}
	return decodeReply(h.buf[:n], reqs, part)
}

// decodeReply decodes one message answering reqs: as many records, with
// their tags and ops, or for a list (part) or a watch any number of
// records with its tag. A record of another protocol version says which.
func decodeReply(b []byte, reqs []wire.Record, part bool) ([]wire.Record, error) {
	if len(b)%wire.Size != 0 || len(b) == 0 || !part && len(b) != len(reqs)*wire.Size {
		return nil, fmt.Errorf("malformed reply: %d bytes for %d requests", len(b), len(reqs))
	}
	recs := make([]wire.Record, len(b)/wire.Size)
	for i := range recs {
		r, err := wire.Decode(b[i*wire.Size : (i+1)*wire.Size])
		want := reqs[min(i, len(reqs)-1)]
		if errors.Is(err, wire.StatusBadVersion) {
			return nil, fmt.Errorf("the route helper speaks protocol version %d, this quilt-runtime speaks %d: install the same release of both (%w)",
				b[i*wire.Size], wire.Version, err)
		}
		if err != nil {
			return nil, fmt.Errorf("malformed reply: %w", err)
		}
		if r.Tag != want.Tag || r.Op != want.Op {
			return nil, fmt.Errorf("reply for tag %d op %v, want tag %d op %v", r.Tag, r.Op, want.Tag, want.Op)
		}
		recs[i] = r
	}
	return recs, nil
}
