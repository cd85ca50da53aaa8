package frontend

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"

	"github.com/quiltmesh/quilt-runtime/frontend/api"
	"github.com/quiltmesh/quilt-runtime/frontend/internal/testkit"
	"github.com/quiltmesh/quilt-runtime/frontend/internal/testnode"
	"github.com/quiltmesh/quilt-runtime/frontend/ipam"
)

// runConfig is a Config for Run with an in-process fake helper, its state
// in a temporary directory.
func runConfig(t *testing.T, addrs ...string) Config {
	return Config{Addrs: addrs, Policy: testkit.Policy, StateDir: filepath.Join(t.TempDir(), "state"), Offsets: ipam.DefaultOffsets,
		ResyncInterval: time.Hour, HelperTimeout: time.Second, Helper: testkit.New(), Log: slog.New(slog.DiscardHandler)}
}

// serveConn serves the node as Run would (NewGRPCServer: its services,
// limits, health, reflection, channelz; and with m, its metrics) on an
// in-memory listener, and returns a client connection.
func serveConn(t *testing.T, node *api.Node, m *Metrics) *grpc.ClientConn {
	t.Helper()
	var opts []grpc.ServerOption
	if m != nil {
		opts = m.ServerOptions()
	}
	srv := NewGRPCServer(node, api.Info{}, health.NewServer(), nil, opts...)
	if m != nil {
		m.Registered(srv)
	}
	return testnode.Dial(t, srv)
}

// TestSocketGroup: --grpc-socket-group gives a unix:// listener's socket
// that group, mode 0660; a group that cannot be resolved, or no unix
// listener to give it to, stops the start.
func TestSocketGroup(t *testing.T) {
	gid := os.Getgid()
	if groups, _ := os.Getgroups(); os.Geteuid() != 0 && len(groups) > 0 {
		gid = groups[len(groups)-1]
	} else if os.Geteuid() == 0 {
		gid = 64123 // root may give any group
	}
	sock := filepath.Join(t.TempDir(), "runtime.sock")
	cfg := runConfig(t, "unix://"+sock)
	cfg.SocketGroup = fmt.Sprint(gid)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	var st syscall.Stat_t
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		err := syscall.Stat(sock, &st)
		if err == nil && int(st.Gid) == gid {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("socket %s: gid %d (%v), want %d", sock, st.Gid, err, gid)
		}
	}
	if st.Mode&0o777 != 0o660 || st.Mode&syscall.S_IFMT != syscall.S_IFSOCK || int(st.Uid) != os.Geteuid() {
		t.Fatalf("socket mode %o uid %d", st.Mode, st.Uid)
	}

	for _, tc := range []struct {
		addr, group, says string
	}{
		{"unix://" + filepath.Join(t.TempDir(), "s.sock"), "no-such-group-quilt", "no-such-group-quilt"},
		{"127.0.0.1:0", "0", "needs a unix:///path"},
	} {
		cfg := runConfig(t, tc.addr)
		cfg.SocketGroup = tc.group
		if err := Run(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), tc.says) || !strings.Contains(err.Error(), "--grpc-socket-group") {
			t.Errorf("%s with group %s: %v", tc.addr, tc.group, err)
		}
	}
}

func TestParseAddr(t *testing.T) {
	for in, want := range map[string]Listener{
		"127.0.0.1:50051":          {Network: "tcp", Addr: "127.0.0.1:50051"},
		"[::1]:50051":              {Network: "tcp", Addr: "[::1]:50051"},
		"unix:///run/quilt/x.sock": {Network: "unix", Addr: "/run/quilt/x.sock"},
		"vsock://3:50051":          {Network: "vsock", Addr: "3:50051", CID: 3, Port: 50051},
	} {
		if got, err := ParseAddr(in); err != nil || got != want {
			t.Errorf("%s: %+v %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "50051", "unix://relative", "vsock://x:1", "vsock://3", "http://127.0.0.1:1", "127.0.0.1:99999"} {
		if _, err := ParseAddr(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	for in, loop := range map[string]bool{"127.0.0.1:1": true, "localhost:1": true, "[::1]:1": true, ":1": false, "0.0.0.0:1": false, "10.0.0.1:1": false} {
		l, _ := ParseAddr(in)
		if l.Loopback() != loop {
			t.Errorf("%s: loopback %v", in, !loop)
		}
	}
}
