package e2e

import (
	"github.com/quiltmesh/quilt-runtime/internal/netns"
	"github.com/quiltmesh/quilt-runtime/internal/testutil"

	"context"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/quiltmesh/quilt-runtime/proto/quiltpb"
)

// TestPrivilegeSeparatedAgentSequence runs the product as deployed: the
// helper with only CAP_NET_ADMIN in a namespace with vxlan100, the frontend
// as an unprivileged uid with no capabilities, and a real gRPC client doing
// what the Quilt Mesh agent does. Then the kernel holds exactly our routes.
func TestPrivilegeSeparatedAgentSequence(t *testing.T) {
	n := newNode(t)
	ns, addr, fe := n.ns, n.addr, n.startFrontend(t)

	// The frontend listens inside the namespace's loopback; dial it there.
	conn := dialInNetns(t, ns, addr)
	client := quiltpb.NewQuiltRuntimeClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	waitFor(t, fe, func() bool {
		resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: "quilt.QuiltRuntime"})
		return err == nil && resp.Status == healthpb.HealthCheckResponse_SERVING
	})
	type ans interface {
		GetSuccess() bool
		GetError() string
	}
	check := func(what string, a ans, err error) {
		t.Helper()
		if err != nil || !a.GetSuccess() {
			t.Fatalf("%s: %v, %v", what, a, err)
		}
	}
	r1, err := client.ConfigureNodeSubnet(ctx, &quiltpb.ConfigureNodeSubnetRequest{Subnet: "10.42.1.0/24"})
	check("configure", r1, err)
	for _, dst := range []string{"10.42.2.0/24", "10.42.3.0/24", "10.42.2.0/24"} {
		r, err := client.InjectRoute(ctx, &quiltpb.InjectRouteRequest{Destination: dst, ViaInterface: "vxlan100"})
		check("inject "+dst, r, err)
	}
	for range 2 {
		r, err := client.RemoveRoute(ctx, &quiltpb.RemoveRouteRequest{Destination: "10.42.3.0/24"})
		check("remove 10.42.3.0/24", r, err)
	}
	// Refusals come back as success=false with the value and the rule.
	for _, tc := range []struct{ dst, via, want string }{
		{"10.42.1.0/24", "vxlan100", "own subnet"},
		{"10.43.2.0/24", "vxlan100", "outside the cluster CIDR"},
		{"10.42.4.0/24", "eth0", "not on the allow list"},
	} {
		r, err := client.InjectRoute(ctx, &quiltpb.InjectRouteRequest{Destination: tc.dst, ViaInterface: tc.via})
		if err != nil || r.Success || !strings.Contains(r.Error, tc.want) || !strings.Contains(r.Error, tc.dst[:8]) && !strings.Contains(r.Error, tc.via) {
			t.Errorf("inject %s via %s: %v, %v; want success=false naming %q", tc.dst, tc.via, r, err, tc.want)
		}
	}

	if got, exp := routes(t, ns), "10.42.2.0/24 dev vxlan100 proto 81 scope link \n"; got != exp {
		t.Fatalf("routes in the namespace:\n%s\nwant exactly:\n%s", got, exp)
	}
	for _, line := range []string{
		"RPC: ConfigureNodeSubnet(subnet=10.42.1.0/24)", "IPAM configured with subnet: 10.42.1.0/24",
		"RPC: InjectRoute(destination=10.42.2.0/24, via=vxlan100)", "Added route: 10.42.2.0/24 dev vxlan100",
		"Removed route: 10.42.3.0/24",
	} {
		if !strings.Contains(fe.Output(), line) {
			t.Errorf("frontend log lacks %q", line)
		}
	}
	// The calls that changed nothing (the second inject and remove) are
	// logged at DEBUG, below the default level.
	for _, line := range []string{"Route already present", "Route already absent"} {
		if strings.Contains(fe.Output(), line) {
			t.Errorf("frontend log at INFO has %q", line)
		}
	}
}

