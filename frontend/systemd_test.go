package frontend

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/quiltmesh/quilt-runtime/frontend/helperclient"
	"github.com/quiltmesh/quilt-runtime/frontend/reconcile"
)

// TestPassedListenersMatch: a passed socket stands in for the --grpc-addr
// that names its address (also by host name); one that no --grpc-addr
// names is an error naming it.
func TestPassedListenersMatch(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	u, err := net.Listen("unix", filepath.Join(t.TempDir(), "grpc.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	p := passed{listenerKey(l.Addr()): l, listenerKey(u.Addr()): u}
	for _, addr := range []string{fmt.Sprintf("127.0.0.1:%d", port+1), "unix:///elsewhere.sock"} {
		if got := p.take(mustAddr(t, addr)); got != nil {
			t.Errorf("%s took the socket on %v", addr, got.Addr())
		}
	}
	if got := p.take(mustAddr(t, fmt.Sprintf("localhost:%d", port))); got != l {
		t.Errorf("localhost:%d did not take the socket on %v: %v", port, l.Addr(), got)
	}
	if err := p.leftover(); !errors.Is(err, ErrActivation) || !strings.Contains(err.Error(), u.Addr().String()) {
		t.Errorf("leftover: %v, want ErrActivation naming %s", err, u.Addr())
	}
	if got := p.take(mustAddr(t, "unix://"+u.Addr().String())); got != nil || (passed{}).leftover() != nil {
		t.Errorf("after leftover: took %v", got)
	}
}

func mustAddr(t *testing.T, s string) Listener {
	t.Helper()
	l, err := ParseAddr(s)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestPassedListenersNone: without LISTEN_PID naming this process nothing
// is taken, so a frontend started by hand listens itself.
func TestPassedListenersNone(t *testing.T) {
	t.Setenv("LISTEN_PID", "1")
	t.Setenv("LISTEN_FDS", "1")
	p, err := passedListeners()
	if err != nil || len(p) != 0 {
		t.Fatalf("passedListeners for another pid: %v, %v", p, err)
	}
}

// TestNotifier plays systemd's notification socket: READY=1 only once the
// listeners are open and the first resync has finished, STATUS= whenever
// its text changes, and nothing twice.
func TestNotifier(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	t.Setenv("WATCHDOG_USEC", "")
	recv := func() string {
		t.Helper()
		buf := make([]byte, 4096)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		k, err := c.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		return string(buf[:k])
	}
	n := newNotifier(slog.New(slog.NewTextHandler(io.Discard, nil)))
	if n.watchdog != 0 || n.hooks(func() int { return 0 }).Every != 0 {
		t.Fatalf("watchdog %v without WATCHDOG_USEC", n.watchdog)
	}
	n.helper(nil)
	if got := recv(); got != "STATUS=starting; route helper up; first resync running" {
		t.Fatalf("first: %q", got)
	}
	n.resync(reconcile.ResyncResult{Start: time.Now(), Installed: 2}, 2)
	if got := recv(); got != "STATUS=starting; route helper up; 2 routes desired, 2 installed, in sync" {
		t.Fatalf("after the first resync, before listening: %q (no READY yet)", got)
	}
	n.listened([]string{"127.0.0.1:50051"})
	if got, want := recv(), "READY=1\nSTATUS=serving gRPC on 127.0.0.1:50051; route helper up; 2 routes desired, 2 installed, in sync"; got != want {
		t.Fatalf("after listening: %q, want %q", got, want)
	}
	n.resync(reconcile.ResyncResult{Start: time.Now(), Installed: 2}, 2) // nothing new: nothing sent
	gone := fmt.Errorf("%w: dial unix /run/quilt/route-helper.sock: connect: no such file or directory", helperclient.ErrUnavailable)
	n.helper(gone)
	if got := recv(); !strings.HasPrefix(got, "STATUS=serving gRPC on 127.0.0.1:50051; route helper unavailable (route helper unavailable: dial unix") {
		t.Fatalf("helper gone: %q", got)
	}
	n.resync(reconcile.ResyncResult{Start: time.Now(), Err: fmt.Errorf("list our routes: %w", gone)}, 2)
	if got := recv(); !strings.HasSuffix(got, "; routes not compared with the kernel until the helper answers") || strings.Contains(got, "READY") {
		t.Fatalf("resync without helper: %q", got)
	}
	n.helper(nil)
	n.resync(reconcile.ResyncResult{Start: time.Now(), Installed: 1, Conflicts: 1}, 2)
	recv()
	if got := recv(); !strings.HasSuffix(got, "2 routes desired, 1 installed; 1 held by routes not quilt's, 0 repairs failed (quiltctl routes)") {
		t.Fatalf("conflict: %q", got)
	}
	n.stopping()
	if got := recv(); got != "STOPPING=1\nSTATUS=stopping; routes stay in the kernel" {
		t.Fatalf("stopping: %q", got)
	}
}

// TestNotifierWatchdog: with WATCHDOG_USEC for this process the loop's
// hooks send WATCHDOG=1 at half the period; for another WATCHDOG_PID none.
func TestNotifierWatchdog(t *testing.T) {
	t.Setenv("WATCHDOG_USEC", "3000000")
	t.Setenv("WATCHDOG_PID", "1")
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if n := newNotifier(log); n.watchdog != 0 {
		t.Fatalf("watchdog %v for another pid", n.watchdog)
	}
	t.Setenv("WATCHDOG_PID", fmt.Sprint(os.Getpid()))
	h := newNotifier(log).hooks(func() int { return 0 })
	if h.Every != 1500*time.Millisecond || h.Alive == nil {
		t.Fatalf("hooks: every %v", h.Every)
	}
}
