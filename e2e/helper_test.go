package e2e

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/quiltmesh/quilt-runtime/internal/testutil"
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
	h, sock := startHelper(t, ns, os.Getuid(), "--allowed-interface", "vxlan100", "--allowed-interface", "vxlan200")
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
	// Present, ours, other interface: moved (added beside, then the old deleted).
	want(t, call(t, c, add("10.42.2.0/24", "vxlan200")), wire.StatusOK, wire.ResultMoved)
	if got, exp := ours(), "10.42.2.0/24 dev vxlan200 scope link \n"; got != exp {
		t.Fatalf("after the move, our routes:\n%s\nwant:\n%s", got, exp)
	}

	// Foreign routes: one exactly like ours but static, one with a metric.
	testutil.Run(t, "ip", "-n", ns, "route", "add", "10.42.5.0/24", "dev", "vxlan100", "proto", "static")
	testutil.Run(t, "ip", "-n", ns, "route", "add", "10.42.6.0/24", "dev", "vxlan100", "metric", "50")
	before := routes(t, ns)
	want(t, call(t, c, add("10.42.5.0/24", "vxlan100")), wire.StatusConflict, wire.ResultNone)
	want(t, call(t, c, add("10.42.5.0/24", "vxlan200")), wire.StatusConflict, wire.ResultNone)
	want(t, call(t, c, add("10.42.6.0/24", "vxlan100")), wire.StatusConflict, wire.ResultNone)
	want(t, call(t, c, del("10.42.5.0/24")), wire.StatusNotOwned, wire.ResultNone)
	want(t, call(t, c, del("10.42.6.0/24")), wire.StatusNotOwned, wire.ResultNone)
	if after := routes(t, ns); after != before {
		t.Fatalf("refused requests changed the table:\nbefore:\n%s\nafter:\n%s", before, after)
	}

	// Routes that cannot route: a covering unreachable route (as a host
	// might keep for the whole cluster) leaves /24s free for ours; one for
	// exactly a prefix is a route that is not ours there (conflict); and
	// our route beneath the covering one is found and removed.
	testutil.Run(t, "ip", "-n", ns, "route", "add", "unreachable", "10.42.0.0/16")
	testutil.Run(t, "ip", "-n", ns, "route", "add", "blackhole", "10.42.8.0/24")
	want(t, call(t, c, add("10.42.7.0/24", "vxlan100")), wire.StatusOK, wire.ResultCreated)
	want(t, call(t, c, add("10.42.8.0/24", "vxlan100")), wire.StatusConflict, wire.ResultNone)
	want(t, call(t, c, add("10.42.7.0/24", "vxlan100")), wire.StatusOK, wire.ResultUnchanged)
	want(t, call(t, c, del("10.42.7.0/24")), wire.StatusOK, wire.ResultDeleted)
	want(t, call(t, c, del("10.42.7.0/24")), wire.StatusOK, wire.ResultAbsent)
	if got := routes(t, ns, "type", "unreachable") + routes(t, ns, "type", "blackhole"); got != "unreachable 10.42.0.0/16 \nblackhole 10.42.8.0/24 \n" {
		t.Fatalf("the routes that cannot route changed: %q", got)
	}
	testutil.Run(t, "ip", "-n", ns, "route", "del", "unreachable", "10.42.0.0/16")
	testutil.Run(t, "ip", "-n", ns, "route", "del", "blackhole", "10.42.8.0/24")

	// List: ours only.
	want(t, call(t, c, add("10.42.3.0/24", "vxlan100")), wire.StatusOK, wire.ResultCreated)
	recs, err := exchange(c, wire.Record{Op: wire.OpList, Tag: 77}.Append(nil))
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
	slices.Sort(listed) // in no order the protocol promises: the helper's view is a map
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

	// The audit log: every kernel change and every refusal, with the
	// peer; nothing for the requests that found everything as asked. A
	// last refusal marks the end of the log.
	want(t, call(t, c, add("10.43.2.0/24", "vxlan100")), wire.StatusOutsideCluster, wire.ResultNone)
	waitFor(t, h, func() bool { return strings.Contains(h.Output(), "add 10.43.2.0/24 ") })
	peer := fmt.Sprintf("uid %d", os.Getuid())
	audit := strings.Join([]string{
		"add 10.42.2.0/24 vxlan100 created ok 0", "add 10.42.2.0/24 vxlan200 moved ok 0",
		"add 10.42.5.0/24 vxlan100 none conflict 0", "add 10.42.5.0/24 vxlan200 none conflict 0", "add 10.42.6.0/24 vxlan100 none conflict 0",
		`delete 10.42.5.0/24 "" none not-owned 0`, `delete 10.42.6.0/24 "" none not-owned 0`,
		"add 10.42.7.0/24 vxlan100 created ok 0", "add 10.42.8.0/24 vxlan100 none conflict 0", `delete 10.42.7.0/24 "" deleted ok 0`,
		"add 10.42.3.0/24 vxlan100 created ok 0", `delete 10.42.2.0/24 "" deleted ok 0`, "add 10.43.2.0/24 vxlan100 none outside-cluster 0",
	}, "\n")
	if got := strings.Join(auditLines(h.Output(), peer), "\n"); got != audit {
		t.Errorf("audit log (op dst dev result status errno):\n%s\nwant:\n%s", got, audit)
	}
}

