package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	bolt "go.etcd.io/bbolt"

	"github.com/quiltmesh/quilt-runtime/proto/quiltpb"
)

// stop stops the frontend as systemd would, and waits for it.
func (n *node) stop(t *testing.T) {
	t.Helper()
	stop(t, n.frontend, syscall.SIGTERM)
}

// resyncs waits for count resyncs that start after now, and returns the last.
func resyncs(t *testing.T, adm quiltpb.QuiltAdminClient, count int) *quiltpb.ResyncStatus {
	t.Helper()
	since := time.Now()
	var st *quiltpb.ResyncStatus
	for range count {
		st = nextResync(t, adm, since)
		since, _ = time.Parse(time.RFC3339Nano, st.Time)
	}
	return st
}

func getStatus(t *testing.T, adm quiltpb.QuiltAdminClient) *quiltpb.GetStatusResponse {
	t.Helper()
	st, err := adm.GetStatus(ctxT(t), &quiltpb.GetStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestLostStateAdoption: the state file is moved aside (what its start-up
// error advises for a damaged file) and the frontend started again: it
// adopts the routes of ours the kernel holds, and no resync removes them
// while the agent is silent, nor across a restart; once the agent
// re-injects all but one, that one goes after the grace, and only it.
func TestLostStateAdoption(t *testing.T) {
	n := newNode(t)
	grace := []string{"--adopt-grace", "3s"}
	n.startFrontend(t, grace...)
	rt, adm, _ := n.clients(t)
	n.configure(t, "10.42.1.0/24")
	dsts := []string{"10.42.2.0/24", "10.42.3.0/24", "10.42.4.0/24", "10.42.5.0/24", "10.42.6.0/24"}
	for _, dst := range dsts {
		if r := inject(t, rt, dst, "vxlan100"); !r.Success {
			t.Fatal(r)
		}
	}
	all := ours(t, n.ns)
	n.stop(t)
	if err := os.Rename(filepath.Join(n.stateDir, "state.db"), filepath.Join(n.stateDir, "state.db.lost")); err != nil {
		t.Fatal(err)
	}
	n.startFrontend(t, grace...)
	// Several resyncs, and more than the grace, with no call of the agent's.
	st := resyncs(t, adm, 5)
	if got := ours(t, n.ns); got != all || st.Removed != 0 || getStatus(t, adm).AdoptedRoutes != 5 {
		t.Fatalf("after resyncs with a silent agent: %v; adopted %d; routes:\n%s", st, getStatus(t, adm).AdoptedRoutes, got)
	}
	if !strings.Contains(n.frontend.Output(), "resync: adopted route 10.42.2.0/24 dev vxlan100") {
		t.Fatalf("no adoption in the log:\n%s", n.frontend.Output())
	}
	// A restart, the agent still silent: nothing removed, still adopted.
	n.stop(t)
	n.startFrontend(t, grace...)
	st = resyncs(t, adm, 3)
	if got := ours(t, n.ns); got != all || st.Removed != 0 || getStatus(t, adm).AdoptedRoutes != 5 {
		t.Fatalf("after a restart: %v; routes:\n%s", st, got)
	}
	// The agent comes back and re-injects all but the last, every 200 ms:
	// after the grace, exactly that one is removed.
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	agent := make(chan error, 1)
	go func() {
		for ctx.Err() == nil {
			for _, dst := range dsts[:4] {
				r, err := rt.InjectRoute(ctx, &quiltpb.InjectRouteRequest{Destination: dst, ViaInterface: "vxlan100"})
				if ctx.Err() == nil && (err != nil || !r.Success) {
					agent <- fmt.Errorf("re-inject %s: %v %v", dst, r, err)
					return
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
		agent <- nil
	}()
	want := strings.Replace(all, "10.42.6.0/24 dev vxlan100 scope link \n", "", 1)
	took := waitRoutes(t, n.ns, want, 20*time.Second)
	stop()
	if err := <-agent; err != nil {
		t.Fatal(err)
	}
	t.Logf("the unconfirmed route went %v after the agent came back (grace 3s)", took)
	if !strings.Contains(n.frontend.Output(), "adopted route 10.42.6.0/24 was not confirmed by the agent") || getStatus(t, adm).AdoptedRoutes != 0 {
		t.Fatalf("the forgotten route is not in the log, or routes are still adopted:\n%s", n.frontend.Output())
	}
}

// TestMassDeletionGuard: with 100 routes installed and a state file edited
// to drop 60 of them, a resync removes none and says why; quiltctl resync
// --dry-run lists them; SyncRoutes of the 40 removes the 60.
func TestMassDeletionGuard(t *testing.T) {
	n := newNode(t)
	n.startFrontend(t)
	_, adm, _ := n.clients(t)
	var changes []*quiltpb.RouteChange
	for i := range 100 {
		changes = append(changes, &quiltpb.RouteChange{Destination: fmt.Sprintf("10.42.%d.0/24", 100+i), ViaInterface: "vxlan100"})
	}
	apply, err := adm.ApplyRoutes(ctxT(t))
	if err == nil {
		err = apply.Send(&quiltpb.ApplyRoutesRequest{Changes: changes})
	}
	if resp, err2 := apply.CloseAndRecv(); err != nil || err2 != nil || resp.Failed != 0 {
		t.Fatal(resp, err, err2)
	}
	n.stop(t)
	// Drop 60 routes from the state file, with bbolt itself.
	db, err := bolt.Open(filepath.Join(n.stateDir, "state.db"), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for i := 40; i < 100; i++ {
			if err := tx.Bucket([]byte("routes")).Delete([]byte(changes[i].Destination)); err != nil {
				return err
			}
		}
		return nil
	})
	if err = errors.Join(err, db.Close()); err != nil {
		t.Fatal(err)
	}
	n.startFrontend(t)
	st := resyncs(t, adm, 2)
	if diff := cmp.Diff(&quiltpb.ResyncStatus{Held: 60}, st, stateOnly); diff != "" {
		t.Fatalf("the resync (-want +got):\n%s", diff)
	}
	if got := strings.Count(ours(t, n.ns), "\n"); got != 100 {
		t.Fatalf("%d routes of ours in the kernel after the resync, want all 100", got)
	}
	if !strings.Contains(n.frontend.Output(), "held back the removal of 60 routes of ours that nobody asked for") {
		t.Fatalf("no log line for the held removals:\n%s", n.frontend.Output())
	}
	if s := getStatus(t, adm); s.LastResync.Held != 60 || s.RemovalLimit != 10 {
		t.Fatalf("status: %v", s)
	}
	out, err := exec.Command("ip", "netns", "exec", n.ns, filepath.Join(binDir, "quiltctl"), "--addr", n.addr, "resync", "--dry-run").CombinedOutput()
	if err != nil || strings.Count(string(out), "\nremove ") != 60 || !strings.Contains(string(out), "removals held back") ||
		!strings.Contains(string(out), "dry run: nothing changed") {
		t.Fatalf("quiltctl resync --dry-run: %v\n%s", err, out)
	}
	sync, err := adm.SyncRoutes(ctxT(t))
	if err == nil {
		err = sync.Send(&quiltpb.SyncRoutesRequest{Routes: changes[:40]})
	}
	if resp, err2 := sync.CloseAndRecv(); err != nil || err2 != nil || resp.Failed != 0 {
		t.Fatal(resp, err, err2)
	}
	if got := strings.Count(ours(t, n.ns), "\n"); got != 40 {
		t.Fatalf("after SyncRoutes of the 40: %d routes of ours", got)
	}
	if st := resyncs(t, adm, 1); !st.Ok || st.Held != 0 {
		t.Fatalf("the resync after: %v", st)
	}
}
