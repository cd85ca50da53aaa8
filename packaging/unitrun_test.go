package packaging_test

import (
	"github.com/quiltmesh/quilt-runtime/internal/netns"
	"github.com/quiltmesh/quilt-runtime/internal/sdnotify"

	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/quiltmesh/quilt-runtime/internal/testutil"
	"github.com/quiltmesh/quilt-runtime/proto/quiltpb"
)

// fdName is the name systemd gives a socket unit's descriptors in
// LISTEN_FDNAMES: FileDescriptorName=, or else the unit's own name.
func fdName(s *unitFile) string {
	if name := s.value("Socket", "FileDescriptorName"); name != "" {
		return name
	}
	return s.name
}

// testIDs stand for the units' users and groups on the test host, where
// the sysusers.d names need not exist. Each user's group has its uid.
var testIDs = map[string]int{"root": 0, "quilt-route-helper": 64501, "quilt-runtime": 64502, "quilt-route": 64503, "quilt-cni": 64504}

// nobody has neither the frontend's uid nor the socket's group.
const nobody = 65534

func testID(t *testing.T, name string) int {
	t.Helper()
	id, ok := testIDs[name]
	if !ok {
		t.Fatalf("the units name user or group %q: give it a test id in testIDs", name)
	}
	return id
}

// setprivArgs turns a service's identity, capability and no_new_privs
// settings into setpriv options, as systemd would apply them.
func setprivArgs(t *testing.T, u *unitFile) []string {
	t.Helper()
	args := []string{"setpriv",
		"--reuid=" + strconv.Itoa(testID(t, u.value("Service", "User"))),
		"--regid=" + strconv.Itoa(testID(t, u.value("Service", "Group")))}
	if groups := u.list("Service", "SupplementaryGroups"); len(groups) > 0 {
		var ids []string
		for _, g := range groups {
			ids = append(ids, strconv.Itoa(testID(t, g)))
		}
		args = append(args, "--groups="+strings.Join(ids, ","))
	} else {
		args = append(args, "--clear-groups")
	}
	caps := func(key string) string {
		s := "-all"
		for _, c := range u.list("Service", key) {
			s += ",+" + strings.ToLower(strings.TrimPrefix(c, "CAP_"))
		}
		return s
	}
	args = append(args, "--bounding-set="+caps("CapabilityBoundingSet"), "--inh-caps="+caps("AmbientCapabilities"))
	if len(u.list("Service", "AmbientCapabilities")) > 0 {
		args = append(args, "--ambient-caps="+caps("AmbientCapabilities"))
	}
	if u.value("Service", "NoNewPrivileges") == "yes" {
		args = append(args, "--no-new-privs")
	}
	return append(args, "--")
}

// startService starts a unit's ExecStart= in network namespace ns the way
// systemd would: its environment (the EnvironmentFile= plus overrides, and
// nothing of the test's own), its user, groups and capabilities, its UMask,
// for a socket-activated service the listening socket as fd 3 with
// LISTEN_FDNAMES the socket's name, and LISTEN_PID and (with WATCHDOG_USEC
// in env) WATCHDOG_PID set to the service's own pid (sh, ip netns exec and
// setpriv all exec in place, so the pid is the service's).
func startService(t *testing.T, ns string, u *unitFile, env map[string]string, listenFile *os.File, socketName string) *testutil.Proc {
	t.Helper()
	argv, err := execArgv(u.value("Service", "ExecStart"), env)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i < len(argv); i++ { // user names become the test ids
		if id, ok := testIDs[argv[i]]; ok && strings.HasSuffix(argv[i-1], "-uid") {
			argv[i] = strconv.Itoa(id)
		}
	}
	script := "umask " + u.value("Service", "UMask") + "; "
	if listenFile != nil {
		script += "export LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=" + socketName + "; "
	}
	if env["WATCHDOG_USEC"] != "" {
		script += "export WATCHDOG_PID=$$; "
	}
	args := append([]string{"-c", script + `exec "$@"`, "sh", "ip", "netns", "exec", ns}, setprivArgs(t, u)...)
	env0 := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	if spec := unitFilter(t, u); spec != nil {
		// The unit's seccomp filter, installed last, as systemd does.
		args = append(args, filepath.Join(binDir, "packaging.test"))
		env0 = append(env0, "QUILT_PACKAGING_CHILD=seccomp:"+writeFilter(t, spec, binDir, u.name))
	}
	args = append(append(args, filepath.Join(binDir, filepath.Base(argv[0]))), argv[1:]...)
	cmd := exec.Command("sh", args...)
	cmd.Env = env0
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	if listenFile != nil {
		cmd.ExtraFiles = []*os.File{listenFile}
	}
	p := testutil.StartTest(t, cmd) // which shows its output if the test fails
	t.Cleanup(func() {
		if testing.Verbose() && !t.Failed() {
			t.Logf("%s output:\n%s", u.name, p.Output())
		}
	})
	return p
}

