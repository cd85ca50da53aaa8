package e2e

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/quiltmesh/quilt-runtime/internal/testutil"
	"github.com/quiltmesh/quilt-runtime/proto/quiltpb"
	"github.com/quiltmesh/quilt-runtime/shared/wire"
)

// startHostile starts a hostile child of the given kind under the
// frontend's uid, an allowed peer of the helper.
func startHostile(t *testing.T, kind, sock string) *testutil.Proc {
	t.Helper()
	cmd := exec.Command("setpriv", append(unprivileged(frontendUID)[1:], filepath.Join(binDir, "e2e.test"))...)
	cmd.Env = append(os.Environ(), "QUILT_E2E_CHILD=hostile:"+kind+":"+sock)
	return testutil.StartTest(t, cmd)
}

// TestHelperUnderAttack: while the real frontend keeps injecting and
// removing a route, the helper's socket takes a thousand connections at
// once from a uid it does not allow, 2,000 garbage messages, clients that
// connect and never send and a client that sends and never reads. The
// helper stays up, answers every frontend call within its deadline (the
// frontend gives up on the helper after 2s, and the call fails), changes no
// route but the frontend's, and lets go of every descriptor afterwards.
// The calls' latencies are logged, not judged: they depend on the machine.
func TestHelperUnderAttack(t *testing.T) {
	n := newNode(t)
	n.startFrontend(t)
	n.configure(t, "10.42.1.0/24")
	rt, _, _ := n.clients(t)
	ctx := ctxT(t)
	// A first call connects the frontend to the helper before the attack.
	if r, err := rt.InjectRoute(ctx, &quiltpb.InjectRouteRequest{Destination: "10.42.2.0/24", ViaInterface: "vxlan100"}); err != nil || !r.Success {
		t.Fatal(r, err)
	}
	baseFD, err := n.helperAtRest(t, func(int) bool { return true })
	if err != nil {
		t.Fatal(err)
	}
	before := routes(t, n.ns)

	// The attack.
	attackStart := time.Now()
	var attackers []*testutil.Proc
	// Allowed peers hold 10 of the helper's 16 connection slots (8 idle, 1
	// not reading, 1 sending garbage), the frontend one; slots past 16 would
	// wait in the backlog for up to the 30 s idle timeout (SECURITY.md).
	for _, kind := range []string{"idle", "noread", "garbage"} {
		attackers = append(attackers, startHostile(t, kind, n.sock))
	}
	var refusedOK atomic.Int64
	var wg sync.WaitGroup
	connected := make(chan struct{}) // closed once all 1000 have had their answer
	for range 1000 {                 // root is not on the helper's list
		wg.Go(func() {
			c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: n.sock, Net: "unixpacket"})
			if err != nil {
				return
			}
			defer c.Close()
			if _, err := exchange(c, wire.Record{Op: wire.OpHello, Tag: 1}.Append(nil)); err != nil {
				refusedOK.Add(1) // closed without an answer
			}
		})
	}

	go func() { wg.Wait(); close(connected) }()
	garbage := attackers[2]
	over := func() bool {
		select {
		case <-connected:
			return garbage.Exited()
		default:
			return false
		}
	}

	// The frontend carries on, one route operation after another, until
	// the attack is over (the 1000 have had their answer, the garbage has
	// all been sent), and at least 60 times; it stops after a removal, so
	// the table ends as it began.
	var lat []time.Duration
	for i := 0; len(lat) < 60 || i%2 == 1 || !over() && time.Since(attackStart) < time.Minute; i++ {
		start := time.Now()
		var ok bool
		var msg string
		if i%2 == 0 {
			r, err := rt.InjectRoute(ctx, &quiltpb.InjectRouteRequest{Destination: "10.42.5.0/24", ViaInterface: "vxlan100"})
			ok, msg = err == nil && r.Success, r.GetError()
		} else {
			r, err := rt.RemoveRoute(ctx, &quiltpb.RemoveRouteRequest{Destination: "10.42.5.0/24"})
			ok, msg = err == nil && r.Success, r.GetError()
		}
		lat = append(lat, time.Since(start))
		if !ok {
			t.Fatalf("frontend call %d under attack failed: %s", i, msg)
		}
	}
	<-connected
	if err := garbage.ExitStatus(t, 60*time.Second); err != nil {
		t.Fatalf("garbage client: %v\n%s", err, garbage.Output())
	}
	slices.Sort(lat)
	t.Logf("frontend route calls under attack: %d, median %v, max %v (helper timeout 2s); %d of 1000 disallowed connections closed unanswered; %s",
		len(lat), lat[len(lat)/2], lat[len(lat)-1], refusedOK.Load(), strings.TrimSpace(garbage.Output()))
	if refusedOK.Load() != 1000 {
		t.Errorf("%d of 1000 disallowed connections got an answer or could not connect", 1000-refusedOK.Load())
	}
	if n.helper.Exited() {
		t.Fatalf("the helper died:\n%s", n.helper.Output())
	}
	if got := strings.Count(n.helper.Output(), "refused connection: uid not allowed"); got < 1000 {
		t.Errorf("%d refusals logged, want 1000", got)
	}
	if after := routes(t, n.ns); after != before {
		t.Errorf("routes after the attack:\n%s\nwant:\n%s", after, before)
	}
	// The attackers leave; the helper lets go of their connections.
	for _, p := range attackers {
		stop(t, p, syscall.SIGKILL)
	}
	if fd, err := n.helperAtRest(t, func(fd int) bool { return fd <= baseFD }); err != nil {
		t.Errorf("after the attack: %v; before it: %d descriptors", err, baseFD)
	} else {
		t.Logf("helper descriptors at rest: %d before the attack, %d after", baseFD, fd)
	}
	if r, err := rt.InjectRoute(ctx, &quiltpb.InjectRouteRequest{Destination: "10.42.6.0/24", ViaInterface: "vxlan100"}); err != nil || !r.Success {
		t.Fatalf("after the attack: %v %v", r, err)
	}
}
