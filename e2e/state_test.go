package e2e

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	bolt "go.etcd.io/bbolt"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/quiltmesh/quilt-runtime/internal/testutil"
	"github.com/quiltmesh/quilt-runtime/proto/quiltpb"
)

// frontendUID is the unprivileged uid the frontend runs as.
const frontendUID = 65533

// resync is the resync interval the state tests run the frontend with.
const resync = time.Second

// node is the privilege-separated pair in one namespace, as deployed: the
// helper with only CAP_NET_ADMIN, the frontend unprivileged, with its own
// state dir.
type node struct {
	ns, sock, stateDir, addr string
	helper, frontend         *testutil.Proc
	policy                   []string // --allowed-interface flags for both processes, if any
}

// newNode starts the helper in a new namespace with the vxlan interfaces
// (vxlan100 if none are named) and prepares the frontend's state dir;
// startFrontend starts the frontend.
func newNode(t *testing.T, vxlans ...string) *node {
	t.Helper()
	if len(vxlans) == 0 {
		vxlans = []string{"vxlan100"}
	}
	return newNodeAllowing(t, nil, vxlans...)
}

// newNodeAllowing is newNode with routes allowed via the interfaces named.
func newNodeAllowing(t *testing.T, allowed []string, vxlans ...string) *node {
	t.Helper()
	if len(vxlans) == 0 {
		vxlans = []string{"vxlan100"}
	}
	n := &node{ns: newNetns(t, vxlans...), addr: testutil.FreeLoopback(t)}
	for _, ifname := range allowed {
		n.policy = append(n.policy, "--allowed-interface", ifname)
	}
	n.helper, n.sock = startHelper(t, n.ns, frontendUID, n.policy...)
	// The socket's group is the frontend's, as systemd's SocketGroup makes it.
	if err := os.Chown(n.sock, nobody, frontendUID); err != nil {
		t.Fatal(err)
	}
	os.Chmod(filepath.Dir(n.sock), 0o755)
	n.stateDir = filepath.Join(socketDir(t, frontendUID), "state")
	if err := os.Mkdir(n.stateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(n.stateDir, frontendUID, frontendUID); err != nil {
		t.Fatal(err)
	}
	return n
}

// startFrontend starts the frontend and waits until it serves.
func (n *node) startFrontend(t *testing.T, extra ...string) *testutil.Proc {
	t.Helper()
	args := append([]string{"--grpc-addr", n.addr, "--helper-socket", n.sock, "--state-dir", n.stateDir,
		"--resync-interval", resync.String()}, n.policy...)
	args = append(args, extra...)
	n.frontend = start(t, n.ns, unprivileged(frontendUID), filepath.Join(binDir, "quilt-runtime"), args...)
	fe := n.frontend
	waitFor(t, fe, func() bool { return strings.Contains(fe.Output(), "Starting gRPC server on "+n.addr) })
	return fe
}

// kill9 kills the frontend with SIGKILL and waits for it.
func (n *node) kill9(t *testing.T) {
	t.Helper()
	stop(t, n.frontend, syscall.SIGKILL)
}

// clients returns the agent's and the admin's clients on one connection.
func (n *node) clients(t *testing.T) (quiltpb.QuiltRuntimeClient, quiltpb.QuiltAdminClient, *grpc.ClientConn) {
	t.Helper()
	conn := dialInNetns(t, n.ns, n.addr)
	return quiltpb.NewQuiltRuntimeClient(conn), quiltpb.NewQuiltAdminClient(conn), conn
}

// configure calls ConfigureNodeSubnet as the agent does.
func (n *node) configure(t *testing.T, subnet string) {
	t.Helper()
	rt, _, conn := n.clients(t)
	defer conn.Close()
	if r, err := rt.ConfigureNodeSubnet(ctxT(t), &quiltpb.ConfigureNodeSubnetRequest{Subnet: subnet}); err != nil || !r.Success {
		t.Fatal(r, err)
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// ours returns our routes in the namespace, one per line.
func ours(t *testing.T, ns string) string { return routes(t, ns, "proto", "81") }

// waitRoutes polls until our routes are exactly want, and returns how long
// that took; it fails the test after limit.
func waitRoutes(t *testing.T, ns, want string, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	var got string
	if err := testutil.Until(context.Background(), limit, nil, func() bool { got = ours(t, ns); return got == want }); err != nil {
		t.Fatalf("after %v our routes are:\n%s\nwant:\n%s", limit, got, want)
	}
	return time.Since(start)
}

// TestStatePersistsAcrossRestart: configure, allocate and inject; kill -9
// the frontend; flush our routes from the kernel as a reboot would; start
// again: the allocations are intact and the routes are back within one
// resync interval, with no agent call.
func TestStatePersistsAcrossRestart(t *testing.T) {
	n := newNode(t)
	n.startFrontend(t)
	rt, adm, _ := n.clients(t)
	ctx := ctxT(t)
	if r, err := rt.ConfigureNodeSubnet(ctx, &quiltpb.ConfigureNodeSubnetRequest{Subnet: "10.42.1.0/24"}); err != nil || !r.Success {
		t.Fatal(r, err)
	}
	allocated := map[string]string{}
	for _, id := range []string{"web-1", "web-2", "db-1"} {
		a, err := adm.AllocateIP(ctx, &quiltpb.AllocateIPRequest{ContainerId: id})
		if err != nil {
			t.Fatal(err)
		}
		allocated[id] = a.Ip
	}
	for _, dst := range []string{"10.42.2.0/24", "10.42.3.0/24", "10.42.4.0/24"} {
		if r, err := rt.InjectRoute(ctx, &quiltpb.InjectRouteRequest{Destination: dst, ViaInterface: "vxlan100"}); err != nil || !r.Success {
			t.Fatal(r, err)
		}
	}
	want := "10.42.2.0/24 dev vxlan100 scope link \n10.42.3.0/24 dev vxlan100 scope link \n10.42.4.0/24 dev vxlan100 scope link \n"
	waitRoutes(t, n.ns, want, 0)

	// The state is private to the frontend's user.
	for path, mode := range map[string]os.FileMode{n.stateDir: os.ModeDir | 0o700, filepath.Join(n.stateDir, "state.db"): 0o600} {
		fi, err := os.Stat(path)
		if err != nil || fi.Mode() != mode || fi.Sys().(*syscall.Stat_t).Uid != frontendUID {
			t.Fatalf("%s: %v (uid %d), want %v owned by %d: %v", path, fi.Mode(), fi.Sys().(*syscall.Stat_t).Uid, mode, frontendUID, err)
		}
	}

	n.kill9(t)
	testutil.Run(t, "ip", "-n", n.ns, "route", "flush", "proto", "81")
	waitRoutes(t, n.ns, "", 0)
	restarted := time.Now()
	n.startFrontend(t)
	serving := time.Since(restarted)
	healed := waitRoutes(t, n.ns, want, resync+2*time.Second)
	t.Logf("routes back %v after the restarted frontend served (%v after its start; resync interval %v)",
		healed.Round(time.Millisecond), (serving + healed).Round(time.Millisecond), resync)
	if !strings.Contains(n.frontend.Output(), "resync: re-added missing route 10.42.3.0/24 dev vxlan100") {
		t.Errorf("the repair was not logged:\n%s", n.frontend.Output())
	}

	_, adm, _ = n.clients(t)
	l, err := adm.ListAllocations(ctx, &quiltpb.ListAllocationsRequest{})
	if err != nil || l.Subnet != "10.42.1.0/24" || len(l.Allocations) != len(allocated) {
		t.Fatalf("after restart: %v %v", l, err)
	}
	for _, a := range l.Allocations {
		if allocated[a.ContainerId] != a.Ip {
			t.Errorf("container %s has %s after the restart, had %s", a.ContainerId, a.Ip, allocated[a.ContainerId])
		}
	}
	// The same ID gets the same address; the next one continues the sequence.
	if a, err := adm.AllocateIP(ctx, &quiltpb.AllocateIPRequest{ContainerId: "web-1"}); err != nil || a.Ip != allocated["web-1"] || !a.Existing {
		t.Errorf("web-1 again: %v %v", a, err)
	}
	if a, err := adm.AllocateIP(ctx, &quiltpb.AllocateIPRequest{ContainerId: "web-3"}); err != nil || a.Ip != "10.42.1.13" {
		t.Errorf("web-3: %v %v", a, err)
	}
}

// TestDriftRepair: a route of ours deleted by hand comes back at once (the
// helper's watch); a stray route with our protocol is removed by the next
// resync; a foreign route on a desired destination is reported and left
// untouched.
func TestDriftRepair(t *testing.T) {
	n := newNode(t)
	n.startFrontend(t)
	rt, adm, _ := n.clients(t)
	ctx := ctxT(t)
	for _, dst := range []string{"10.42.2.0/24", "10.42.3.0/24"} {
		if r, err := rt.InjectRoute(ctx, &quiltpb.InjectRouteRequest{Destination: dst, ViaInterface: "vxlan100"}); err != nil || !r.Success {
			t.Fatal(r, err)
		}
	}
	want := "10.42.2.0/24 dev vxlan100 scope link \n10.42.3.0/24 dev vxlan100 scope link \n"
	waitRoutes(t, n.ns, want, 0)

	testutil.Run(t, "ip", "-n", n.ns, "route", "del", "10.42.2.0/24")
	took := waitRoutes(t, n.ns, want, resync+2*time.Second)
	t.Logf("deleted route back after %v (interval %v)", took, resync)

	testutil.Run(t, "ip", "-n", n.ns, "route", "add", "10.42.9.0/24", "dev", "vxlan100", "proto", "81")
	took = waitRoutes(t, n.ns, want, resync+2*time.Second)
	t.Logf("stray route removed after %v", took)

	// Replace ours for 10.42.3.0/24 by a static route, in one request (a
	// delete and then an add would race the repair of the delete): a
	// conflict.
	testutil.Run(t, "ip", "-n", n.ns, "route", "replace", "10.42.3.0/24", "dev", "vxlan100", "proto", "static")
	foreign := routes(t, n.ns, "proto", "static")
	var st *quiltpb.GetStatusResponse
	reported := func() bool { st = getStatus(t, adm); return st.LastResync.Conflicts == 1 }
	if err := testutil.Until(ctx, resync+3*time.Second, nil, reported); err != nil {
		t.Fatalf("conflict not reported: %v: %v", err, st)
	}
	wantStatus := &quiltpb.GetStatusResponse{DesiredRoutes: 2, InstalledRoutes: 1, HelperAvailable: true, InstalledRoutesNow: 1, InSyncRoutesNow: 1,
		LastResync: &quiltpb.ResyncStatus{Conflicts: 1}}
	if diff := cmp.Diff(wantStatus, st, stateOnly); diff != "" {
		t.Errorf("status with a conflict (-want +got):\n%s", diff)
	}
	lr, err := adm.ListRoutes(ctx, &quiltpb.ListRoutesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	wantRoutes := &quiltpb.ListRoutesResponse{HelperAvailable: true, Routes: []*quiltpb.RouteStatus{
		{Destination: "10.42.2.0/24", DesiredInterface: "vxlan100", InstalledInterface: "vxlan100", State: quiltpb.RouteState_ROUTE_STATE_IN_SYNC},
		{Destination: "10.42.3.0/24", DesiredInterface: "vxlan100", State: quiltpb.RouteState_ROUTE_STATE_CONFLICT,
			Detail: "a route for 10.42.3.0/24 exists and is not quilt's; left alone"},
	}}
	if diff := cmp.Diff(wantRoutes, lr, stateOnly); diff != "" {
		t.Fatalf("routes with a conflict (-want +got):\n%s", diff)
	}
	// Two more resyncs, started after the conflict was seen: both report
	// it again, and neither touches the foreign route.
	for range 2 {
		if r := nextResync(t, adm, time.Now()); r.Conflicts != 1 || r.Ok {
			t.Errorf("a later resync: %v; want the conflict reported again", r)
		}
		if got := routes(t, n.ns, "proto", "static"); got != foreign {
			t.Fatalf("the foreign route was touched: %q, was %q", got, foreign)
		}
	}
	if !strings.Contains(n.frontend.Output(), "resync: desired route is held by a route that is not quilt's") {
		t.Errorf("conflict not logged")
	}
}

// TestStartRefusesBadState: a corrupt or future-version state file stops
// the start with a clear error, and the file is left as it was.
func TestStartRefusesBadState(t *testing.T) {
	n := newNode(t)
	n.startFrontend(t)
	n.configure(t, "10.42.1.0/24")
	n.kill9(t)
	path := filepath.Join(n.stateDir, "state.db")
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		file []byte
		says string
	}{
		{"garbage", []byte("not a database\n"), "state file is corrupt or not a quilt-runtime state file"},
		{"truncated", good[:5000], "state file is corrupt"},
		{"future version", withSchema(t, good, "99"), `state file has an unknown schema version "99"`},
	} {
		if err := os.WriteFile(path, tc.file, 0o600); err != nil {
			t.Fatal(err)
		}
		p := start(t, n.ns, unprivileged(frontendUID), filepath.Join(binDir, "quilt-runtime"), "--grpc-addr", n.addr,
			"--helper-socket", n.sock, "--state-dir", n.stateDir)
		err := p.ExitStatus(t, 10*time.Second)
		out := p.Output()
		if err == nil || !strings.Contains(out, tc.says) || !strings.Contains(out, path) || strings.Contains(out, "Starting gRPC server") {
			t.Errorf("%s: exit %v, output:\n%s", tc.name, err, out)
		}
		if after, _ := os.ReadFile(path); string(after) != string(tc.file) {
			t.Errorf("%s: the file was changed", tc.name)
		}
	}
}

// withSchema returns a copy of a state file whose schema version is v.
func withSchema(t *testing.T, good []byte, v string) []byte {
	t.Helper()
	path := filepath.Join(t.TempDir(), "state.db")
	os.WriteFile(path, good, 0o600)
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte("meta")).Put([]byte("schema"), []byte(v)) })
	if err = errors.Join(err, db.Close()); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// ledger records what the server acknowledged. An operation sent but not
// answered (the server was killed) may or may not have taken effect, so
// its key is left unchecked unless a later one is acknowledged.
type ledger struct {
	mu       sync.Mutex
	state    map[string]string // key -> acknowledged value ("" = absent)
	unsure   map[string]bool
	attempts int
	acks     int
}

func (l *ledger) send(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.unsure[key] = true
	l.attempts++
}

func (l *ledger) ack(key, value string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.state[key], l.unsure[key] = value, false
	l.acks++
}

// acked is how many operations the server has acknowledged so far.
func (l *ledger) acked() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.acks
}

