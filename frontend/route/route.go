// Package route is the one type the frontend's layers pass for a route of
// quilt's, from the gRPC services down to the route helper's requests and
// the state file: a destination and the interface it goes via. As a
// change, a Route with no interface removes quilt's route to its
// destination.
//
// It needs no privileges and has no knobs.
package route

import (
	"cmp"
	"net/netip"
)

// Route is quilt's route to Dst via the interface Ifname. As a change, an
// empty Ifname removes quilt's route to Dst.
type Route struct {
	Dst    netip.Prefix
	Ifname string
}

// IsRemoval reports whether r, as a change, removes the route to Dst.
func (r Route) IsRemoval() bool { return r.Ifname == "" }

// String is "10.42.2.0/24 dev vxlan100", or the destination alone for a
// removal.
func (r Route) String() string {
	if r.IsRemoval() {
		return r.Dst.String()
	}
	return r.Dst.String() + " dev " + r.Ifname
}

// Compare orders destinations by address, then length: the order of every
// list of routes and of every batch of repairs.
func Compare(a, b netip.Prefix) int {
	return cmp.Or(a.Addr().Compare(b.Addr()), a.Bits()-b.Bits())
}
