package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/quiltmesh/quilt-runtime/internal/testutil"
	"github.com/quiltmesh/quilt-runtime/shared/wire"
)

// nobody is the unprivileged uid the tests run processes as.
const nobody = 65534

// binDir holds the binaries under test, in a directory every uid can read.
var binDir string

func TestMain(m *testing.M) {
	if mode := os.Getenv("QUILT_E2E_CHILD"); mode != "" {
		os.Exit(child(mode))
	}
	code, err := setup(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e setup:", err)
		code = 1
	}
	os.Exit(code)
}

func setup(m *testing.M) (int, error) {
	dir, err := os.MkdirTemp("", "quilt-e2e-bin-")
	if err != nil {
		return 1, err
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o755); err != nil {
		return 1, err
	}
	binDir = dir
	for _, pkg := range []string{"./helper/cmd/quilt-route-helper", "./frontend/cmd/quilt-runtime", "./frontend/cmd/quiltctl", "./frontend/cmd/quilt-ipam", "./e2e/cmd/quilt-demo"} {
		cmd := exec.Command("go", "build", "-o", dir, pkg)
		cmd.Dir, cmd.Env = "..", append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return 1, fmt.Errorf("build %s: %v\n%s", pkg, err, out)
		}
	}
	// The reference CNI code at the Makefile's pinned versions, in cni/.
	cmd := exec.Command("make", "cni-tools", "BIN="+dir)
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		return 1, fmt.Errorf("make cni-tools: %v\n%s", err, out)
	}
	// The test binary itself is re-run as an unprivileged child, so it too
	// must sit where every uid can read it.
	self, err := os.Executable()
	if err != nil {
		return 1, err
	}
	b, err := os.ReadFile(self)
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, "e2e.test"), b, 0o755)
	}
	if err != nil {
		return 1, err
	}
	return m.Run(), nil
}

// requireRoot skips the test without root, or fails it when CI=true.
func requireRoot(t *testing.T) {
	t.Helper()
	testutil.RequireRoot(t, "network namespaces, setpriv")
}

// newNetns makes a named network namespace with lo up and the given vxlan
// interfaces, and removes it when the test ends.
func newNetns(t *testing.T, vxlans ...string) string {
	t.Helper()
	requireRoot(t)
	ns := testutil.Netns(t, "quilt-e2e")
	for i, name := range vxlans {
		testutil.Run(t, "ip", "-n", ns, "link", "add", name, "type", "vxlan", "id", fmt.Sprint(100+i), "dstport", "4789")
		testutil.Run(t, "ip", "-n", ns, "link", "set", name, "up")
	}
	return ns
}

// addVeth adds a veth pair, name and name+"p", both up, to the namespace:
// an interface for routes that are not quilt's.
func addVeth(t *testing.T, ns, name string) {
	t.Helper()
	testutil.Run(t, "ip", "-n", ns, "link", "add", name, "type", "veth", "peer", "name", name+"p")
	testutil.Run(t, "ip", "-n", ns, "link", "set", name, "up")
	testutil.Run(t, "ip", "-n", ns, "link", "set", name+"p", "up")
}

// routes returns the namespace's IPv4 main-table routes, one per line.
func routes(t *testing.T, ns string, filter ...string) string {
	t.Helper()
	return testutil.Run(t, "ip", append([]string{"-n", ns, "-4", "route", "show", "table", "main"}, filter...)...)
}

// socketDir makes a directory for sockets that uid can write, removed at
// the end of the test.
func socketDir(t *testing.T, uid int) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "quilt-e2e-sock-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chown(dir, uid, uid); err != nil {
		t.Fatal(err)
	}
	return dir
}

// start starts a command in the namespace, optionally under setpriv, and
// kills it at the end of the test.
func start(t *testing.T, ns string, setpriv []string, name string, args ...string) *testutil.Proc {
	t.Helper()
	argv := append([]string{"netns", "exec", ns}, setpriv...)
	argv = append(append(argv, name), args...)
	return testutil.StartTest(t, exec.Command("ip", argv...))
}

