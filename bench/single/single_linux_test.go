package single

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/quiltmesh/quilt-runtime/frontend"
	"github.com/quiltmesh/quilt-runtime/frontend/ipam"
	"github.com/quiltmesh/quilt-runtime/shared/policy"
)

// TestRefusesOutsideItsNamespace: the baseline changes routes directly, so
// it starts only where it was told it runs, a named throwaway namespace,
// and touches nothing (no state file, no socket) before it checks.
func TestRefusesOutsideItsNamespace(t *testing.T) {
	for _, ns := range []string{"", "quilt-bench-no-such-namespace"} {
		dir := t.TempDir()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := Serve(ctx, Config{Netns: ns, Config: frontend.Config{Addrs: []string{"127.0.0.1:0"}, StateDir: dir, ResyncInterval: time.Second,
			Offsets: ipam.DefaultOffsets, Log: slog.New(slog.DiscardHandler),
			Policy: policy.Policy{Cluster: netip.MustParsePrefix("10.0.0.0/8"), PrefixLen: 24, Interfaces: []string{"vxlan100"}}}})
		cancel()
		if !errors.Is(err, ErrNetns) {
			t.Errorf("--netns %q: %v, want ErrNetns", ns, err)
		}
	}
}
