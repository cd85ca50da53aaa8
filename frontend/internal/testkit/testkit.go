// Package testkit is what the frontend's unit tests share: an in-memory
// route helper that keeps routes in a map and can be told to fail
// (Helper), the route policy they run under, and state directories that
// hold routes already. Never shipped; the e2e tests use the real helper
// and kernel.
package testkit

import (
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"testing"

	"github.com/quiltmesh/quilt-runtime/frontend/route"
	"github.com/quiltmesh/quilt-runtime/frontend/state"
	"github.com/quiltmesh/quilt-runtime/shared/policy"
)

// Policy is the unit tests' route policy: /24s of 10.42.0.0/16 via
// vxlan100.
var Policy = policy.Policy{Cluster: netip.MustParsePrefix("10.42.0.0/16"), PrefixLen: 24, Interfaces: []string{"vxlan100"}}

// StateDir returns a new state directory whose state file exists, as
// after an earlier run (so a first resync on it adopts nothing), and
// holds routes as desired.
func StateDir(t testing.TB, routes ...route.Route) string {
	t.Helper()
	dir := t.TempDir()
	store, _, err := state.Open(dir, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := store.ChangeRoutes(slices.Values(routes)); err != nil {
		t.Fatal(err)
	}
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}
	return dir
}
