package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/quiltmesh/quilt-runtime/internal/testutil"
	"github.com/quiltmesh/quilt-runtime/proto/quiltpb"
)

// restartHelper kills the helper with SIGKILL and starts a new one on the
// same socket, given to the frontend's group as systemd would.
func (n *node) restartHelper(t *testing.T) {
	t.Helper()
	stop(t, n.helper, syscall.SIGKILL)
	n.helper = start(t, n.ns, onlyNetAdmin(nobody), filepath.Join(binDir, "quilt-route-helper"),
		append([]string{"--socket", n.sock, "--allow-uid", fmt.Sprint(frontendUID)}, n.policy...)...)
	h := n.helper
	waitFor(t, h, func() bool { return strings.Contains(h.Output(), "route helper serving") })
	if err := os.Chown(n.sock, nobody, frontendUID); err != nil {
		t.Fatal(err)
	}
}

// TestCrashStorm: 16 clients inject and remove routes and allocate
// addresses while the helper is SIGKILLed and restarted 20 times and the
// frontend 5 times. Afterwards every acknowledged change is present, the
// kernel holds exactly the desired routes after one resync, nothing
// panicked, and the last frontend's goroutines and descriptors, and the
// last helper's descriptors, are back at their baselines.
func TestCrashStorm(t *testing.T) {
	n := newNode(t)
	metrics := testutil.FreeLoopback(t)
	n.startFrontend(t, "--metrics-addr", metrics)
	n.configure(t, "10.42.1.0/24")
	var procs []*testutil.Proc // every process, to read for panics
	procs = append(procs, n.helper, n.frontend)
	scrape := newScraper(t, n.ns, metrics)

	allocs := &ledger{state: map[string]string{}, unsure: map[string]bool{}}
	routesL := &ledger{state: map[string]string{}, unsure: map[string]bool{}}
	const clients, rounds = 16, 20
	var base rest
	held := make([][]string, clients) // each client's addresses not yet released, whatever the round
	for round := range rounds {
		if round%3 == 0 && round > 0 && round <= 15 { // 5 frontend kills; the last frontend serves rounds 15-19
			n.kill9(t)
			procs = append(procs, n.startFrontend(t, "--metrics-addr", metrics))
		}
		if round == 15 { // the last frontend, before any client: its baseline
			base = n.atRest(t, scrape)
		}
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		for c := range clients {
			wg.Go(func() {
				conn := dialInNetns(t, n.ns, n.addr)
				defer conn.Close()
				rt, adm := quiltpb.NewQuiltRuntimeClient(conn), quiltpb.NewQuiltAdminClient(conn)
				for i := 0; ctx.Err() == nil; i++ {
					call, done := context.WithTimeout(ctx, 3*time.Second)
					dst := fmt.Sprintf("10.42.%d.0/24", 2+c*15+i%15) // each client its own 15
					routesL.send(dst)
					if i%3 == 2 {
						if r, err := rt.RemoveRoute(call, &quiltpb.RemoveRouteRequest{Destination: dst}); err == nil && r.Success {
							routesL.ack(dst, "")
						}
					} else if r, err := rt.InjectRoute(call, &quiltpb.InjectRouteRequest{Destination: dst, ViaInterface: "vxlan100"}); err == nil && r.Success {
						routesL.ack(dst, "vxlan100")
					}
					if i%5 == 0 {
						id := fmt.Sprintf("r%d-c%d-%d", round, c, i)
						allocs.send(id)
						if a, err := adm.AllocateIP(call, &quiltpb.AllocateIPRequest{ContainerId: id}); err == nil {
							allocs.ack(id, a.Ip)
						}
						// Release the earlier ones: the pool never runs dry.
						var kept []string
						for _, prev := range held[c] {
							allocs.send(prev)
							if _, err := adm.ReleaseIP(call, &quiltpb.ReleaseIPRequest{ContainerId: prev}); err == nil {
								allocs.ack(prev, "")
							} else {
								kept = append(kept, prev)
							}
						}
						held[c] = append(kept, id)
					}
					done()
				}
			})
		}
		// The helper dies at a random point of the storm, after 1 to 200
		// acknowledged changes; the storm goes on against the new helper
		// until it has acknowledged 10 route changes (the clients' answers
		// from the old one, at most one each, aside).
		waitAcks(t, "the storm", func() int { return allocs.acked() + routesL.acked() }, allocs.acked()+routesL.acked()+1+rand.IntN(200))
		n.restartHelper(t)
		procs = append(procs, n.helper)
		waitAcks(t, "the new helper", routesL.acked, routesL.acked()+clients+10)
		cancel()
		wg.Wait()
	}
	// The storm is over and its clients gone: the last frontend (5 helper
	// restarts under load) and the last helper hold what they held at rest.
	n.checkNoLeak(t, scrape, base)

	_, adm, conn := n.clients(t)
	ctx := ctxT(t)
	l, err := adm.ListAllocations(ctx, &quiltpb.ListAllocationsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]string{}
	for _, a := range l.Allocations {
		have[a.ContainerId] = a.Ip
	}
	checkedAllocs := allocs.check(t, "allocation", have)
	lr, err := adm.ListRoutes(ctx, &quiltpb.ListRoutesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	desired := map[string]string{}
	var want strings.Builder
	for _, r := range lr.Routes {
		if r.DesiredInterface != "" {
			desired[r.Destination] = r.DesiredInterface
			want.WriteString(r.Destination + " dev vxlan100 scope link \n")
		}
	}
	checkedRoutes := routesL.check(t, "route", desired)
	took := waitRoutes(t, n.ns, want.String(), resync+2*time.Second)
	conn.Close()

	for _, p := range procs {
		if out := p.Output(); strings.Contains(out, "panic:") || strings.Contains(out, "fatal error:") {
			t.Errorf("%v panicked:\n%s", p.Cmd.Args, out)
		}
	}
	t.Logf("%d helper and 5 frontend SIGKILLs under %d clients; %d allocation and %d route operations sent; %d allocations and %d routes checked; kernel = desired (%d routes) within %v of the check",
		rounds, clients, allocs.attempts, routesL.attempts, checkedAllocs, checkedRoutes, len(desired), took.Round(time.Millisecond))
	if checkedAllocs < rounds || checkedRoutes < rounds {
		t.Errorf("the storm acknowledged too little to prove anything")
	}
}
