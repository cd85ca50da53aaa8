package reconcile

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/quiltmesh/quilt-runtime/frontend/route"
)

// TestDiff: the one diff walks desired and installed routes in
// destination order, once per destination, with several routes of ours
// at one destination named together.
func TestDiff(t *testing.T) {
	rt := func(dst, ifname string) route.Route {
		return route.Route{Dst: netip.MustParsePrefix(dst), Ifname: ifname}
	}
	want, have := &table{}, &table{}
	for _, r := range []route.Route{rt("10.42.9.0/24", "vxlan100"), rt("10.42.2.0/24", "vxlan100"), rt("10.42.3.0/24", "vxlan200"), rt("10.0.0.0/8", "vxlan100")} {
		want.addRoute(r)
	}
	for _, r := range []route.Route{rt("10.42.3.0/24", "vxlan100"), rt("10.42.4.0/24", "vxlan100"), rt("10.42.2.0/24", "vxlan100"),
		rt("10.42.3.0/24", "vxlan200"), rt("10.42.4.0/25", "vxlan100")} {
		have.addRoute(r)
	}
	want.sort()
	have.sort()
	var got strings.Builder
	diff(want, have, func(dst netip.Prefix, w, h string) bool {
		got.WriteString(dst.String() + " want=" + w + " have=" + h + "\n")
		return true
	})
	const golden = `10.0.0.0/8 want=vxlan100 have=
10.42.2.0/24 want=vxlan100 have=vxlan100
10.42.3.0/24 want=vxlan200 have=vxlan100,vxlan200
10.42.4.0/24 want= have=vxlan100
10.42.4.0/25 want= have=vxlan100
10.42.9.0/24 want=vxlan100 have=
`
	if got.String() != golden {
		t.Fatalf("diff:\n%s\nwant:\n%s", got.String(), golden)
	}
	if want.dsts() != 4 || have.dsts() != 4 || !have.has(netip.MustParsePrefix("10.42.4.0/25")) || have.has(netip.MustParsePrefix("10.42.9.0/24")) {
		t.Fatalf("dsts %d %d", want.dsts(), have.dsts())
	}
}