// auditRe matches one line of the helper's audit log, and entryRe one
// entry of its records.
var (
	auditRe = regexp.MustCompile(`msg="route requests" peer\.pid=\d+ peer\.uid=(\d+) peer\.gid=\d+ records="([^"]*)"`)
	entryRe = regexp.MustCompile(`^(\S+) (\S+) dev=(\S*) result=(\S+) status=(\S+) errno=(\d+)$`)
)

// auditLines returns the audit log's entries as "op dst dev result status
// errno" (dev "" when none), each checked to name the peer ("uid N").
func auditLines(out, peer string) []string {
	var lines []string
	for _, m := range auditRe.FindAllStringSubmatch(out, -1) {
		for entry := range strings.SplitSeq(m[2], ", ") {
			e := entryRe.FindStringSubmatch(entry)
			if e == nil {
				lines = append(lines, "unreadable entry "+entry)
				continue
			}
			dev := e[3]
			if dev == "" {
				dev = `""`
			}
			line := strings.Join([]string{e[1], e[2], dev, e[4], e[5], e[6]}, " ")
			if "uid "+m[1] != peer {
				line += " from uid " + m[1]
			}
			lines = append(lines, line)
		}
	}
	return lines
}

// TestHelperPolicy sends requests straight to the helper's socket that a
// compromised frontend might send: the helper refuses each and the kernel
// table stays exactly as it was.
func TestHelperPolicy(t *testing.T) {
	ns := newNetns(t, "vxlan100", "vxlan200")
	testutil.Run(t, "ip", "-n", ns, "link", "add", "vxlan300", "type", "vxlan", "id", "300", "dstport", "4789")
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
	good := add("10.42.2.0/24", "vxlan100").Append(nil)
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
		{"version 1", mutate(func(b []byte) { b[0] = 1 }), wire.StatusBadVersion},
		{"version 3", mutate(func(b []byte) { b[0] = 3 }), wire.StatusBadVersion},
		{"version 0", mutate(func(b []byte) { b[0] = 0 }), wire.StatusBadVersion},
		// A batch whose later record has another version: its earlier,
		// valid records are not carried out either.
		{"version 1 after a valid add", append(append([]byte(nil), good...), mutate(func(b []byte) { b[0] = 1 })...), wire.StatusBadVersion},
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
	if _, err := exchange(c, wire.Record{Op: wire.OpHello}.Append(nil)); err == nil {
		t.Fatal("root was served though not on the allow list")
	}
	waitFor(t, h, func() bool {
		return strings.Contains(h.Output(), fmt.Sprintf("uid not allowed\" peer.pid=")) &&
			strings.Contains(h.Output(), fmt.Sprintf("peer.uid=%d peer.gid=%d", other, other))
	})
}

