package e2e

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
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/status"

	"github.com/quiltmesh/quilt-runtime/internal/testutil"
	"github.com/quiltmesh/quilt-runtime/proto/quiltpb"
	"github.com/quiltmesh/quilt-runtime/shared/wire"
)

// These tests play systemd's side of the frontend's sockets: the
// notification socket (NOTIFY_SOCKET, with the sender's credentials as
// systemd reads them for NotifyAccess=main), the watchdog (WATCHDOG_USEC,
// WATCHDOG_PID) and socket activation (LISTEN_FDS, LISTEN_PID,
// LISTEN_FDNAMES, the listening socket as fd 3).

// listenNotify binds the test's NOTIFY_SOCKET, closed when the test ends.
func listenNotify(t *testing.T) *sdnotify.Socket {
	t.Helper()
	dir := socketDir(t, nobody)
	os.Chmod(dir, 0o755)
	n, err := sdnotify.Listen(filepath.Join(dir, "notify"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// standIn is a route helper stand-in on a real SOCK_SEQPACKET socket: it
// answers hellos at once, and lists with no routes, except while hold is
// set: then it keeps each list unanswered until release. A watch gets
// what the real helper sends first, a resync event, and then nothing: its
// kernel never changes. So the frontend's watch asks for a resync at
// start, as it does against the real helper, and these tests see that
// readiness and the watchdog still follow the resync loop alone.
type standIn struct {
	sock  string
	hold  atomic.Bool
	lists atomic.Int32 // list requests received

	mu      sync.Mutex
	pending []heldList // lists held, not answered yet
	conns   []*net.UnixConn
}

type heldList struct {
	c   *net.UnixConn
	tag uint32
}

// startStandIn listens where uid may connect; everything closes when the
// test ends.
func startStandIn(t *testing.T, uid int) *standIn {
	t.Helper()
	dir := socketDir(t, uid)
	os.Chmod(dir, 0o755)
	s := &standIn{sock: filepath.Join(dir, "helper.sock")}
	l, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: s.sock, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(s.sock, 0o777)
	var wg sync.WaitGroup
	t.Cleanup(func() {
		l.Close()
		s.mu.Lock()
		for _, c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.AcceptUnix()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
			wg.Add(1)
			go func() { defer wg.Done(); s.serve(c) }()
		}
	}()
	return s
}

func (s *standIn) serve(c *net.UnixConn) {
	buf := make([]byte, wire.MaxBatch*wire.Size+1)
	for {
		k, err := c.Read(buf)
		if err != nil {
			return
		}
		reqs, err := wire.DecodeRequests(buf[:k])
		if err != nil || len(reqs) != 1 || reqs[0].Status != wire.StatusOK {
			return
		}
		switch r := reqs[0]; r.Op {
		case wire.OpHello:
			c.Write(wire.Record{Op: wire.OpHello, Tag: r.Tag}.Append(nil))
		case wire.OpWatch:
			c.Write(wire.Record{Op: wire.OpWatch, Tag: r.Tag, Result: wire.ResultResync}.Append(nil))
			c.Read(buf) // held until the frontend leaves (it sends nothing more)
			return
		case wire.OpList:
			s.lists.Add(1)
			s.mu.Lock()
			if s.hold.Load() {
				s.pending = append(s.pending, heldList{c, r.Tag})
			} else {
				s.answerLocked(heldList{c, r.Tag})
			}
			s.mu.Unlock()
		default:
			return
		}
	}
}

// answerLocked answers one list: no routes of ours.
func (s *standIn) answerLocked(h heldList) {
	h.c.Write(wire.Record{Op: wire.OpList, Tag: h.tag, Result: wire.ResultDone}.Append(nil))
}

// release stops holding lists and answers the held ones; it returns when
// it began to.
func (s *standIn) release() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hold.Store(false)
	at := time.Now()
	for _, h := range s.pending {
		s.answerLocked(h)
	}
	s.pending = nil
	return at
}

// held returns how many lists wait for an answer.
func (s *standIn) held() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pending)
}

