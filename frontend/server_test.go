package frontend

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/quiltmesh/quilt-runtime/frontend/ipam"
)

// runConfig is a Config for Run with an in-process fake helper, its state
// in a temporary directory.
func runConfig(t *testing.T, addrs ...string) Config {
	return Config{Addrs: addrs, Policy: testPolicy, StateDir: filepath.Join(t.TempDir(), "state"), Offsets: ipam.DefaultOffsets,
		ResyncInterval: time.Hour, HelperTimeout: time.Second, Helper: &fakeHelper{routes: map[netip.Prefix]string{}},
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
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
