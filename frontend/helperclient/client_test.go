package helperclient

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/quiltmesh/quilt-runtime/frontend/route"
	"github.com/quiltmesh/quilt-runtime/shared/wire"
)

// TestHelperClient drives the real client against a fake helper socket.
func TestHelperClient(t *testing.T) {
	path := t.TempDir() + "/h.sock"
	l, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var silent sync.Map // ops the fake never answers
	var batches atomic.Int32
	go func() {
		for {
			c, err := l.AcceptUnix()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, wire.MaxBatch*wire.Size+1)
				for {
					n, err := c.Read(buf)
					if err != nil {
						return
					}
					reqs, _ := wire.DecodeRequests(buf[:n])
					if _, ok := silent.Load(reqs[0].Op); ok {
						continue
					}
					batches.Add(1)
					var out []byte
					for _, req := range reqs {
						rep := wire.Record{Op: req.Op, Tag: req.Tag}
						switch req.Op {
						case wire.OpAdd:
							rep.Result = wire.ResultCreated
						case wire.OpDelete:
							rep.Status, rep.Errno = wire.StatusKernel, uint32(unix.EBUSY)
						case wire.OpList: // a list in two messages: a route, then another and done
							c.Write(wire.Record{Op: wire.OpList, Tag: req.Tag, Result: wire.ResultRoute, Dst: netip.MustParsePrefix("10.42.2.0/24"), Ifname: "vxlan100"}.Append(nil))
							out = wire.Record{Op: wire.OpList, Tag: req.Tag, Result: wire.ResultRoute, Dst: netip.MustParsePrefix("10.42.3.0/24"), Ifname: "vxlan100"}.Append(out)
							rep.Result = wire.ResultDone
						}
						out = rep.Append(out)
					}
					c.Write(out)
				}
			}()
		}
	}()
	h := &Client{Path: path, Timeout: 300 * time.Millisecond}
	defer h.Close()
	ctx := context.Background()
	add := route.Route{Dst: netip.MustParsePrefix("10.42.2.0/24"), Ifname: "vxlan100"}
	if res, errs := h.Apply(ctx, []route.Route{add}); errs[0] != nil || res[0] != wire.ResultCreated {
		t.Fatal(res, errs)
	}
	if _, errs := h.Apply(ctx, []route.Route{{Dst: add.Dst}}); !errors.Is(errs[0], unix.EBUSY) || !errors.Is(errs[0], wire.StatusKernel) {
		t.Fatalf("delete: %v", errs[0])
	}
	var routes []route.Route
	if err := h.List(ctx, func(r route.Route) { routes = append(routes, r) }); err != nil || len(routes) != 2 || routes[1].Dst.String() != "10.42.3.0/24" {
		t.Fatal(routes, err)
	}
	// A batch of 600 changes goes as 3 messages, each answered in place.
	changes := make([]route.Route, 600)
	for i := range changes {
		changes[i] = route.Route{Dst: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 42, byte(i / 3), 0}), 24), Ifname: "vxlan100"}
		if i%3 == 2 {
			changes[i].Ifname = "" // a delete: the fake answers EBUSY
		}
	}
	before := batches.Load()
	res, errs := h.Apply(ctx, changes)
	for i := range changes {
		if i%3 == 2 && (!errors.Is(errs[i], unix.EBUSY) || res[i] != 0) || i%3 != 2 && (errs[i] != nil || res[i] != wire.ResultCreated) {
			t.Fatalf("change %d: %v %v", i, res[i], errs[i])
		}
	}
	if got := batches.Load() - before; got != 3 {
		t.Fatalf("600 changes went as %d messages, want 3", got)
	}
	// A helper that never answers: the timeout ends the wait, then
	// backoff.
	silent.Store(wire.OpAdd, true)
	if _, errs := h.Apply(ctx, []route.Route{add}); !errors.Is(errs[0], ErrUnavailable) || !errors.Is(errs[0], os.ErrDeadlineExceeded) {
		t.Fatalf("silent helper: %v", errs[0])
	}
	if err := h.Hello(ctx); !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "retrying in") {
		t.Fatalf("during backoff: %v", err)
	}
	silent.Delete(wire.OpAdd)
	// Once the backoff is over, the client dials again.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		err := h.Hello(ctx)
		if err == nil {
			break
		}
		if !strings.Contains(err.Error(), "retrying in") || time.Now().After(deadline) {
			t.Fatalf("after backoff the client must reconnect: %v", err)
		}
	}
}
