package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/quiltmesh/quilt-runtime/internal/testutil"
	"github.com/quiltmesh/quilt-runtime/proto/quiltpb"
)

// reproNode is a node whose routes may go via vxlan100 and vxlan101, with
// eth1, a veth that is up and not allowed, and the frontend started.
func reproNode(t *testing.T) (*node, quiltpb.QuiltRuntimeClient, quiltpb.QuiltAdminClient) {
	n := newNodeAllowing(t, []string{"vxlan100", "vxlan101"}, "vxlan100", "vxlan101")
	addVeth(t, n.ns, "eth1")
	n.startFrontend(t)
	rt, adm, _ := n.clients(t)
	return n, rt, adm
}

// nextResync waits for a resync that started after since and returns it.
func nextResync(t *testing.T, adm quiltpb.QuiltAdminClient, since time.Time) *quiltpb.ResyncStatus {
	t.Helper()
	ctx := ctxT(t)
	for {
		st, err := adm.GetStatus(ctx, &quiltpb.GetStatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if at, err := time.Parse(time.RFC3339Nano, st.LastResync.Time); err == nil && at.After(since) {
			return st.LastResync
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no resync after %v: %v", since, st)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func inject(t *testing.T, rt quiltpb.QuiltRuntimeClient, dst, via string) *quiltpb.InjectRouteResponse {
	t.Helper()
	r, err := rt.InjectRoute(ctxT(t), &quiltpb.InjectRouteRequest{Destination: dst, ViaInterface: via})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestIssue11Reproductions replays, through the agent's RPCs and the real
// pair, each way issue 11 found around the helper's ownership rules (the
// helper decided on the route in charge of the prefix's first address,
// and moved routes with NLM_F_REPLACE); each now holds. The batch on the
// helper's socket (1a) is in TestHostileBatches, the framing of a later
// record of another version (5) in TestHelperStrictDecoding, supplementary
// groups in TestHelperCapabilities, lost notifications in
// TestHelperWatch.
func TestIssue11Reproductions(t *testing.T) {
	requireRoot(t)
	t.Run("1b a foreign route prepended on a link-down device survives a move", func(t *testing.T) {
		n, rt, adm := reproNode(t)
		testutil.Run(t, "ip", "-n", n.ns, "link", "add", "down1", "type", "veth", "peer", "name", "down1p")
		testutil.Run(t, "ip", "-n", n.ns, "link", "set", "down1", "up") // its peer stays down: no carrier
		if r := inject(t, rt, prefixX, "vxlan100"); !r.Success {
			t.Fatal(r)
		}
		testutil.Run(t, "ip", "-n", n.ns, "route", "prepend", prefixX, "dev", "down1", "proto", "static")
		before := routes(t, n.ns)
		r := inject(t, rt, prefixX, "vxlan101")
		if r.Success || !strings.Contains(r.Error, "not managed by quilt") {
			t.Fatalf("the move over a foreign route: %v", r)
		}
		if after := routes(t, n.ns); after != before {
			t.Fatalf("the refused move changed the table:\nbefore:\n%s\nafter:\n%s", before, after)
		}
		if st := nextResync(t, adm, time.Now()); st.Ok || st.Conflicts != 1 {
			t.Fatalf("the resync after it: %v; want the conflict reported", st)
		}
		lr, err := adm.ListRoutes(ctxT(t), &quiltpb.ListRoutesRequest{})
		if err != nil || len(lr.Routes) != 1 || lr.Routes[0].State != quiltpb.RouteState_ROUTE_STATE_CONFLICT {
			t.Fatalf("routes: %v %v; want one, in conflict", lr, err)
		}
	})
	t.Run("2 a foreign route is not shadowed through a more-specific one", func(t *testing.T) {
		n, rt, _ := reproNode(t)
		testutil.Run(t, "ip", "-n", n.ns, "route", "add", "10.42.50.0/24", "dev", "eth1", "proto", "static", "metric", "100")
		testutil.Run(t, "ip", "-n", n.ns, "route", "add", "10.42.50.0/26", "dev", "eth1", "proto", "static")
		testutil.Run(t, "ip", "-n", n.ns, "rule", "add", "to", "10.42.50.0/24", "lookup", "main", "pref", "100")
		before := routes(t, n.ns)
		if r := inject(t, rt, "10.42.50.0/24", "vxlan100"); r.Success || !strings.Contains(r.Error, "not managed by quilt") {
			t.Fatalf("inject over a foreign route at another metric: %v", r)
		}
		if after := routes(t, n.ns); after != before {
			t.Fatalf("the table changed:\nbefore:\n%s\nafter:\n%s", before, after)
		}
	})
	for _, cover := range []struct {
		name string
		ip   []string
	}{
		{"a /25 at .0", []string{"route", "add", "10.42.6.0/25", "dev", "eth1", "proto", "static"}},
		{"a /32 host route at .0", []string{"route", "add", "10.42.6.0/32", "dev", "eth1", "proto", "static"}},
		{"a blackhole /26 at .0", []string{"route", "add", "blackhole", "10.42.6.0/26"}},
		{"a local address at .0", []string{"addr", "add", "10.42.6.0/32", "dev", "eth1"}},
	} {
		t.Run("3 and 4 remove and re-inject under "+cover.name, func(t *testing.T) {
			n, rt, adm := reproNode(t)
			if r := inject(t, rt, prefixX, "vxlan100"); !r.Success {
				t.Fatal(r)
			}
			testutil.Run(t, "ip", append([]string{"-n", n.ns}, cover.ip...)...)
			// 4: the agent's re-inject of a route that is ours already.
			for range 3 {
				if r := inject(t, rt, prefixX, "vxlan100"); !r.Success {
					t.Fatalf("re-inject: %v", r)
				}
			}
			// 3: removal removes it, and the resync that follows is ok.
			r, err := rt.RemoveRoute(ctxT(t), &quiltpb.RemoveRouteRequest{Destination: prefixX})
			if err != nil || !r.Success {
				t.Fatal(r, err)
			}
			if got := ours(t, n.ns); got != "" {
				t.Fatalf("after RemoveRoute our routes are still:\n%s", got)
			}
			if st := nextResync(t, adm, time.Now()); !st.Ok || st.Failed != 0 || st.Removed != 0 {
				t.Fatalf("the resync after the removal: %v", st)
			}
		})
	}
}
