package frontend

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	"google.golang.org/grpc/test/bufconn"

	"github.com/quiltmesh/quilt-runtime/frontend/ipam"
	"github.com/quiltmesh/quilt-runtime/frontend/state"
	"github.com/quiltmesh/quilt-runtime/proto/quiltpb"
	"github.com/quiltmesh/quilt-runtime/shared/wire"
)

// fakeHelper keeps routes in memory and can be told to fail. Unit tests
// only: the e2e tests use the real helper and kernel.
type fakeHelper struct {
	mu       sync.Mutex
	routes   map[netip.Prefix]string
	err      error                 // returned by every call when set
	conflict map[netip.Prefix]bool // foreign routes: adds are refused
	watchErr error                 // Watch ends with it at once when set
}

func (f *fakeHelper) Hello(context.Context) error { return f.err }
func (f *fakeHelper) Apply(_ context.Context, changes []Change) ([]wire.Result, []error) {
	res, errs := make([]wire.Result, len(changes)), make([]error, len(changes))
	for i, c := range changes {
		if c.Ifname != "" {
			res[i], errs[i] = f.add(c.Dst, c.Ifname)
		} else {
			res[i], errs[i] = f.delete(c.Dst)
		}
	}
	return res, errs
}
func (f *fakeHelper) add(dst netip.Prefix, ifname string) (wire.Result, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return 0, f.err
	}
	if f.conflict[dst] {
		return 0, wire.StatusConflict
	}
	old, ok := f.routes[dst]
	f.routes[dst] = ifname
	switch {
	case !ok:
		return wire.ResultCreated, nil
	case old == ifname:
		return wire.ResultUnchanged, nil
	}
	return wire.ResultMoved, nil
}
func (f *fakeHelper) delete(dst netip.Prefix) (wire.Result, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return 0, f.err
	}
	if _, ok := f.routes[dst]; !ok {
		return wire.ResultAbsent, nil
	}
	delete(f.routes, dst)
	return wire.ResultDeleted, nil
}

// Watch reports one resync and then nothing: the fake kernel never
// changes by itself. With watchErr set it ends at once with that.
func (f *fakeHelper) Watch(ctx context.Context, report func(bool, []netip.Prefix)) error {
	if f.watchErr != nil {
		return f.watchErr
	}
	report(true, nil)
	<-ctx.Done()
	return ctx.Err()
}
func (f *fakeHelper) List(context.Context) ([]Route, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Route
	for dst, ifname := range f.routes {
		out = append(out, Route{dst, ifname})
	}
	return out, f.err
}

// serve runs the service behind a real gRPC server on an in-memory
// listener and returns a real generated client.
func serve(t *testing.T, svc *Service) quiltpb.QuiltRuntimeClient {
	t.Helper()
	return quiltpb.NewQuiltRuntimeClient(serveConn(t, &Admin{Service: svc}))
}

