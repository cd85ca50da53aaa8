package frontend

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/netutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	"google.golang.org/grpc/status"

	"github.com/quiltmesh/quilt-runtime/frontend/api"
	"github.com/quiltmesh/quilt-runtime/frontend/internal/testkit"
	"github.com/quiltmesh/quilt-runtime/frontend/internal/testnode"
	"github.com/quiltmesh/quilt-runtime/frontend/route"
	"github.com/quiltmesh/quilt-runtime/proto/quiltpb"
)

// serveTCP serves both services on a loopback TCP listener, limited to
// maxConns connections as Run limits them, and returns the address.
func serveTCP(t *testing.T, node *api.Node, maxConns int) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := NewGRPCServer(node, api.Info{}, health.NewServer(), nil)
	go srv.Serve(netutil.LimitListener(l, maxConns))
	t.Cleanup(srv.Stop)
	return l.Addr().String()
}

func dialTCP(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// TestMaxMessageSize: a request over the limit is refused before it is
// decoded, with a status that names the limit; the service is untouched.
func TestMaxMessageSize(t *testing.T) {
	node := testnode.Open(t, api.NodeConfig{})
	c := quiltpb.NewQuiltRuntimeClient(dialTCP(t, serveTCP(t, node, 8)))
	for _, n := range []int{MaxRecvMsgSize, 1 << 20} {
		_, err := c.InjectRoute(context.Background(), &quiltpb.InjectRouteRequest{Destination: strings.Repeat("1", n), ViaInterface: "vxlan100"})
		if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "larger than max") {
			t.Errorf("%d-byte destination: %v", n, err)
		}
	}
	// Just under the limit, the request reaches validation and is refused there.
	r, err := c.InjectRoute(context.Background(), &quiltpb.InjectRouteRequest{Destination: strings.Repeat("1", MaxRecvMsgSize-100), ViaInterface: "vxlan100"})
	if err != nil || r.Success || !strings.Contains(r.Error, "is not an IPv4 prefix") || len(r.Error) > 300 {
		t.Errorf("under the limit: %v %v", r, err)
	}
	if node.Routes.DesiredLen() != 0 {
		t.Fatal("a refused request was recorded")
	}
}

// blockingHelper's List waits until released, counting how many wait.
type blockingHelper struct {
	*testkit.Helper
	inList, peak atomic.Int32
	release      chan struct{}
}

func (b *blockingHelper) List(context.Context, func(route.Route)) error {
	n := b.inList.Add(1)
	defer b.inList.Add(-1)
	for p := b.peak.Load(); n > p && !b.peak.CompareAndSwap(p, n); p = b.peak.Load() {
	}
	<-b.release
	return nil
}

// TestMaxConcurrentStreams: one connection gets at most 64 calls served at
// once; the rest wait for a stream and are then served.
func TestMaxConcurrentStreams(t *testing.T) {
	h := &blockingHelper{Helper: testkit.New(), release: make(chan struct{})}
	adm := quiltpb.NewQuiltAdminClient(dialTCP(t, serveTCP(t, testnode.Open(t, api.NodeConfig{Helper: h}), 8)))
	var wg sync.WaitGroup
	var failed atomic.Int32
	for range 100 {
		wg.Go(func() {
			if _, err := adm.ListRoutes(context.Background(), &quiltpb.ListRoutesRequest{}); err != nil {
				failed.Add(1)
			}
		})
	}
	deadline := time.Now().Add(5 * time.Second)
	for h.inList.Load() < MaxConcurrentStreams && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // give any excess stream time to show
	if got := h.inList.Load(); got != MaxConcurrentStreams {
		t.Errorf("%d calls in the handler at once, want %d", got, MaxConcurrentStreams)
	}
	close(h.release)
	wg.Wait()
	if failed.Load() != 0 || h.peak.Load() != MaxConcurrentStreams {
		t.Fatalf("%d calls failed; peak %d", failed.Load(), h.peak.Load())
	}
}

// TestMaxConnections: past the limit, a new connection waits unserved
// until another closes.
func TestMaxConnections(t *testing.T) {
	addr := serveTCP(t, testnode.Open(t, api.NodeConfig{}), 2)
	call := func(conn *grpc.ClientConn, d time.Duration) error {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		_, err := quiltpb.NewQuiltAdminClient(conn).GetStatus(ctx, &quiltpb.GetStatusRequest{})
		return err
	}
	a, b, c := dialTCP(t, addr), dialTCP(t, addr), dialTCP(t, addr)
	if err := errors.Join(call(a, 5*time.Second), call(b, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := call(c, 300*time.Millisecond); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("a third connection past a limit of 2 was served: %v", err)
	}
	a.Close()
	if err := call(c, 5*time.Second); err != nil {
		t.Fatalf("once one closed, the waiting connection must be served: %v", err)
	}
}

// TestKeepaliveEnforcement: a client that pings far more often than the
// policy allows is told to go away (GOAWAY, ENHANCE_YOUR_CALM,
// too_many_pings). Spoken in raw HTTP/2, since grpc-go's own client will
// not ping that often.
func TestKeepaliveEnforcement(t *testing.T) {
	conn, err := net.Dial("tcp", serveTCP(t, testnode.Open(t, api.NodeConfig{}), 8))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	fr := http2.NewFramer(conn, conn)
	if _, err := io.WriteString(conn, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	goaway := make(chan *http2.GoAwayFrame, 1)
	go func() {
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				close(goaway)
				return
			}
			if ga, ok := f.(*http2.GoAwayFrame); ok {
				goaway <- ga
				return
			}
		}
	}()
	for i := range 20 {
		if err := fr.WritePing(false, [8]byte{byte(i)}); err != nil {
			break // the server may already have closed
		}
		time.Sleep(10 * time.Millisecond)
	}
	ga, ok := <-goaway
	if !ok || ga.ErrCode != http2.ErrCodeEnhanceYourCalm || !strings.Contains(string(ga.DebugData()), "too_many_pings") {
		t.Fatalf("want GOAWAY ENHANCE_YOUR_CALM too_many_pings, got %v", ga)
	}
}
