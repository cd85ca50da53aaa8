package e2e

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/quiltmesh/quilt-runtime/internal/testutil"
	"github.com/quiltmesh/quilt-runtime/proto/quiltpb"
)

// procStatus returns a field of /proc/PID/status, in kB for memory.
func procStatus(t *testing.T, pid int, field string) int {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if k, v, ok := strings.Cut(s.Text(), ":"); ok && k == field {
			n, _ := strconv.Atoi(strings.Fields(v)[0])
			return n
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// TestFlood: 10,000 calls from 64 connections at once, valid and not;
// every call gets the answer it should (a request over the size limit is
// refused as ResourceExhausted before it is read whole), the server keeps
// serving, and once the clients are gone its goroutines and descriptors,
// and the helper's, are back where they were at rest. The time the flood
// took and the frontend's peak RSS are logged, not judged: they depend on
// the machine (`make bench` measures the frontend's memory).
func TestFlood(t *testing.T) {
	n := newNode(t)
	metrics := testutil.FreeLoopback(t)
	n.startFrontend(t, "--metrics-addr", metrics)
	n.configure(t, "10.42.1.0/24")
	pid := n.frontend.Pid()
	scrape := newScraper(t, n.ns, metrics)
	base := n.atRest(t, scrape)

	const conns, perConn = 64, 157
	var calls, refused, failed atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for c := range conns {
		wg.Go(func() {
			conn := dialInNetns(t, n.ns, n.addr)
			defer conn.Close()
			rt, adm := quiltpb.NewQuiltRuntimeClient(conn), quiltpb.NewQuiltAdminClient(conn)
			ctx := context.Background()
			for i := range perConn {
				var ok bool
				var err error
				switch i % 5 {
				case 0:
					var r *quiltpb.InjectRouteResponse
					r, err = rt.InjectRoute(ctx, &quiltpb.InjectRouteRequest{Destination: fmt.Sprintf("10.42.%d.0/24", 2+(c+i)%40), ViaInterface: "vxlan100"})
					ok = r.GetSuccess()
				case 1:
					var r *quiltpb.InjectRouteResponse
					r, err = rt.InjectRoute(ctx, &quiltpb.InjectRouteRequest{Destination: strings.Repeat("x", 4000), ViaInterface: "vxlan100"})
					ok = !r.GetSuccess() // refused, as it must be
				case 2:
					_, err = adm.AllocateIP(ctx, &quiltpb.AllocateIPRequest{ContainerId: fmt.Sprintf("c%d", c)})
					ok = err == nil
				case 3:
					_, err = adm.GetStatus(ctx, &quiltpb.GetStatusRequest{})
					ok = err == nil
				case 4:
					_, err = rt.InjectRoute(ctx, &quiltpb.InjectRouteRequest{Destination: strings.Repeat("y", 20000), ViaInterface: "vxlan100"})
					ok = status.Code(err) == codes.ResourceExhausted // over the size limit
					err = nil
					refused.Add(1)
				}
				calls.Add(1)
				if err != nil || !ok {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	took := time.Since(start)
	if failed.Load() != 0 {
		t.Errorf("%d of %d calls did not get the answer they should", failed.Load(), calls.Load())
	}

	// Still serving: a fresh client gets answers.
	rt, adm, conn := n.clients(t)
	ctx := ctxT(t)
	if r, err := rt.InjectRoute(ctx, &quiltpb.InjectRouteRequest{Destination: "10.42.99.0/24", ViaInterface: "vxlan100"}); err != nil || !r.Success {
		t.Fatalf("after the flood: %v %v", r, err)
	}
	if st, err := adm.GetStatus(ctx, &quiltpb.GetStatusRequest{}); err != nil || st.Allocations != conns {
		t.Fatalf("after the flood: %v %v", st, err)
	}
	conn.Close()
	t.Logf("%d calls (%d over the size limit) from %d connections in %v; frontend peak RSS %d KiB",
		calls.Load(), refused.Load(), conns, took.Round(time.Millisecond), procStatus(t, pid, "VmHWM"))
	n.checkNoLeak(t, scrape, base)
}
