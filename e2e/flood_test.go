package e2e

import (
	"github.com/quiltmesh/quilt-runtime/internal/netns"

	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

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

// fds counts a process's open file descriptors.
func fds(t *testing.T, pid int) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// metric reads one value from the frontend's /metrics, inside its namespace.
func metric(t *testing.T, ns, addr, name string) float64 {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, a string) (net.Conn, error) { return netns.Dial(ctx, ns, a, 0) }}}
	defer c.CloseIdleConnections()
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	t.Fatalf("no %s in the metrics:\n%s", name, b)
	return 0
}

// TestFlood: 10,000 calls from 64 connections at once, valid and not; the
// server keeps serving, its memory stays bounded, and its goroutines and
// descriptors go back to where they were.
func TestFlood(t *testing.T) {
	n := newNode(t)
	metrics := freePort(t)
	n.startFrontend(t, "--metrics-addr", metrics)
	n.configure(t, "10.42.1.0/24")
	pid := n.frontend.Pid()
	// Settle: let the first resync and the helper connection happen.
	time.Sleep(1500 * time.Millisecond)
	baseG, baseFD := metric(t, n.ns, metrics, "quilt_goroutines"), fds(t, pid)

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
	hwm := procStatus(t, pid, "VmHWM")
	// Connections are gone: goroutines and descriptors return to the
	// baseline (gRPC tears a closed connection down asynchronously).
	var g float64
	var fd int
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		g, fd = metric(t, n.ns, metrics, "quilt_goroutines"), fds(t, pid)
		if g <= baseG && fd <= baseFD || time.Now().After(deadline) {
			break
		}
	}
	t.Logf("%d calls (%d over the size limit) from %d connections in %v; frontend peak RSS %d KiB; goroutines %v -> %v, fds %d -> %d",
		calls.Load(), refused.Load(), conns, took.Round(time.Millisecond), hwm, baseG, g, baseFD, fd)
	if g > baseG || fd > baseFD {
		t.Errorf("leak: goroutines %v (baseline %v), fds %d (baseline %d)", g, baseG, fd, baseFD)
	}
	if hwm > 64<<10 {
		t.Errorf("frontend peak RSS %d KiB, want under 64 MiB", hwm)
	}
}