// TestHelperCapabilities: the helper runs only with CAP_NET_ADMIN as its
// one capability, as a user other than root, with no_new_privs, on every
// thread; started any other way it refuses, and says what it found; and
// without that capability the kernel answers a route add with EPERM.
func TestHelperCapabilities(t *testing.T) {
	ns := newNetns(t, "vxlan100")

	// Started with only CAP_NET_ADMIN (the systemd way).
	h, sock := startHelper(t, ns, 0)
	c := dialHelper(t, sock)
	want(t, call(t, c, wire.Record{Op: wire.OpHello}), wire.StatusOK, wire.ResultNone)
	checkProcStatus(t, h.Pid(), nobody)
	want(t, call(t, c, add("10.42.2.0/24", "vxlan100")), wire.StatusOK, wire.ResultCreated)

	// Any more than that fails closed, naming the field of /proc/self/status
	// that is wrong: full root; root's uid or gid with only CAP_NET_ADMIN;
	// supplementary groups (root, disk, shadow); another capability beside
	// it; a wider bounding set; no no_new_privs; and no CAP_NET_ADMIN.
	bin := filepath.Join(binDir, "quilt-route-helper")
	caps := []string{"--inh-caps=-all,+net_admin", "--ambient-caps=-all,+net_admin", "--bounding-set=-all,+net_admin"}
	asNobody := []string{"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"}
	for _, tc := range []struct {
		name, field string
		setpriv     []string
	}{
		{"full root", `Uid is "0\t0\t0\t0"`, nil},
		{"uid 0", `Uid is "0\t0\t0\t0"`, slices.Concat([]string{"setpriv"}, caps, []string{"--no-new-privs", "--"})},
		{"gid 0", `Gid is "0\t0\t0\t0"`, slices.Concat([]string{"setpriv", "--reuid=65534", "--regid=0", "--clear-groups"}, caps, []string{"--no-new-privs", "--"})},
		{"supplementary groups", `Groups is "0 6 42"`, slices.Concat([]string{"setpriv", "--reuid=65534", "--regid=65534", "--groups=0,6,42"}, caps, []string{"--no-new-privs", "--"})},
		{"CAP_NET_RAW beside", `CapPrm is "0000000000003000"`, slices.Concat(asNobody, []string{"--inh-caps=-all,+net_admin,+net_raw", "--ambient-caps=-all,+net_admin,+net_raw", "--bounding-set=-all,+net_admin,+net_raw", "--no-new-privs", "--"})},
		{"bounding set wider", `CapBnd is "0000000000201000"`, slices.Concat(asNobody, []string{"--inh-caps=-all,+net_admin", "--ambient-caps=-all,+net_admin", "--bounding-set=-all,+net_admin,+sys_admin", "--no-new-privs", "--"})},
		{"no no_new_privs", `NoNewPrivs is "0"`, slices.Concat(asNobody, caps, []string{"--"})},
		{"no CAP_NET_ADMIN", `CapEff is "0000000000000000"`, unprivileged(nobody)},
	} {
		sock := filepath.Join(socketDir(t, nobody), "refused.sock")
		p := start(t, ns, tc.setpriv, bin, "--socket", sock, "--allow-uid", "0")
		err := p.ExitStatus(t, 10e9)
		if err == nil || !strings.Contains(p.Output(), "refusing to run with more privileges than CAP_NET_ADMIN") || !strings.Contains(p.Output(), tc.field) {
			t.Errorf("%s: exit %v, output %q; want it refused, naming %s", tc.name, err, p.Output(), tc.field)
		}
		if _, err := os.Stat(sock); err == nil {
			t.Errorf("%s: the socket was made before the check", tc.name)
		}
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
			"Uid": fmt.Sprintf("%d\t%d\t%d\t%d", uid, uid, uid, uid), "CapInh": netAdmin,
			"CapPrm": netAdmin, "CapEff": netAdmin, "CapBnd": netAdmin, "CapAmb": netAdmin, "NoNewPrivs": "1",
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
	testutil.StartTest(t, cmd)
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
	p := testutil.StartTest(t, cmd)
	if err := p.ExitStatus(t, 10e9); err == nil || !strings.Contains(p.Output(), "SOCK_SEQPACKET") {
		t.Fatalf("stream socket: exit %v, output %q", err, p.Output())
	}
}

// TestHelperBatch: one message of 256 requests, valid and not, against the
// real kernel: each answered in its place, in one message; a list of more
// than 256 routes comes in several messages; 257 records break framing.
func TestHelperBatch(t *testing.T) {
	ns := newNetns(t, "vxlan100")
	h, sock := startHelper(t, ns, os.Getuid(), "--cluster-cidr", "10.40.0.0/14")
	c := dialHelper(t, sock)
	testutil.Run(t, "ip", "-n", ns, "route", "add", "10.40.7.0/24", "dev", "vxlan100", "proto", "static")
	at := func(b, c byte) netip.Prefix { return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, b, c, 0}), 24) }
	for i := range 6 { // ours before the batch, for its deletes
		want(t, call(t, c, wire.Record{Op: wire.OpAdd, Tag: 1, Dst: at(41, byte(i)), Ifname: "vxlan100"}), wire.StatusOK, wire.ResultCreated)
	}
	before := routes(t, ns, "proto", "static")
	var msg []byte
	var reqs []wire.Record
	for i := range wire.MaxBatch {
		r := wire.Record{Op: wire.OpAdd, Tag: uint32(1000 + i), Dst: at(40, byte(i)), Ifname: "vxlan100"}
		switch {
		case i == 200:
			r.Dst = netip.MustParsePrefix("10.44.0.0/24") // outside the cluster
		case i == 201:
			r.Ifname = "eth0" // not allowed
		case i >= 250:
			r = wire.Record{Op: wire.OpDelete, Tag: uint32(1000 + i), Dst: at(41, byte(i-250))}
		}
		reqs, msg = append(reqs, r), r.Append(msg)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, wire.MaxBatch*wire.Size+1)
	n, err := c.Read(buf)
	if err != nil || n != wire.MaxBatch*wire.Size {
		t.Fatalf("answer: %d bytes, %v; want one message of %d records", n, err, wire.MaxBatch)
	}
	// Each request's answer, in its place.
	type answer struct {
		Tag    uint32
		Status wire.Status
		Result wire.Result
	}
	var want, got []answer
	for i, req := range reqs {
		a := answer{Tag: req.Tag, Status: wire.StatusOK, Result: wire.ResultCreated}
		switch {
		case i == 7: // 10.40.7.0/24 is the static route's
			a.Status, a.Result = wire.StatusConflict, 0
		case i == 200:
			a.Status, a.Result = wire.StatusOutsideCluster, 0
		case i == 201:
			a.Status, a.Result = wire.StatusIfaceDenied, 0
		case req.Op == wire.OpDelete:
			a.Result = wire.ResultDeleted
		}
		want = append(want, a)
		r, err := wire.Decode(buf[i*wire.Size : (i+1)*wire.Size])
		if err != nil {
			t.Fatalf("record %d of the answer: %v", i, err)
		}
		got = append(got, answer{Tag: r.Tag, Status: r.Status, Result: r.Result})
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("the batch's answers (-want +got):\n%s", diff)
	}
	if got := strings.Count(routes(t, ns, "proto", "81"), "\n"); got != 250-3 {
		t.Errorf("%d routes of ours after the batch, want 247", got)
	}
	if after := routes(t, ns, "proto", "static"); after != before {
		t.Errorf("the foreign route changed: %q, was %q", after, before)
	}
	// The audit log gives the batch one line, with an entry for each
	// record: journald's rate limit must not drop a batch's entries.
	waitFor(t, h, func() bool { return strings.Contains(h.Output(), "delete 10.41.5.0/24 ") })
	var batchLines []string
	for line := range strings.Lines(h.Output()) {
		if strings.Contains(line, "add 10.40.0.0/24 ") {
			batchLines = append(batchLines, line)
		}
	}
	if len(batchLines) != 1 || len(auditLines(batchLines[0], "")) != wire.MaxBatch {
		t.Errorf("the batch's audit: %d lines, want one with %d entries:\n%s", len(batchLines), wire.MaxBatch, batchLines)
	}
	// A malformed first record is answered, and the records after it are
	// still carried out.
	bad := wire.Record{Op: wire.OpAdd, Tag: 5, Dst: at(41, 20), Ifname: "vxlan100"}.Append(nil)
	bad[17] = 1 // a reserved byte
	recs, err := exchange(c, wire.Record{Op: wire.OpAdd, Tag: 6, Dst: at(41, 21), Ifname: "vxlan100"}.Append(bad))
	if err != nil || len(recs) != 2 || recs[0].Status != wire.StatusBadReserved || recs[1].Result != wire.ResultCreated {
		t.Fatalf("a malformed record, then a good one: %+v %v; want bad-reserved, then created", recs, err)
	}
	if got := routes(t, ns, "proto", "81"); !strings.Contains(got, "10.41.21.0/24 dev vxlan100") {
		t.Fatalf("the good record's route is not there:\n%s", got)
	}
	// More than 256 routes of ours: the list comes in several messages.
	var more []byte
	for i := range 60 {
		more = wire.Record{Op: wire.OpAdd, Tag: 9, Dst: at(42, byte(i)), Ifname: "vxlan100"}.Append(more)
	}
	if recs, err := exchange(c, more); err != nil || len(recs) != 60 {
		t.Fatalf("60 more: %d answers, %v", len(recs), err)
	}
	recs, err = exchange(c, wire.Record{Op: wire.OpList, Tag: 77}.Append(nil))
	if err != nil || len(recs) != 308+1 || recs[308].Result != wire.ResultDone {
		t.Fatalf("list: %d records (want 308 routes and done), %v", len(recs), err)
	}
	// 257 records: framing broken, answered bad-size, closed.
	recs, err = exchange(c, append(msg, msg[:wire.Size]...))
	if err != nil || len(recs) != 1 || recs[0].Status != wire.StatusBadSize {
		t.Fatalf("257 records: %+v %v", recs, err)
	}
	assertClosed(t, c)
}
