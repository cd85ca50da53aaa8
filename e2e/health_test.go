package e2e

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/quiltmesh/quilt-runtime/proto/quiltpb"
)

// TestHealthTellsTheTruthAtOnce: with the helper SIGKILLed, the first
// InjectRoute that fails with "route helper unavailable" has turned the
// agent's service NOT_SERVING by the time it returns, without waiting for
// the 5 s hello poll; a new helper brings SERVING back through that poll.
// Then, under an agent calling InjectRoute every 5 ms, it measures the time
// from a helper SIGKILL to the NOT_SERVING a Health.Watch stream delivers
// (logged for the record, not asserted).
func TestHealthTellsTheTruthAtOnce(t *testing.T) {
	n := newNode(t)
	fe := n.startFrontend(t)
	rt, _, conn := n.clients(t)
	hc := healthpb.NewHealthClient(conn)
	ctx := ctxT(t)
	req := &healthpb.HealthCheckRequest{Service: quiltpb.QuiltRuntime_ServiceDesc.ServiceName}
	status := func() healthpb.HealthCheckResponse_ServingStatus {
		t.Helper()
		r, err := hc.Check(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		return r.Status
	}
	waitFor(t, fe, func() bool { return status() == healthpb.HealthCheckResponse_SERVING })
	n.configure(t, "10.42.1.0/24")

	stop(t, n.helper, syscall.SIGKILL)
	r, err := rt.InjectRoute(ctx, &quiltpb.InjectRouteRequest{Destination: "10.42.2.0/24", ViaInterface: "vxlan100"})
	if err != nil || r.Success || !strings.Contains(r.Error, "route helper unavailable") {
		t.Fatalf("InjectRoute with the helper killed: %v, %v; want route helper unavailable", r, err)
	}
	if got := status(); got != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("right after an InjectRoute found the helper unavailable, health is %v, want NOT_SERVING", got)
	}
	n.restartHelper(t)
	waitFor(t, fe, func() bool { return status() == healthpb.HealthCheckResponse_SERVING })

	// The measurement: the agent keeps calling while the helper is killed.
	stream, err := hc.Watch(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if r, err := stream.Recv(); err != nil || r.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("Watch: %v, %v; want SERVING first", r, err)
	}
	var calls atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			rt.InjectRoute(ctx, &quiltpb.InjectRouteRequest{Destination: fmt.Sprintf("10.42.%d.0/24", 2+i%200), ViaInterface: "vxlan100"})
			calls.Add(1)
		}
	}()
	defer func() { close(stop); wg.Wait() }()
	waitFor(t, fe, func() bool { return calls.Load() >= 20 })
	killed := time.Now()
	n.helper.Cmd.Process.Signal(syscall.SIGKILL)
	r2, err := stream.Recv()
	took := time.Since(killed)
	if err != nil || r2.Status != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("Watch after the helper's SIGKILL: %v, %v; want NOT_SERVING", r2, err)
	}
	t.Logf("helper SIGKILL to NOT_SERVING (Health.Watch), agent calling InjectRoute every 5 ms: %v", took)
	if !strings.Contains(fe.Output(), "health NOT_SERVING until a hello succeeds") {
		t.Errorf("the frontend did not log the flip by a request:\n%s", fe.Output())
	}
}