// waitFor polls cond for up to 15s, failing early if p exits.
func waitFor(t *testing.T, p *testutil.Proc, what string, cond func() bool) {
	t.Helper()
	if err := testutil.Until(context.Background(), 15*time.Second, p, cond); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

// listenLikeSocketUnit creates the socket as the .socket unit describes it
// (SOCK_SEQPACKET, SocketUser, SocketGroup, SocketMode) at path.
func listenLikeSocketUnit(t *testing.T, s *unitFile, path string) *os.File {
	t.Helper()
	if s.value("Socket", "ListenSequentialPacket") == "" {
		t.Fatalf("%s: no ListenSequentialPacket=", s.name)
	}
	l, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	mode, err := strconv.ParseUint(s.value("Socket", "SocketMode"), 8, 32)
	if err == nil {
		err = os.Chown(path, testID(t, s.value("Socket", "SocketUser")), testID(t, s.value("Socket", "SocketGroup")))
	}
	if err == nil {
		err = os.Chmod(path, os.FileMode(mode))
	}
	if err != nil {
		t.Fatal(err)
	}
	f, err := l.File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// newNetns makes a named network namespace with lo up and vxlan100,
// removed when the test ends.
func newNetns(t *testing.T) string {
	t.Helper()
	ns := testutil.Netns(t, "quilt-pkg")
	testutil.Run(t, "ip", "-n", ns, "link", "add", "vxlan100", "type", "vxlan", "id", "100", "dstport", "4789")
	testutil.Run(t, "ip", "-n", ns, "link", "set", "vxlan100", "up")
	return ns
}

// TestUnitsRun starts both services with the settings parsed from the
// shipped units and configuration, the helper through socket activation,
// in a throwaway network namespace with vxlan100, and runs the agent's
// call sequence against the frontend with a real gRPC client. Two paths
// are moved into a temporary directory so the host is untouched: the
// socket (the unit's /run/quilt/route-helper.sock) and the state directory
// (/var/lib/quilt-runtime); the test checks the configuration names those
// same paths for the frontend first.
func TestUnitsRun(t *testing.T) {
	requireRoot(t)
	requireTool(t, "ip", "setpriv")
	h, f, s := loadUnit(t, helperUnit), loadUnit(t, frontendUnit), loadUnit(t, socketUnit)
	env, err := parseEnvFile("default/quilt-runtime")
	if err != nil {
		t.Fatal(err)
	}
	if env["QUILT_HELPER_SOCKET"] != s.value("Socket", "ListenSequentialPacket") || env["QUILT_STATE_DIR"] != "/var/lib/"+f.value("Service", "StateDirectory") {
		t.Fatal("the configuration's socket or state directory is not the units': see TestPackagingConsistency")
	}
	ns := newNetns(t)

	dir, err := os.MkdirTemp("", "quilt-pkg-run-") // 0755, as tmpfiles.d makes /run/quilt
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	sock := filepath.Join(dir, filepath.Base(s.value("Socket", "ListenSequentialPacket")))
	listener := listenLikeSocketUnit(t, s, sock)
	state := filepath.Join(dir, "state") // as StateDirectory= makes it
	if err := os.Mkdir(state, 0o700); err != nil {
		t.Fatal(err)
	}
	os.Chown(state, testID(t, f.value("Service", "User")), testID(t, f.value("Service", "Group")))

	helper := startService(t, ns, h, env, listener, fdName(s))
	waitFor(t, helper, "the helper to serve", func() bool { return strings.Contains(helper.Output(), "route helper serving") })
	if !strings.Contains(helper.Output(), "socket="+sock) {
		t.Fatalf("the helper did not serve the socket it was handed:\n%s", helper.Output())
	}

	feEnv := map[string]string{}
	for k, v := range env {
		feEnv[k] = v
	}
	feEnv["QUILT_HELPER_SOCKET"], feEnv["QUILT_STATE_DIR"] = sock, state
	// Its Unix socket's directory, as tmpfiles.d makes /run/quilt-runtime:
	// 2750, the frontend's, setgid quilt-cni.
	tcpAddr, unixAddr, _ := strings.Cut(env["QUILT_GRPC_ADDR"], ",")
	apiDir := filepath.Join(dir, "api")
	apiSock := filepath.Join(apiDir, filepath.Base(unixAddr))
	if filepath.Dir(strings.TrimPrefix(unixAddr, "unix://")) != f.value("Service", "ReadWritePaths") {
		t.Fatalf("QUILT_GRPC_ADDR %q: the Unix socket is not in ReadWritePaths=: see TestPackagingConsistency", env["QUILT_GRPC_ADDR"])
	}
	if err := os.Mkdir(apiDir, 0o750); err != nil {
		t.Fatal(err)
	}
	os.Chown(apiDir, testID(t, f.value("Service", "User")), testID(t, "quilt-cni"))
	if err := unix.Chmod(apiDir, 0o2750); err != nil { // os.Chmod would drop the setgid bit written as 0o2000
		t.Fatal(err)
	}
	feEnv["QUILT_GRPC_ADDR"] = tcpAddr + ",unix://" + apiSock
	// quilt-runtime.socket: the gRPC TCP address, made by "systemd" (the
	// test) in the namespace, passed as fd 3 under its FileDescriptorName=;
	// the frontend listens on its Unix socket itself.
	g := loadUnit(t, grpcUnit)
	if got := g.value("Socket", "ListenStream"); got != tcpAddr {
		t.Fatalf("%s listens on %q, QUILT_GRPC_ADDR's TCP address is %q: see TestPackagingConsistency", grpcUnit, got, tcpAddr)
	}
	gl, err := netns.Listen(ns, g.value("Socket", "ListenStream"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gl.Close() })
	grpcFile, err := gl.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { grpcFile.Close() })
	// Type=notify: NOTIFY_SOCKET, and WATCHDOG_USEC from WatchdogSec=.
	notify, err := sdnotify.Listen(filepath.Join(dir, "notify"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { notify.Close() })
	watchdog, err := time.ParseDuration(f.value("Service", "WatchdogSec"))
	if err != nil {
		t.Fatal(err)
	}
	feEnv["NOTIFY_SOCKET"], feEnv["WATCHDOG_USEC"] = notify.Path, strconv.FormatInt(watchdog.Microseconds(), 10)
	fe := startService(t, ns, f, feEnv, grpcFile, fdName(g))
	waitFor(t, fe, "READY=1", func() bool { return len(notify.With("READY=1")) > 0 })
	ready := notify.With("READY=1")[0]
	if int(ready.Pid) != fe.Pid() || !strings.Contains(ready.Status(), "serving gRPC on "+tcpAddr+", "+apiSock) || !strings.Contains(ready.Status(), "in sync") {
		t.Errorf("READY=1 from pid %d (main pid %d) with STATUS=%q; want the main pid, serving the configured addresses, in sync", ready.Pid, fe.Pid(), ready.Status())
	}
	if !strings.Contains(fe.Output(), "socket=systemd") {
		t.Errorf("the frontend did not serve the socket quilt-runtime.socket passed:\n%s", fe.Output())
	}

	// The frontend listens on the configured loopback address, inside the
	// namespace: a real client dials it there.
	conn, err := grpc.NewClient("passthrough:///"+tcpAddr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) { return netns.Dial(ctx, ns, addr, 0) }))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	waitFor(t, fe, "the frontend to report SERVING", func() bool {
		r, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: "quilt.QuiltRuntime"})
		return err == nil && r.Status == healthpb.HealthCheckResponse_SERVING
	})

	// Both run as the units say, seen by the kernel.
	netAdmin := fmt.Sprintf("%016x", uint64(1)<<unix.CAP_NET_ADMIN)
	checkStatus(t, helper.Pid(), map[string]string{
		"Uid": ids(testID(t, "quilt-route-helper")), "Gid": ids(testID(t, "quilt-route-helper")), "Groups": "",
		"CapInh": netAdmin, "CapPrm": netAdmin, "CapEff": netAdmin, "CapBnd": netAdmin, "CapAmb": netAdmin, "NoNewPrivs": "1",
	})
	checkStatus(t, fe.Pid(), map[string]string{
		"Uid": ids(testID(t, "quilt-runtime")), "Gid": ids(testID(t, "quilt-runtime")), "Groups": strconv.Itoa(testID(t, "quilt-route")),
		"CapInh": zero, "CapPrm": zero, "CapEff": zero, "CapBnd": zero, "CapAmb": zero, "NoNewPrivs": "1",
	})

	// The agent's sequence.
	client := quiltpb.NewQuiltRuntimeClient(conn)
	ours := func() string {
		return testutil.Run(t, "ip", "-n", ns, "-4", "route", "show", "table", "main", "proto", "81")
	}
	r1, err := client.ConfigureNodeSubnet(ctx, &quiltpb.ConfigureNodeSubnetRequest{Subnet: "10.42.1.0/24"})
	if err != nil || !r1.Success {
		t.Fatalf("ConfigureNodeSubnet: %v, %v", r1, err)
	}
	r2, err := client.InjectRoute(ctx, &quiltpb.InjectRouteRequest{Destination: "10.42.2.0/24", ViaInterface: "vxlan100"})
	if err != nil || !r2.Success {
		t.Fatalf("InjectRoute: %v, %v", r2, err)
	}
	if got, want := ours(), "10.42.2.0/24 dev vxlan100 scope link \n"; got != want {
		t.Fatalf("after InjectRoute, routes of protocol 81: %q, want %q", got, want)
	}
	r3, err := client.RemoveRoute(ctx, &quiltpb.RemoveRouteRequest{Destination: "10.42.2.0/24"})
	if err != nil || !r3.Success {
		t.Fatalf("RemoveRoute: %v, %v", r3, err)
	}
	if got := ours(); got != "" {
		t.Fatalf("after RemoveRoute, routes of protocol 81: %q, want none", got)
	}
	// The helper served the frontend's uid, which --allow-uid admitted by name.
	if want := fmt.Sprintf("peer.uid=%d", testID(t, "quilt-runtime")); !strings.Contains(helper.Output(), want) {
		t.Errorf("helper log lacks %q", want)
	}

	// SocketGroup/SocketMode: a uid outside the group cannot even connect.
	cmd := exec.Command("setpriv", "--reuid="+strconv.Itoa(nobody), "--regid="+strconv.Itoa(nobody), "--clear-groups", "--", filepath.Join(binDir, "packaging.test"))
	cmd.Env = append(os.Environ(), "QUILT_PACKAGING_CHILD=dial:"+sock)
	if out, err := cmd.CombinedOutput(); err == nil || cmd.ProcessState.ExitCode() != childDenied {
		t.Errorf("uid %d outside group quilt-route dialing the socket: %v %s; want permission denied", nobody, err, out)
	}

	// Its Unix socket: its uid, the directory's group, 0660; served to root
	// (quilt-ipam as the container runtime runs it), refused to others.
	var st unix.Stat_t
	if err := unix.Stat(apiSock, &st); err != nil {
		t.Fatal(err)
	}
	type owned struct {
		UID, GID int
		Mode     string // the permission bits, setuid, setgid and sticky included
	}
	want := owned{UID: testID(t, "quilt-runtime"), GID: testID(t, "quilt-cni"), Mode: "0660"}
	if diff := cmp.Diff(want, owned{UID: int(st.Uid), GID: int(st.Gid), Mode: fmt.Sprintf("%04o", st.Mode&0o7777)}); diff != "" {
		t.Errorf("%s: want quilt-runtime's, group quilt-cni, 0660 (-want +got):\n%s", apiSock, diff)
	}
	uconn, err := grpc.NewClient("unix://"+apiSock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer uconn.Close()
	if st, err := quiltpb.NewQuiltAdminClient(uconn).GetStatus(ctx, &quiltpb.GetStatusRequest{}); err != nil || st.Subnet != "10.42.1.0/24" {
		t.Errorf("GetStatus over the Unix socket: %v %v", st, err)
	}
	cmd = exec.Command("setpriv", "--reuid="+strconv.Itoa(nobody), "--regid="+strconv.Itoa(nobody), "--clear-groups", "--", filepath.Join(binDir, "packaging.test"))
	cmd.Env = append(os.Environ(), "QUILT_PACKAGING_CHILD=dialstream:"+apiSock)
	if out, err := cmd.CombinedOutput(); err == nil || cmd.ProcessState.ExitCode() != childDenied {
		t.Errorf("uid %d outside group quilt-cni dialing the frontend's socket: %v %s; want permission denied", nobody, err, out)
	}

	// Whatever the frontend wrote in its state directory is its own, 0600.
	filepath.WalkDir(state, func(path string, d os.DirEntry, err error) error {
		if err != nil || path == state {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(path, &st); err != nil {
			t.Error(err)
			return nil
		}
		if int(st.Uid) != testID(t, "quilt-runtime") || st.Mode&0o077 != 0 {
			t.Errorf("%s: uid %d mode %o; want the frontend's, without group or other bits", path, st.Uid, st.Mode&0o7777)
		}
		t.Logf("state: %s mode %o", path, st.Mode&0o7777)
		return nil
	})
}

const zero = "0000000000000000"

// ids is the four-id form of /proc/PID/status Uid: and Gid: lines.
func ids(id int) string { return fmt.Sprintf("%d\t%d\t%d\t%d", id, id, id, id) }

// checkStatus checks /proc/PID/task/*/status lines on every thread.
func checkStatus(t *testing.T, pid int, want map[string]string) {
	t.Helper()
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	if len(tasks) == 0 {
		t.Fatalf("no threads for pid %d", pid)
	}
	for _, f := range tasks {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(string(b), "\n")
		for key, exp := range want {
			i := slices.IndexFunc(lines, func(l string) bool { return strings.HasPrefix(l, key+":") })
			if i < 0 || strings.TrimSpace(strings.TrimPrefix(lines[i], key+":")) != exp {
				t.Errorf("%s: want %s:\t%s in\n%s", f, key, exp, b)
			}
		}
	}
}

// Exit codes of the child modes.
const (
	childOK     = 0
	childFailed = 1
	childDenied = 3 // connect(2) answered EACCES
)

// child runs the test binary as a small client under another uid. mode is
// "dial:SOCKET": connect to a SOCK_SEQPACKET socket; "dialstream:SOCKET":
// to a SOCK_STREAM one; or "seccomp:FILE":
// see installFilterAndExec.
func child(mode string) int {
	kind, arg, _ := strings.Cut(mode, ":")
	if kind == "seccomp" {
		return installFilterAndExec(arg)
	}
	network := map[string]string{"dial": "unixpacket", "dialstream": "unix"}[kind]
	if network == "" {
		fmt.Fprintln(os.Stderr, "unknown child mode", mode)
		return childFailed
	}
	c, err := net.DialUnix(network, nil, &net.UnixAddr{Name: arg, Net: network})
	if errors.Is(err, unix.EACCES) {
		return childDenied
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "dial:", err)
		return childFailed
	}
	c.Close()
	return childOK
}