// startActivated starts the frontend in ns as unprivileged frontendUID the
// way systemd starts a Type=notify service: env added to a bare
// environment, WATCHDOG_PID (when WATCHDOG_USEC is given) and, with a
// listening socket, LISTEN_PID, LISTEN_FDS=1 and LISTEN_FDNAMES=grpc set
// to the service's own pid, the socket as fd 3. sh, ip netns exec and
// setpriv all exec in place, so sh's pid is the frontend's.
func startActivated(t *testing.T, ns string, env []string, listening *os.File, args ...string) *testutil.Proc {
	t.Helper()
	script := ""
	if slices.ContainsFunc(env, func(kv string) bool { return strings.HasPrefix(kv, "WATCHDOG_USEC=") }) {
		script += "export WATCHDOG_PID=$$; "
	}
	if listening != nil {
		script += "export LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=grpc; "
	}
	argv := append([]string{"-c", script + `exec "$@"`, "sh", "ip", "netns", "exec", ns}, unprivileged(frontendUID)...)
	cmd := exec.Command("sh", append(append(argv, filepath.Join(binDir, "quilt-runtime")), args...)...)
	cmd.Env = append([]string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}, env...)
	if listening != nil {
		cmd.ExtraFiles = []*os.File{listening}
	}
	return testutil.StartTest(t, cmd)
}

// stateDir makes a state directory the frontend's uid owns.
func stateDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(socketDir(t, frontendUID), "state")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, frontendUID, frontendUID); err != nil {
		t.Fatal(err)
	}
	return dir
}

// watchdogUSec is the watchdog period the notify tests give the frontend.
const watchdogUSec = 2_000_000

// TestSystemdNotify: READY=1 comes only after the listeners are open and
// the first resync has finished, from the main pid, with a STATUS= that
// says so; then WATCHDOG=1 arrives at about half the watchdog period and
// never later than the period itself, when systemd would kill the service.
func TestSystemdNotify(t *testing.T) {
	ns := newNetns(t)
	helper := startStandIn(t, frontendUID)
	helper.hold.Store(true) // the first resync waits until the test lets it go
	n := listenNotify(t)
	addr := testutil.FreeLoopback(t)
	fe := startActivated(t, ns, []string{"NOTIFY_SOCKET=" + n.Path, fmt.Sprintf("WATCHDOG_USEC=%d", watchdogUSec)},
		nil, "--grpc-addr", addr, "--helper-socket", helper.sock, "--state-dir", stateDir(t), "--helper-timeout", "30s", "--resync-interval", "1s")
	waitFor(t, fe, func() bool {
		_, any := n.Last()
		return helper.held() == 1 && strings.Contains(fe.Output(), "Starting gRPC server on "+addr) && any
	})
	// Listening (it said so in a STATUS=), and the first resync's list is
	// with the helper: not ready.
	if r := n.With("READY=1"); len(r) != 0 {
		t.Fatalf("READY=1 before the first resync finished: %q", r[0].Text)
	}
	if last, _ := n.Last(); !strings.Contains(last.Status(), "first resync running") {
		t.Errorf("STATUS= while the first resync runs: %q", last.Status())
	}
	released := helper.release()
	waitFor(t, fe, func() bool { return len(n.With("READY=1")) > 0 })
	ready := n.With("READY=1")[0]
	pid := int32(fe.Pid())
	if ready.Pid != pid || ready.At.Before(released) {
		t.Errorf("READY=1 from pid %d at %v; want the main pid %d, after the first list was answered at %v", ready.Pid, ready.At, pid, released)
	}
	if st := ready.Status(); !strings.Contains(st, "serving gRPC on "+addr) || !strings.Contains(st, "0 routes desired, 0 installed, in sync") {
		t.Errorf("STATUS= with READY=1: %q", st)
	}
	waitFor(t, fe, func() bool {
		last, _ := n.Last()
		return strings.HasSuffix(last.Status(), "route helper up; 0 routes desired, 0 installed, in sync")
	})

	// The watchdog, as systemd sees it from READY=1 on.
	var pings []sdnotify.Notice
	waitFor(t, fe, func() bool {
		pings = slices.DeleteFunc(n.With("WATCHDOG=1"), func(nt sdnotify.Notice) bool { return nt.At.Before(ready.At) })
		return len(pings) >= 6
	})
	period := time.Duration(watchdogUSec) * time.Microsecond
	var gaps []time.Duration
	for i, p := range pings {
		if p.Pid != pid {
			t.Errorf("WATCHDOG=1 from pid %d, want %d", p.Pid, pid)
		}
		if i > 0 {
			gaps = append(gaps, p.At.Sub(pings[i-1].At))
		}
	}
	t.Logf("watchdog period %v; gaps between WATCHDOG=1: %v", period, gaps)
	for _, g := range gaps {
		if g >= period {
			t.Errorf("a gap of %v between WATCHDOG=1: systemd kills a service after %v", g, period)
		}
	}
	slices.Sort(gaps)
	if med := gaps[len(gaps)/2]; med < period/4 || med > 3*period/4 {
		t.Errorf("median gap %v between WATCHDOG=1, want about half the period (%v)", med, period/2)
	}
}