// waitAcks waits until count reaches want, failing the test if it has
// not after 30s: the server stopped acknowledging, or the clients
// stopped asking (a storm's clients may stop at their first failure).
func waitAcks(t *testing.T, what string, count func() int, want int) {
	t.Helper()
	if err := testutil.Until(context.Background(), 30*time.Second, nil, func() bool { return count() >= want }); err != nil {
		t.Fatalf("%s: %d acknowledgements, want %d: %v; the server stopped acknowledging, or the clients stopped asking", what, count(), want, err)
	}
}

// check compares every surely known key with have and returns the number
// checked.
func (l *ledger) check(t *testing.T, what string, have map[string]string) int {
	t.Helper()
	n := 0
	for k, v := range l.state {
		if l.unsure[k] {
			continue
		}
		n++
		if have[k] != v {
			t.Errorf("acknowledged %s %s=%q is %q after the storm", what, k, v, have[k])
		}
	}
	return n
}

// TestKillStorm: the frontend is killed with SIGKILL again and again while
// clients allocate and release addresses and inject and remove routes;
// afterwards every acknowledged change is there, no address is given
// twice, and the kernel holds exactly the desired routes after one resync.
func TestKillStorm(t *testing.T) {
	n := newNode(t)
	n.startFrontend(t)
	n.configure(t, "10.42.1.0/24")

	allocs := &ledger{state: map[string]string{}, unsure: map[string]bool{}}
	routesL := &ledger{state: map[string]string{}, unsure: map[string]bool{}}
	const rounds, workers = 10, 4
	for round := range rounds {
		if round > 0 {
			n.startFrontend(t)
		}
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				conn := dialInNetns(t, n.ns, n.addr)
				defer conn.Close()
				rt, adm := quiltpb.NewQuiltRuntimeClient(conn), quiltpb.NewQuiltAdminClient(conn)
				// Each worker has its own 60 destinations, so its acks
				// alone decide their state.
				dst := func(i int) string { return fmt.Sprintf("10.42.%d.0/24", 2+w*60+(round*17+i)%60) }
				for i := 0; ctx.Err() == nil; i++ {
					id := fmt.Sprintf("r%d-w%d-%d", round, w, i)
					allocs.send(id)
					a, err := adm.AllocateIP(ctx, &quiltpb.AllocateIPRequest{ContainerId: id})
					if err != nil {
						return // the server is gone
					}
					allocs.ack(id, a.Ip)
					if i > 0 { // release the previous one: the pool never runs dry
						prev := fmt.Sprintf("r%d-w%d-%d", round, w, i-1)
						allocs.send(prev)
						if _, err := adm.ReleaseIP(ctx, &quiltpb.ReleaseIPRequest{ContainerId: prev}); err != nil {
							return
						}
						allocs.ack(prev, "")
					}
					routesL.send(dst(i))
					r, err := rt.InjectRoute(ctx, &quiltpb.InjectRouteRequest{Destination: dst(i), ViaInterface: "vxlan100"})
					if err != nil || !r.Success {
						return
					}
					routesL.ack(dst(i), "vxlan100")
					if i%3 == 2 {
						routesL.send(dst(i - 1))
						r, err := rt.RemoveRoute(ctx, &quiltpb.RemoveRouteRequest{Destination: dst(i - 1)})
						if err != nil || !r.Success {
							return
						}
						routesL.ack(dst(i-1), "")
					}
				}
			})
		}
		// The frontend dies at a random point of the storm: after 1 to
		// 200 acknowledged changes.
		acked := func() int { return allocs.acked() + routesL.acked() }
		waitAcks(t, "the storm", acked, acked()+1+rand.IntN(200))
		n.kill9(t)
		cancel()
		wg.Wait()
	}
	n.startFrontend(t)
	_, adm, _ := n.clients(t)
	ctx := ctxT(t)
	l, err := adm.ListAllocations(ctx, &quiltpb.ListAllocationsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	have, byIP := map[string]string{}, map[string]string{}
	for _, a := range l.Allocations {
		have[a.ContainerId] = a.Ip
		if other, dup := byIP[a.Ip]; dup {
			t.Errorf("%s given to both %s and %s", a.Ip, other, a.ContainerId)
		}
		byIP[a.Ip] = a.ContainerId
	}
	checkedAllocs := allocs.check(t, "allocation", have)

	lr, err := adm.ListRoutes(ctx, &quiltpb.ListRoutesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	desired := map[string]string{}
	var want strings.Builder // in address order, as ip(8) prints
	for _, r := range lr.Routes {
		if r.DesiredInterface != "" {
			desired[r.Destination] = r.DesiredInterface
			want.WriteString(r.Destination + " dev vxlan100 scope link \n")
		}
	}
	checkedRoutes := routesL.check(t, "route", desired)
	took := waitRoutes(t, n.ns, want.String(), resync+2*time.Second)
	t.Logf("%d SIGKILLs; %d allocation and %d route operations sent; %d allocations and %d routes checked against their last acknowledgement; kernel matched the desired %d routes %v after the last start",
		rounds, allocs.attempts, routesL.attempts, checkedAllocs, checkedRoutes, len(desired), took.Round(time.Millisecond))
	if checkedAllocs < 2*rounds || checkedRoutes < rounds {
		t.Errorf("the storm acknowledged too little to prove anything")
	}
}

// writeSchema1 writes a state file as schema 1 laid it out (allocations by
// container ID alone) for the frontend's uid, and returns its bytes.
func writeSchema1(t *testing.T, path string, allocs ...string) []byte {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for bucket, kvs := range map[string][]string{
			"meta":        {"schema", "1", "subnet", "10.42.1.0/24", "last_ip", "10.42.1.11"},
			"allocations": allocs,
			"routes":      {"10.42.2.0/24", "vxlan100"},
		} {
			b, err := tx.CreateBucket([]byte(bucket))
			for i := 0; err == nil && i+1 < len(kvs); i += 2 {
				err = b.Put([]byte(kvs[i]), []byte(kvs[i+1]))
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err = errors.Join(err, db.Close(), os.Chown(path, frontendUID, frontendUID)); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestStartMigratesSchema1: the real binary upgrades a state file of the
// previous schema with every allocation and route kept, and keeps a copy
// of the old file; a schema-1 file the allocator refuses (an address
// outside the subnet) is left byte for byte as it was, with no copy.
func TestStartMigratesSchema1(t *testing.T) {
	n := newNode(t)
	path := filepath.Join(n.stateDir, "state.db")
	bad := writeSchema1(t, path, "c1", "10.42.1.10", "c2", "10.42.7.11")
	p := start(t, n.ns, unprivileged(frontendUID), filepath.Join(binDir, "quilt-runtime"), "--grpc-addr", n.addr,
		"--helper-socket", n.sock, "--state-dir", n.stateDir)
	if err := p.ExitStatus(t, 10*time.Second); err == nil || !strings.Contains(p.Output(), "10.42.7.11") {
		t.Fatalf("a schema-1 file with an address outside its subnet: exit %v\n%s", err, p.Output())
	}
	if after, _ := os.ReadFile(path); string(after) != string(bad) {
		t.Fatal("the refused schema-1 file was changed")
	}
	if _, err := os.Stat(path + ".schema1"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a copy was kept of a refused file: %v", err)
	}

	os.Remove(path)
	old := writeSchema1(t, path, "c1", "10.42.1.10", "web-2", "10.42.1.11")
	fe := n.startFrontend(t)
	if !strings.Contains(fe.Output(), "migrated the state file") {
		t.Errorf("no migration logged:\n%s", fe.Output())
	}
	_, adm, conn := n.clients(t)
	defer conn.Close()
	allocated := func(ip string, existing bool) *quiltpb.AllocateIPResponse {
		return &quiltpb.AllocateIPResponse{Ip: ip, PrefixLength: 24, Gateway: "10.42.1.1", Subnet: "10.42.1.0/24", ClusterCidr: "10.42.0.0/16", Existing: existing}
	}
	for _, tc := range []struct {
		req  *quiltpb.AllocateIPRequest
		want *quiltpb.AllocateIPResponse
	}{
		{&quiltpb.AllocateIPRequest{ContainerId: "c1"}, allocated("10.42.1.10", true)},
		{&quiltpb.AllocateIPRequest{ContainerId: "web-2"}, allocated("10.42.1.11", true)},
		{&quiltpb.AllocateIPRequest{ContainerId: "web-2", InterfaceName: "eth1"}, allocated("10.42.1.12", false)}, // a new interface
	} {
		r, err := adm.AllocateIP(ctxT(t), tc.req)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(tc.want, r, protocmp.Transform()); diff != "" {
			t.Errorf("AllocateIP(%v) after the migration (-want +got):\n%s", tc.req, diff)
		}
	}
	lr, err := adm.ListRoutes(ctxT(t), &quiltpb.ListRoutesRequest{})
	if err != nil || len(lr.Routes) != 1 || lr.Routes[0].DesiredInterface != "vxlan100" {
		t.Errorf("desired routes after the migration: %v %v", lr, err)
	}
	if b, err := os.ReadFile(path + ".schema1"); err != nil || len(b) == 0 || len(old) == 0 {
		t.Errorf("copy of the schema-1 file: %d bytes, %v", len(b), err)
	}
}
