package e2e

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/quiltmesh/quilt-runtime/shared/wire"
)

func add(dst, ifname string) wire.Record {
	return wire.Record{Op: wire.OpAdd, Tag: 1, Dst: netip.MustParsePrefix(dst), Ifname: ifname}
}

func del(dst string) wire.Record {
	return wire.Record{Op: wire.OpDelete, Tag: 2, Dst: netip.MustParsePrefix(dst)}
}

// want checks a reply's status and result.
func want(t *testing.T, got wire.Record, status wire.Status, result wire.Result) {
	t.Helper()
	if got.Status != status || got.Result != result {
		t.Fatalf("%v %v %q: got status %v result %v (errno %d), want status %v result %v",
			got.Op, got.Dst, got.Ifname, got.Status, got.Result, got.Errno, status, result)
	}
}

// TestHelperOwnership drives every ownership case of the real helper
// against the real kernel, checking the route table after each step.
func TestHelperOwnership(t *testing.T) {
	ns := newNetns(t, "vxlan100", "vxlan200")
	_, sock := startHelper(t, ns, os.Getuid(), "--allowed-interface", "vxlan100", "--allowed-interface", "vxlan200")
	c := dialHelper(t, sock)
	ours := func() string { return routes(t, ns, "proto", "81") }

	want(t, call(t, c, wire.Record{Op: wire.OpHello, Tag: 9}), wire.StatusOK, wire.ResultNone)

	// Absent: created, in table main, scope link, our protocol.
	want(t, call(t, c, add("10.42.2.0/24", "vxlan100")), wire.StatusOK, wire.ResultCreated)
	if got, exp := ours(), "10.42.2.0/24 dev vxlan100 scope link \n"; got != exp {
		t.Fatalf("after create, our routes:\n%s\nwant:\n%s", got, exp)
	}
	// Present, ours, same interface: no change.
	want(t, call(t, c, add("10.42.2.0/24", "vxlan100")), wire.StatusOK, wire.ResultUnchanged)
	// Present, ours, other interface: replaced in place.
	want(t, call(t, c, add("10.42.2.0/24", "vxlan200")), wire.StatusOK, wire.ResultReplaced)
	if got, exp := ours(), "10.42.2.0/24 dev vxlan200 scope link \n"; got != exp {
		t.Fatalf("after replace, our routes:\n%s\nwant:\n%s", got, exp)
	}

	// Foreign routes: one exactly like ours but static, one with a metric.
	run(t, "ip", "-n", ns, "route", "add", "10.42.5.0/24", "dev", "vxlan100", "proto", "static")
	run(t, "ip", "-n", ns, "route", "add", "10.42.6.0/24", "dev", "vxlan100", "metric", "50")
	before := routes(t, ns)
	want(t, call(t, c, add("10.42.5.0/24", "vxlan100")), wire.StatusConflict, wire.ResultNone)
	want(t, call(t, c, add("10.42.5.0/24", "vxlan200")), wire.StatusConflict, wire.ResultNone)
	want(t, call(t, c, add("10.42.6.0/24", "vxlan100")), wire.StatusConflict, wire.ResultNone)
	want(t, call(t, c, del("10.42.5.0/24")), wire.StatusNotOwned, wire.ResultNone)
	want(t, call(t, c, del("10.42.6.0/24")), wire.StatusNotOwned, wire.ResultNone)
	if after := routes(t, ns); after != before {
		t.Fatalf("refused requests changed the table:\nbefore:\n%s\nafter:\n%s", before, after)
	}

	// List: ours only.
	want(t, call(t, c, add("10.42.3.0/24", "vxlan100")), wire.StatusOK, wire.ResultCreated)
	recs, err := exchange(c, wire.Record{Op: wire.OpList, Tag: 77}.Encode())
	if err != nil {
		t.Fatal(err)
	}
	var listed []string
	for _, r := range recs {
		if r.Tag != 77 || r.Status != wire.StatusOK {
			t.Fatalf("list record %+v", r)
		}
		if r.Result == wire.ResultRoute {
			listed = append(listed, r.Dst.String()+" "+r.Ifname)
		}
	}
	if got, exp := strings.Join(listed, ","), "10.42.2.0/24 vxlan200,10.42.3.0/24 vxlan100"; got != exp || recs[len(recs)-1].Result != wire.ResultDone {
		t.Fatalf("list: got %q (last %v), want %q then done", got, recs[len(recs)-1].Result, exp)
	}

	// Delete: ours deleted, then absent is success; foreign ones untouched.
	want(t, call(t, c, del("10.42.2.0/24")), wire.StatusOK, wire.ResultDeleted)
	want(t, call(t, c, del("10.42.2.0/24")), wire.StatusOK, wire.ResultAbsent)
	want(t, call(t, c, del("10.42.9.0/24")), wire.StatusOK, wire.ResultAbsent)
	exp := "10.42.3.0/24 dev vxlan100 proto 81 scope link \n" +
		"10.42.5.0/24 dev vxlan100 proto static scope link \n" +
		"10.42.6.0/24 dev vxlan100 scope link metric 50 \n"
	if got := routes(t, ns); got != exp {
		t.Fatalf("final table:\n%s\nwant:\n%s", got, exp)
	}
}

