package api_test

import (
	"io"
	"log/slog"
	"net/netip"
	"testing"

	"github.com/quiltmesh/quilt-runtime/frontend/api"
	"github.com/quiltmesh/quilt-runtime/frontend/helperclient"
	"github.com/quiltmesh/quilt-runtime/frontend/internal/testkit"
	"github.com/quiltmesh/quilt-runtime/frontend/internal/testnode"
	"github.com/quiltmesh/quilt-runtime/frontend/route"
	"github.com/quiltmesh/quilt-runtime/proto/quiltpb"
)

// newNode opens a node on a state file that already holds routes as
// desired, with h as its route helper, logging at INFO to log.
func newNode(t *testing.T, h helperclient.RouteHelper, log io.Writer, routes ...route.Route) *api.Node {
	t.Helper()
	return testnode.Open(t, api.NodeConfig{Helper: h, StateDir: testkit.StateDir(t, routes...), Log: slog.New(slog.NewTextHandler(log, nil))})
}

// runtimeClient serves the node and returns a client of the agent's
// service.
func runtimeClient(t *testing.T, n *api.Node) quiltpb.QuiltRuntimeClient {
	t.Helper()
	return quiltpb.NewQuiltRuntimeClient(testnode.Serve(t, n, api.Info{}))
}

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// via is the route to dst via vxlan100.
func via(dst string) route.Route { return route.Route{Dst: pfx(dst), Ifname: "vxlan100"} }

func prefixN(n int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 42, byte(n), 0}), 24)
}
