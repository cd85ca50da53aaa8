package testutil

import (
	"fmt"
	"os"
	"sync/atomic"
	"testing"

	"github.com/quiltmesh/quilt-runtime/internal/netns"
)

// RequireRoot skips the test t unless it runs as root, or fails it when
// CI=true, which forbids skipping. needs says what the test needs root
// for.
func RequireRoot(t testing.TB, needs string) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("this test needs root (%s) and CI=true forbids skipping", needs)
	}
	t.Skipf("needs root (%s); run `sudo make test`", needs)
}

// netnsCount numbers the namespaces Netns makes in this process.
var netnsCount atomic.Int32

// Netns makes a named network namespace, prefix-PID-N, with its loopback
// up, for the test t, and removes it with whatever still runs in it when
// the test ends (netns.Remove).
func Netns(t testing.TB, prefix string) string {
	t.Helper()
	name := fmt.Sprintf("%s-%d-%d", prefix, os.Getpid(), netnsCount.Add(1))
	Run(t, "ip", "netns", "add", name)
	t.Cleanup(func() {
		if _, err := netns.Remove(name); err != nil {
			t.Error(err)
		}
	})
	Run(t, "ip", "-n", name, "link", "set", "lo", "up")
	return name
}