// TestHelperPolicy sends requests straight to the helper's socket that a
// compromised frontend might send: the helper refuses each and the kernel
// table stays exactly as it was.
func TestHelperPolicy(t *testing.T) {
	ns := newNetns(t, "vxlan100", "vxlan200")
	run(t, "ip", "-n", ns, "link", "add", "vxlan300", "type", "vxlan", "id", "300", "dstport", "4789")
	_, sock := startHelper(t, ns, os.Getuid(), "--allowed-interface", "vxlan100", "--allowed-interface", "vxlan999")
	c := dialHelper(t, sock)
	before := routes(t, ns)
	for _, tc := range []struct {
		req    wire.Record
		status wire.Status
	}{
		{add("10.42.2.0/24", "vxlan200"), wire.StatusIfaceDenied}, // exists, not allowed
		{add("10.42.2.0/24", "vxlan300"), wire.StatusIfaceDenied},
		{add("10.42.2.0/24", "lo"), wire.StatusIfaceDenied},
		{add("10.42.2.0/24", "VXLAN100"), wire.StatusIfaceDenied},
		{add("10.42.2.0/24", "vxlan1000"), wire.StatusIfaceDenied},
		{add("10.42.2.0/24", ""), wire.StatusIfaceDenied},
		{add("10.42.2.0/24", "vxlan999"), wire.StatusNoIface}, // allowed, absent
		{add("10.43.2.0/24", "vxlan100"), wire.StatusOutsideCluster},
		{add("192.168.0.0/24", "vxlan100"), wire.StatusOutsideCluster},
		{add("0.0.0.0/24", "vxlan100"), wire.StatusOutsideCluster},
		{add("10.42.0.0/16", "vxlan100"), wire.StatusPrefixLen},
		{add("0.0.0.0/0", "vxlan100"), wire.StatusNotIPv4}, // decodes as "no prefix"
		{add("10.42.2.0/25", "vxlan100"), wire.StatusPrefixLen},
		{add("10.42.2.0/23", "vxlan100"), wire.StatusPrefixLen},
		{add("10.42.2.7/32", "vxlan100"), wire.StatusPrefixLen},
		{del("10.43.2.0/24"), wire.StatusOutsideCluster},
		{del("10.42.0.0/16"), wire.StatusPrefixLen},
		{wire.Record{Op: wire.OpDelete, Tag: 3}, wire.StatusNotIPv4},
	} {
		got := call(t, c, tc.req)
		if got.Status != tc.status || got.Tag != tc.req.Tag {
			t.Errorf("%v %v %q: got status %v tag %d, want %v", tc.req.Op, tc.req.Dst, tc.req.Ifname, got.Status, got.Tag, tc.status)
		}
	}
	if after := routes(t, ns); after != before {
		t.Fatalf("refused requests changed the table:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// TestHelperStrictDecoding sends malformed records: framing errors close
// the connection, every other violation is answered and the connection
// stays open.
func TestHelperStrictDecoding(t *testing.T) {
	ns := newNetns(t, "vxlan100")
	_, sock := startHelper(t, ns, os.Getuid())
	good := add("10.42.2.0/24", "vxlan100").Encode()
	mutate := func(f func(b []byte)) []byte {
		b := append([]byte(nil), good...)
		f(b)
		return b
	}
	stayOpen := []struct {
		name   string
		msg    []byte
		status wire.Status
	}{
		{"unknown op", mutate(func(b []byte) { b[1] = 9 }), wire.StatusBadOp},
		{"op zero", mutate(func(b []byte) { b[1] = 0 }), wire.StatusBadOp},
		{"reserved byte", mutate(func(b []byte) { b[18] = 1 }), wire.StatusBadReserved},
		{"status set in request", mutate(func(b []byte) { b[2] = 1 }), wire.StatusBadReserved},
		{"result set in request", mutate(func(b []byte) { b[3] = 1 }), wire.StatusBadReserved},
		{"errno set in request", mutate(func(b []byte) { binary.BigEndian.PutUint32(b[8:], 17) }), wire.StatusBadReserved},
		{"host bits", mutate(func(b []byte) { b[15] = 1 }), wire.StatusBadPrefix},
		{"prefix length 33", mutate(func(b []byte) { b[16] = 33 }), wire.StatusBadPrefix},
		{"garbage after name", mutate(func(b []byte) { b[30] = 'x' }), wire.StatusBadName},
		{"name without NUL", mutate(func(b []byte) { copy(b[20:], "vxlan100vxlan100") }), wire.StatusBadName},
	}
	c := dialHelper(t, sock)
	for _, tc := range stayOpen {
		recs, err := exchange(c, tc.msg)
		if err != nil || len(recs) != 1 || recs[0].Status != tc.status {
			t.Fatalf("%s: got %+v, %v; want status %v and the connection open", tc.name, recs, err, tc.status)
		}
	}
	want(t, call(t, c, wire.Record{Op: wire.OpHello}), wire.StatusOK, wire.ResultNone)

	for _, tc := range []struct {
		name   string
		msg    []byte
		status wire.Status
	}{
		{"short", good[:wire.Size-1], wire.StatusBadSize},
		{"long", append(append([]byte(nil), good...), 0), wire.StatusBadSize},
		{"huge", make([]byte, 4096), wire.StatusBadSize},
		{"version 2", mutate(func(b []byte) { b[0] = 2 }), wire.StatusBadVersion},
		{"version 0", mutate(func(b []byte) { b[0] = 0 }), wire.StatusBadVersion},
	} {
		c := dialHelper(t, sock)
		recs, err := exchange(c, tc.msg)
		if err != nil || len(recs) != 1 || recs[0].Status != tc.status {
			t.Fatalf("%s: got %+v, %v; want status %v", tc.name, recs, err, tc.status)
		}
		assertClosed(t, c)
	}
	if got := routes(t, ns, "proto", "81"); got != "" {
		t.Fatalf("malformed requests created routes:\n%s", got)
	}
}

// TestHelperPeerCredentials: a client under a uid not on the allow list is
// refused (and logged with its pid, uid and gid); an allowed one is served.
func TestHelperPeerCredentials(t *testing.T) {
	ns := newNetns(t, "vxlan100")
	const allowed, other = 65533, nobody
	h, sock := startHelper(t, ns, allowed)
	os.Chmod(filepath.Dir(sock), 0o755)
	os.Chown(sock, nobody, allowed) // group access for the allowed uid, as systemd's SocketGroup does
	hello := func(uid int) int {
		cmd := exec.Command("setpriv", append(unprivileged(uid)[1:], filepath.Join(binDir, "e2e.test"))...)
		cmd.Env = append(os.Environ(), "QUILT_E2E_CHILD=hello:"+sock)
		out, err := cmd.CombinedOutput()
		if exit, ok := err.(*exec.ExitError); ok {
			t.Logf("child uid %d: exit %d %s", uid, exit.ExitCode(), out)
			return exit.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return childOK
	}
	if got := hello(allowed); got != childOK {
		t.Fatalf("allowed uid %d: child exit %d, want served", allowed, got)
	}
	if got := hello(other); got != childRefused {
		t.Fatalf("uid %d not on the allow list: child exit %d, want refused", other, got)
	}
	// The test's own uid (root) is not on the list either.
	c := dialHelper(t, sock)
	if _, err := exchange(c, wire.Record{Op: wire.OpHello}.Encode()); err == nil {
		t.Fatal("root was served though not on the allow list")
	}
	waitFor(t, h, func() bool {
		return strings.Contains(h.Output(), fmt.Sprintf("uid not allowed\" peer.pid=")) &&
			strings.Contains(h.Output(), fmt.Sprintf("peer.uid=%d peer.gid=%d", other, other))
	})
}

// TestHelperCapabilities: the helper keeps CAP_NET_ADMIN alone on every
// thread with no_new_privs; it refuses to start without CAP_NET_ADMIN; and
// without that capability the kernel answers a route add with EPERM.
func TestHelperCapabilities(t *testing.T) {
	ns := newNetns(t, "vxlan100")

	// Started as full root with --user: drops to nobody and CAP_NET_ADMIN.
	sock := filepath.Join(socketDir(t, 0), "root.sock")
	h := start(t, ns, nil, filepath.Join(binDir, "quilt-route-helper"), "--socket", sock, "--allow-uid", "0", "--user", "nobody")
	waitFor(t, h, func() bool { _, err := os.Stat(sock); return err == nil })
	c := dialHelper(t, sock)
	// An answer means Serve runs, which starts only after the drop.
	want(t, call(t, c, wire.Record{Op: wire.OpHello}), wire.StatusOK, wire.ResultNone)
	checkProcStatus(t, h.cmd.Process.Pid, nobody)
	want(t, call(t, c, add("10.42.2.0/24", "vxlan100")), wire.StatusOK, wire.ResultCreated)

	// Started with only CAP_NET_ADMIN (the systemd way).
	h2, sock2 := startHelper(t, ns, 0)
	want(t, call(t, dialHelper(t, sock2), wire.Record{Op: wire.OpHello}), wire.StatusOK, wire.ResultNone)
	checkProcStatus(t, h2.cmd.Process.Pid, nobody)

	// Without CAP_NET_ADMIN: refuses to start, and says why.
	p := start(t, ns, unprivileged(nobody), filepath.Join(binDir, "quilt-route-helper"), "--socket", filepath.Join(socketDir(t, nobody), "x.sock"), "--allow-uid", "0")
	if err := p.wait(t, 10e9); err == nil || !strings.Contains(p.Output(), "CAP_NET_ADMIN is required") {
		t.Fatalf("helper without CAP_NET_ADMIN: exit %v, output %q", err, p.Output())
	}

	// And the kernel's own answer without it is EPERM.
	cmd := exec.Command("ip", append(append([]string{"netns", "exec", ns}, unprivileged(nobody)...), filepath.Join(binDir, "e2e.test"))...)
	cmd.Env = append(os.Environ(), "QUILT_E2E_CHILD=netlink-add:10.42.7.0/24:vxlan100")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("unprivileged netlink add: %v %s", err, out)
	}
}

// checkProcStatus reads /proc for every thread of pid: uid, only
// CAP_NET_ADMIN in each set that may hold it, and no_new_privs.
func checkProcStatus(t *testing.T, pid, uid int) {
	t.Helper()
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	if len(tasks) == 0 {
		t.Fatalf("no threads for pid %d", pid)
	}
	netAdmin := fmt.Sprintf("%016x", uint64(1)<<unix.CAP_NET_ADMIN)
	for _, f := range tasks {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		status := string(b)
		for line, exp := range map[string]string{
			"Uid": fmt.Sprintf("%d\t%d\t%d\t%d", uid, uid, uid, uid), "CapInh": "0000000000000000",
			"CapPrm": netAdmin, "CapEff": netAdmin, "CapBnd": netAdmin, "CapAmb": "0000000000000000", "NoNewPrivs": "1",
		} {
			if !strings.Contains(status, "\n"+line+":\t"+exp+"\n") {
				t.Errorf("%s: want %s:\t%s in\n%s", f, line, exp, status)
			}
		}
	}
}

// TestHelperSocketActivation hands the helper a listening socket the way
// systemd does (LISTEN_PID, LISTEN_FDS, fd 3) and uses it.
func TestHelperSocketActivation(t *testing.T) {
	ns := newNetns(t, "vxlan100")
	sock := filepath.Join(socketDir(t, 0), "activated.sock")
	l, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: sock, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	f, err := l.File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// sh sets LISTEN_PID to its own pid, then execs the helper in its place.
	args := append([]string{"netns", "exec", ns}, onlyNetAdmin(nobody)...)
	args = append(args, "sh", "-c", `LISTEN_PID=$$ LISTEN_FDS=1 exec "$@"`, "sh",
		filepath.Join(binDir, "quilt-route-helper"), "--socket", "/nonexistent/ignored.sock", "--allow-uid", "0")
	cmd := exec.Command("ip", args...)
	cmd.ExtraFiles = []*os.File{f}
	startCmd(t, cmd)
	c := dialHelper(t, sock)
	want(t, call(t, c, add("10.42.2.0/24", "vxlan100")), wire.StatusOK, wire.ResultCreated)
	if got := routes(t, ns, "proto", "81"); got != "10.42.2.0/24 dev vxlan100 scope link \n" {
		t.Fatalf("routes: %q", got)
	}

	// A stream socket is refused: the protocol needs message boundaries.
	stream, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock + ".stream", Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	sf, _ := stream.File()
	defer sf.Close()
	cmd = exec.Command("ip", args...)
	cmd.ExtraFiles = []*os.File{sf}
	p := startCmd(t, cmd)
	if err := p.wait(t, 10e9); err == nil || !strings.Contains(p.Output(), "SOCK_SEQPACKET") {
		t.Fatalf("stream socket: exit %v, output %q", err, p.Output())
	}
}