// TestSystemdWatchdogStopsWhenResyncBlocked: a resync loop stuck in a
// helper request longer than the watchdog period stops sending WATCHDOG=1.
// The stand-in answers hellos but holds the lists, and --helper-timeout
// (60s) is longer than the watchdog period (2s), so the resync cannot give
// up first. The test then does what systemd does when the watchdog
// expires: SIGABRT, and the frontend's dump shows the loop in the resync.
func TestSystemdWatchdogStopsWhenResyncBlocked(t *testing.T) {
	ns := newNetns(t)
	helper := startStandIn(t, frontendUID)
	n := listenNotify(t)
	addr := testutil.FreeLoopback(t)
	fe := startActivated(t, ns, []string{"NOTIFY_SOCKET=" + n.Path, fmt.Sprintf("WATCHDOG_USEC=%d", watchdogUSec), "GOTRACEBACK=all"},
		nil, "--grpc-addr", addr, "--helper-socket", helper.sock, "--state-dir", stateDir(t), "--helper-timeout", "60s", "--resync-interval", "1s")
	waitFor(t, fe, func() bool { return len(n.With("READY=1")) == 1 && len(n.With("WATCHDOG=1")) >= 2 })
	if !strings.Contains(fe.Output(), "--helper-timeout is not under half the systemd watchdog period") {
		t.Errorf("no warning that --helper-timeout 60s exceeds the watchdog:\n%s", fe.Output())
	}
	helper.hold.Store(true)
	waitFor(t, fe, func() bool { return helper.held() == 1 })
	before := len(n.With("WATCHDOG=1"))
	// systemd's watchdog: it fires when no WATCHDOG=1 came for a period.
	period := time.Duration(watchdogUSec) * time.Microsecond
	var silent time.Duration
	waitFor(t, fe, func() bool {
		p := n.With("WATCHDOG=1")
		silent = time.Since(p[len(p)-1].At)
		return silent >= period
	})
	// One ping may have been on its way when the list was taken; none after.
	if after := len(n.With("WATCHDOG=1")); after > before+1 {
		t.Errorf("%d WATCHDOG=1 after the resync blocked", after-before)
	}
	t.Logf("no WATCHDOG=1 for %v (period %v) with the resync blocked on the helper", silent, period)
	stop(t, fe, syscall.SIGABRT) // WatchdogSignal=, systemd's default
	ws, ok := fe.Cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ok || !(ws.Signaled() && ws.Signal() == syscall.SIGABRT || ws.ExitStatus() == 2) {
		t.Errorf("after SIGABRT: %v", fe.Cmd.ProcessState)
	}
	if out := fe.Output(); !strings.Contains(out, "reconcile.(*Reconciler).ResyncLoop") || !strings.Contains(out, "helperclient.(*Client).List") {
		t.Errorf("the dump does not show the resync loop waiting on the helper's list:\n%s", out)
	}
}