// serveConn serves both services and returns a client connection.
func serveConn(t *testing.T, adm *Admin) *grpc.ClientConn {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	srv := NewGRPCServer(adm, health.NewServer(), nil)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient("passthrough:///bufconn", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// newService returns a service with a real state file in a temporary
// directory.
func newService(t *testing.T, h RouteHelper, log io.Writer) *Service {
	t.Helper()
	l := slog.New(slog.NewTextHandler(log, nil))
	store, snap, err := state.Open(t.TempDir(), l)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	alloc, err := ipam.NewAllocator(ipam.DefaultOffsets, store, snap.Subnet, snap.Allocations, snap.LastIP)
	if err != nil {
		t.Fatal(err)
	}
	return &Service{Policy: testPolicy, Helper: h, IPAM: alloc, Routes: NewDesired(store, snap.Routes, snap.Adopted), Log: l}
}

func TestAgentSequence(t *testing.T) {
	fake := &fakeHelper{routes: map[netip.Prefix]string{}}
	var log strings.Builder
	c := serve(t, newService(t, fake, &log))
	ctx := context.Background()
	ok := func(what string, success bool, msg string, err error) {
		t.Helper()
		if err != nil || !success || msg != "" {
			t.Fatalf("%s: success=%v error=%q err=%v", what, success, msg, err)
		}
	}
	r1, err := c.ConfigureNodeSubnet(ctx, &quiltpb.ConfigureNodeSubnetRequest{Subnet: "10.42.1.0/24"})
	ok("configure", r1.GetSuccess(), r1.GetError(), err)
	for _, dst := range []string{"10.42.2.0/24", "10.42.3.0/24", "10.42.2.0/24"} {
		r, err := c.InjectRoute(ctx, &quiltpb.InjectRouteRequest{Destination: dst, ViaInterface: "vxlan100"})
		ok("inject "+dst, r.GetSuccess(), r.GetError(), err)
	}
	for range 2 {
		r, err := c.RemoveRoute(ctx, &quiltpb.RemoveRouteRequest{Destination: "10.42.3.0/24"})
		ok("remove", r.GetSuccess(), r.GetError(), err)
	}
	if len(fake.routes) != 1 || fake.routes[netip.MustParsePrefix("10.42.2.0/24")] != "vxlan100" {
		t.Fatalf("routes %v", fake.routes)
	}
	for _, line := range []string{"RPC: ConfigureNodeSubnet(subnet=10.42.1.0/24)", "IPAM configured with subnet: 10.42.1.0/24",
		"RPC: InjectRoute(destination=10.42.2.0/24, via=vxlan100)", "Added route: 10.42.2.0/24 dev vxlan100", "Removed route: 10.42.3.0/24"} {
		if !strings.Contains(log.String(), line) {
			t.Errorf("log lacks %q:\n%s", line, log.String())
		}
	}
	// The calls that changed nothing are logged at DEBUG only (TestCallLogLevels).
	for _, line := range []string{"Route already present", "Route already absent"} {
		if strings.Contains(log.String(), line) {
			t.Errorf("log at INFO has %q:\n%s", line, log.String())
		}
	}
	// Own subnet refused; bad input refused before the helper.
	r, err := c.InjectRoute(ctx, &quiltpb.InjectRouteRequest{Destination: "10.42.1.0/24", ViaInterface: "vxlan100"})
	if err != nil || r.Success || !strings.Contains(r.Error, "own subnet") {
		t.Fatalf("own subnet: %v %v", r, err)
	}
	r, err = c.InjectRoute(ctx, &quiltpb.InjectRouteRequest{Destination: "10.42.9.0/24\n", ViaInterface: "vxlan100"})
	if err != nil || r.Success || strings.Contains(r.Error, "\n") {
		t.Fatalf("newline: %v %v", r, err)
	}
}

func TestConfigureNodeSubnet(t *testing.T) {
	svc := newService(t, &fakeHelper{routes: map[netip.Prefix]string{}}, io.Discard)
	c := serve(t, svc)
	ctx := context.Background()
	cfg := func(s string) *quiltpb.ConfigureNodeSubnetResponse {
		r, err := c.ConfigureNodeSubnet(ctx, &quiltpb.ConfigureNodeSubnetRequest{Subnet: s})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	if r := cfg("10.42.1.0/24"); !r.Success {
		t.Fatal(r)
	}
	if r := cfg("10.42.1.0/24"); !r.Success {
		t.Fatal("same subnet again must succeed", r)
	}
	if r := cfg("10.42.7.0/24"); !r.Success || svc.Subnet().String() != "10.42.7.0/24" {
		t.Fatal("a new subnet with no allocations must be accepted", r)
	}
	for _, id := range []string{"a", "b", "c"} {
		if _, _, _, err := svc.IPAM.Allocate(ipam.Key{ContainerID: id}, ""); err != nil {
			t.Fatal(err)
		}
	}
	if r := cfg("10.42.8.0/24"); r.Success || !strings.Contains(r.Error, "10.42.7.0/24") || !strings.Contains(r.Error, "3 container IPs") {
		t.Fatal("a new subnet with live allocations must be refused naming the current one", r)
	}
	for _, bad := range []string{"", "10.43.1.0/24", "10.42.1.1/24", "10.42.0.0/16", "fd00::/24"} {
		if r := cfg(bad); r.Success || r.Error == "" {
			t.Errorf("%q accepted", bad)
		}
	}
	if svc.Subnet().String() != "10.42.7.0/24" {
		t.Fatal("a refused request changed the subnet")
	}
}

func TestHelperErrorsToMessages(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{wire.StatusConflict, "exists and is not managed by quilt"},
		{wire.StatusNoIface, `interface "vxlan100" does not exist`},
		{fmtErrno(unix.EEXIST), "kernel refused to add 10.42.2.0/24 dev vxlan100: file exists"},
		{ErrUnavailable, "route helper unavailable"},
	} {
		fake := &fakeHelper{routes: map[netip.Prefix]string{}, err: tc.err}
		r, err := serve(t, newService(t, fake, io.Discard)).InjectRoute(context.Background(), &quiltpb.InjectRouteRequest{Destination: "10.42.2.0/24", ViaInterface: "vxlan100"})
		if err != nil || r.Success || !strings.Contains(r.Error, tc.want) {
			t.Errorf("%v: got %v %v, want %q", tc.err, r, err, tc.want)
		}
	}
	fake := &fakeHelper{routes: map[netip.Prefix]string{}, err: wire.StatusNotOwned}
	r, _ := serve(t, newService(t, fake, io.Discard)).RemoveRoute(context.Background(), &quiltpb.RemoveRouteRequest{Destination: "10.42.2.0/24"})
	if r.Success || !strings.Contains(r.Error, "not managed by quilt; refusing to delete") {
		t.Errorf("not owned: %v", r)
	}
	if err := helperError("add", netip.MustParsePrefix("10.42.2.0/24"), "vxlan100", fmtErrno(unix.EEXIST)); !errors.Is(err, unix.EEXIST) {
		t.Errorf("errno lost: %v", err)
	}
}

func fmtErrno(e unix.Errno) error { return errors.Join(wire.StatusKernel, e) }

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
	h := &HelperClient{Path: path, Timeout: 300 * time.Millisecond}
	defer h.Close()
	ctx := context.Background()
	if res, err := h.Add(ctx, netip.MustParsePrefix("10.42.2.0/24"), "vxlan100"); err != nil || res != wire.ResultCreated {
		t.Fatal(res, err)
	}
	if _, err := h.Delete(ctx, netip.MustParsePrefix("10.42.2.0/24")); !errors.Is(err, unix.EBUSY) || !errors.Is(err, wire.StatusKernel) {
		t.Fatalf("delete: %v", err)
	}
	if routes, err := h.List(ctx); err != nil || len(routes) != 2 || routes[1].Dst.String() != "10.42.3.0/24" {
		t.Fatal(routes, err)
	}
	// A batch of 600 changes goes as 3 messages, each answered in place.
	changes := make([]Change, 600)
	for i := range changes {
		changes[i] = Change{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 42, byte(i / 3), 0}), 24), "vxlan100"}
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
	// A helper that never answers: a bounded error, then backoff.
	silent.Store(wire.OpAdd, true)
	start := time.Now()
	if _, err := h.Add(ctx, netip.MustParsePrefix("10.42.2.0/24"), "vxlan100"); !errors.Is(err, ErrUnavailable) || time.Since(start) > 2*time.Second {
		t.Fatalf("silent helper: %v after %v", err, time.Since(start))
	}
	if err := h.Hello(ctx); !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "retrying in") {
		t.Fatalf("during backoff: %v", err)
	}
	silent.Delete(wire.OpAdd)
	time.Sleep(150 * time.Millisecond)
	if err := h.Hello(ctx); err != nil {
		t.Fatalf("after backoff the client must reconnect: %v", err)
	}
}

func TestParseAddr(t *testing.T) {
	for in, want := range map[string]Listener{
		"127.0.0.1:50051":          {Network: "tcp", Addr: "127.0.0.1:50051"},
		"[::1]:50051":              {Network: "tcp", Addr: "[::1]:50051"},
		"unix:///run/quilt/x.sock": {Network: "unix", Addr: "/run/quilt/x.sock"},
		"vsock://3:50051":          {Network: "vsock", Addr: "3:50051", CID: 3, Port: 50051},
	} {
		if got, err := ParseAddr(in); err != nil || got != want {
			t.Errorf("%s: %+v %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "50051", "unix://relative", "vsock://x:1", "vsock://3", "http://127.0.0.1:1", "127.0.0.1:99999"} {
		if _, err := ParseAddr(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	for in, loop := range map[string]bool{"127.0.0.1:1": true, "localhost:1": true, "[::1]:1": true, ":1": false, "0.0.0.0:1": false, "10.0.0.1:1": false} {
		l, _ := ParseAddr(in)
		if l.Loopback() != loop {
			t.Errorf("%s: loopback %v", in, !loop)
		}
	}
}