// TestFrontendRefusesPrivileges: the frontend will not run as root, nor
// as an unprivileged uid holding a capability in any set that grants one
// (effective, permitted, inheritable, ambient), and its error names the
// set; it refuses before it opens a socket. The same uid with no
// capability starts.
func TestFrontendRefusesPrivileges(t *testing.T) {
	ns := newNetns(t)
	dir := socketDir(t, nobody)
	// A copy of the binary with a file capability that is permitted but not
	// effective (setcap cap_net_admin+p): exec gives an unprivileged uid
	// CAP_NET_ADMIN in CapPrm only. Written as the kernel's xattr
	// (vfs_cap_data, revision 2, no effective flag), so no libcap tool is
	// needed.
	fileCap := filepath.Join(dir, "quilt-runtime-filecap")
	b, err := os.ReadFile(filepath.Join(binDir, "quilt-runtime"))
	if err == nil {
		err = os.WriteFile(fileCap, b, 0o755)
	}
	if err != nil {
		t.Fatal(err)
	}
	xattr := make([]byte, 20)
	binary.LittleEndian.PutUint32(xattr[0:], 0x02000000) // VFS_CAP_REVISION_2
	binary.LittleEndian.PutUint32(xattr[4:], 1<<unix.CAP_NET_ADMIN)
	if err := unix.Setxattr(fileCap, "security.capability", xattr, 0); err != nil {
		t.Fatalf("set a file capability on %s: %v", fileCap, err)
	}
	user := []string{"setpriv", fmt.Sprintf("--reuid=%d", nobody), fmt.Sprintf("--regid=%d", nobody), "--clear-groups"}
	for _, tc := range []struct {
		name    string
		setpriv []string // nil: as the test, root
		bin     string
		want    []string // named in the error; nil: it must start
		absent  string   // a set that must not be named
	}{
		{"root", nil, "quilt-runtime", []string{"uid 0"}, ""},
		{"inheritable only", append(user, "--inh-caps=-all,+net_admin", "--"), "quilt-runtime", []string{"CapInh (inheritable)"}, "CapEff"},
		{"ambient", append(user, "--inh-caps=-all,+net_admin", "--ambient-caps=-all,+net_admin", "--"), "quilt-runtime", []string{"CapAmb (ambient)", "CapEff (effective)", "CapPrm"}, ""},
		{"permitted, not effective (file capability)", append(user, "--inh-caps=-all", "--"), fileCap, []string{"CapPrm (permitted)"}, "CapEff"},
		{"no capability", unprivileged(nobody), "quilt-runtime", nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bin := tc.bin
			if !filepath.IsAbs(bin) {
				bin = filepath.Join(binDir, bin)
			}
			addr := testutil.FreeLoopback(t)
			p := start(t, ns, tc.setpriv, bin, "--grpc-addr", addr, "--helper-socket", filepath.Join(dir, "absent.sock"),
				"--state-dir", filepath.Join(socketDir(t, nobody), "state"))
			if tc.want == nil {
				waitFor(t, p, func() bool { return strings.Contains(p.Output(), "Starting gRPC server on "+addr) })
				return
			}
			err := p.ExitStatus(t, 10*time.Second)
			out := p.Output()
			if err == nil {
				t.Fatalf("started; want a refusal naming %q:\n%s", tc.want, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("the refusal does not name %q (for a file capability: is %s on a nosuid mount?):\n%s", w, bin, out)
				}
			}
			if tc.absent != "" && strings.Contains(out, tc.absent) {
				t.Errorf("the refusal names %s, which this start does not hold:\n%s", tc.absent, out)
			}
			if strings.Contains(out, "Starting gRPC server") || strings.Contains(out, "state loaded") {
				t.Errorf("it got as far as the state or a listener before refusing:\n%s", out)
			}
		})
	}
}

// TestFrontendHelperDown: with no helper, route RPCs are answered, not
// left hanging (the call's deadline is 5s, the frontend's helper timeout
// 2s), with "route helper unavailable", and health says NOT_SERVING.
func TestFrontendHelperDown(t *testing.T) {
	ns := newNetns(t, "vxlan100")
	addr := testutil.FreeLoopback(t)
	dir := socketDir(t, nobody)
	fe := start(t, ns, unprivileged(nobody), filepath.Join(binDir, "quilt-runtime"), "--grpc-addr", addr,
		"--helper-socket", filepath.Join(dir, "absent.sock"), "--state-dir", filepath.Join(dir, "state"))
	waitFor(t, fe, func() bool { return strings.Contains(fe.Output(), "Starting gRPC server on "+addr) })
	conn := dialInNetns(t, ns, addr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	call, cancelCall := context.WithTimeout(ctx, 5*time.Second)
	defer cancelCall()
	start := time.Now()
	r, err := quiltpb.NewQuiltRuntimeClient(conn).InjectRoute(call, &quiltpb.InjectRouteRequest{Destination: "10.42.2.0/24", ViaInterface: "vxlan100"})
	if err != nil || r.Success || !strings.Contains(r.Error, "route helper unavailable") {
		t.Fatalf("inject without helper: %v, %v", r, err)
	}
	t.Logf("inject without helper answered in %v", time.Since(start))
	h, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: "quilt.QuiltRuntime"})
	if err != nil || h.Status != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("health without helper: %v, %v", h, err)
	}
}

// dialInNetns makes a gRPC client whose connections are made from inside
// the namespace, where the frontend's loopback address lives.
func dialInNetns(t *testing.T, ns, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) { return netns.Dial(ctx, ns, a, 0) }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}