// stop sends sig to p and waits for it to end, failing the test if it
// still runs 10s later.
func stop(t *testing.T, p *testutil.Proc, sig syscall.Signal) {
	t.Helper()
	if err := p.Stop(sig, 10*time.Second); err != nil {
		t.Fatal(err)
	}
}

// onlyNetAdmin runs a command as uid with CAP_NET_ADMIN as its only
// capability, the way the systemd unit starts the helper.
func onlyNetAdmin(uid int) []string {
	return []string{"setpriv", fmt.Sprintf("--reuid=%d", uid), fmt.Sprintf("--regid=%d", uid), "--clear-groups",
		"--inh-caps=-all,+net_admin", "--ambient-caps=-all,+net_admin", "--bounding-set=-all,+net_admin", "--no-new-privs", "--"}
}

// unprivileged runs a command as uid with no capabilities at all.
func unprivileged(uid int) []string {
	return []string{"setpriv", fmt.Sprintf("--reuid=%d", uid), fmt.Sprintf("--regid=%d", uid), "--clear-groups",
		"--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"}
}

// startHelper starts the real helper in ns with only CAP_NET_ADMIN, as
// nobody, admitting allowUID, and waits for its socket.
func startHelper(t *testing.T, ns string, allowUID int, extra ...string) (*testutil.Proc, string) {
	t.Helper()
	sock := filepath.Join(socketDir(t, nobody), "helper.sock")
	args := append([]string{"--socket", sock, "--allow-uid", fmt.Sprint(allowUID)}, extra...)
	p := start(t, ns, onlyNetAdmin(nobody), filepath.Join(binDir, "quilt-route-helper"), args...)
	waitFor(t, p, func() bool { _, err := os.Stat(sock); return err == nil })
	return p, sock
}

// waitFor polls cond until it holds, failing the test after 10s or if p exits.
func waitFor(t *testing.T, p *testutil.Proc, cond func() bool) {
	t.Helper()
	if err := testutil.Until(context.Background(), 10*time.Second, p, cond); err != nil {
		t.Fatalf("waiting: %v", err)
	}
}

// dialHelper connects to a helper socket as the test's own uid.
func dialHelper(t *testing.T, sock string) *net.UnixConn {
	t.Helper()
	c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: sock, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// exchange sends raw bytes and returns the records read until a message
// whose last record ends the answer (anything but a list entry), or io.EOF
// if the helper closed the connection.
func exchange(c *net.UnixConn, msg []byte) ([]wire.Record, error) {
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(msg); err != nil {
		return nil, err
	}
	var recs []wire.Record
	buf := make([]byte, wire.MaxBatch*wire.Size+1)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return recs, err
		}
		if n == 0 || n%wire.Size != 0 {
			return recs, fmt.Errorf("helper sent a message of %d bytes", n)
		}
		for off := 0; off < n; off += wire.Size {
			r, err := wire.Decode(buf[off : off+wire.Size])
			if err != nil {
				return recs, fmt.Errorf("helper sent a bad record: %w", err)
			}
			recs = append(recs, r)
		}
		if recs[len(recs)-1].Result != wire.ResultRoute {
			return recs, nil
		}
	}
}

// call sends one request record and returns the final reply.
func call(t *testing.T, c *net.UnixConn, req wire.Record) wire.Record {
	t.Helper()
	recs, err := exchange(c, req.Append(nil))
	if err != nil {
		t.Fatalf("%v %v %q: %v", req.Op, req.Dst, req.Ifname, err)
	}
	return recs[len(recs)-1]
}

// assertClosed checks the helper closed the connection.
func assertClosed(t *testing.T, c *net.UnixConn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, wire.Size+1)); err != io.EOF {
		t.Fatalf("want the helper to close the connection, read %d bytes, err %v", n, err)
	}
}