// TestRestartUnderLoad: an agent stand-in calls InjectRoute in a loop with
// a real gRPC client while the frontend is restarted five times through
// socket activation: the test holds the listening socket as systemd does
// for quilt-runtime.socket and passes it to each new process as fd 3. A
// restart is systemctl's: SIGTERM, wait for the exit, start the next.
// Connections made meanwhile wait in the socket's backlog, so no call
// fails.
func TestRestartUnderLoad(t *testing.T) {
	n := newNode(t)
	l, err := netns.Listen(n.ns, n.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	sock, err := l.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sock.Close() })
	args := []string{"--grpc-addr", n.addr, "--helper-socket", n.sock, "--state-dir", n.stateDir, "--resync-interval", resync.String()}
	start := func() *testutil.Proc {
		t.Helper()
		p := startActivated(t, n.ns, nil, sock, args...)
		waitFor(t, p, func() bool { return strings.Contains(p.Output(), "Starting gRPC server on "+n.addr) })
		if !strings.Contains(p.Output(), "socket=systemd") {
			t.Fatalf("the frontend did not serve the socket it was passed:\n%s", p.Output())
		}
		return p
	}
	fe := start()
	n.configure(t, "10.42.1.0/24")

	rt, _, _ := n.clients(t)
	var made, failed atomic.Int64
	var mu sync.Mutex
	var errs []error
	var slowest time.Duration
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			began := time.Now()
			r, err := rt.InjectRoute(ctx, &quiltpb.InjectRouteRequest{Destination: fmt.Sprintf("10.42.%d.0/24", 2+i%100), ViaInterface: "vxlan100"})
			took := time.Since(began)
			cancel()
			made.Add(1)
			mu.Lock()
			slowest = max(slowest, took)
			mu.Unlock()
			if err == nil && !r.Success {
				err = errors.New(r.Error)
			}
			if err != nil {
				failed.Add(1)
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}
	}()
	const restarts = 5
	for k := 0; k <= restarts; k++ {
		mark := made.Load()
		waitFor(t, fe, func() bool { return made.Load() >= mark+50 }) // this process serves the agent
		if k == restarts {
			break
		}
		fe.Cmd.Process.Signal(syscall.SIGTERM)
		if err := fe.ExitStatus(t, 10*time.Second); err != nil {
			t.Fatalf("frontend exit on SIGTERM: %v\n%s", err, fe.Output())
		}
		fe = start()
	}
	close(stop)
	wg.Wait()
	t.Logf("restart under load: %d restarts through socket activation, %d InjectRoute calls made, %d failed; slowest call %v (it waited out a restart)",
		restarts, made.Load(), failed.Load(), slowest.Round(time.Millisecond))
	for i, err := range errs {
		if i == 5 {
			break
		}
		t.Errorf("call failed (code %v): %v", status.Code(err), err)
	}
	if failed.Load() > 0 {
		t.Fatalf("%d of %d calls failed across the restarts", failed.Load(), made.Load())
	}
	// Every route the agent asked for is in the kernel, and nothing else.
	var want []string
	for i := range 100 {
		want = append(want, fmt.Sprintf("10.42.%d.0/24 dev vxlan100 scope link", 2+i))
	}
	var got []string
	for _, line := range strings.Split(ours(t, n.ns), "\n") {
		if line = strings.TrimSpace(line); line != "" {
			got = append(got, line)
		}
	}
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("our routes after the restarts:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
