package reconcile

import (
	"context"
	"maps"
	"net/netip"
	"slices"

	"github.com/quiltmesh/quilt-runtime/frontend/route"
)

// installed asks the helper for the routes of ours it holds, by
// destination: the interface of our route there or, where an older
// version left several, all their names, comma-separated, so that it
// differs from any desired interface and gets repaired.
func (r *Reconciler) installed(ctx context.Context) (map[netip.Prefix]string, error) {
	have := map[netip.Prefix]string{}
	err := r.helper.List(ctx, func(rt route.Route) {
		if was, ok := have[rt.Dst]; ok {
			have[rt.Dst] = was + "," + rt.Ifname
		} else {
			have[rt.Dst] = rt.Ifname
		}
	})
	if err != nil {
		return nil, err
	}
	return have, nil
}

// diff is the one comparison of desired and installed routes: it calls
// each for every destination either holds, in order, with the interface
// it should go via ("": not desired) and those of our routes there ("":
// none), until each returns false.
func diff(want, have map[netip.Prefix]string, each func(dst netip.Prefix, want, have string) bool) {
	dsts := slices.AppendSeq(slices.Collect(maps.Keys(want)), maps.Keys(have))
	slices.SortFunc(dsts, route.Compare)
	for _, dst := range slices.Compact(dsts) {
		if !each(dst, want[dst], have[dst]) {
			return
		}
	}
}
