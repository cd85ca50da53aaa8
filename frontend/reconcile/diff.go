package reconcile

import (
	"context"
	"net/netip"

	"github.com/quiltmesh/quilt-runtime/frontend/route"
)

// installed asks the helper for the routes of ours it holds, as a sorted
// table, built as its answer arrives.
func (r *Reconciler) installed(ctx context.Context) (*table, error) {
	have := &table{}
	if err := r.helper.List(ctx, have.addRoute); err != nil {
		return nil, err
	}
	have.sort()
	return have, nil
}

// destinations is a sorted table of the changes' destinations.
func destinations(changes []route.Route) *table {
	t := &table{entries: make([]uint64, 0, len(changes)), names: []string{""}}
	for _, c := range changes {
		t.add(keyOf(c.Dst), 0)
	}
	t.sort()
	return t
}

// diff is the one comparison of desired and installed routes, walking the
// two sorted tables together: it calls each for every destination either
// holds, in order, with the interface it should go via ("": not desired)
// and those of our routes there ("": none; where an older version left
// several, all their names, comma-separated, so that they differ from any
// desired interface and get repaired), until each returns false. A nil
// table holds nothing.
func diff(want, have *table, each func(dst netip.Prefix, want, have string) bool) {
	if want == nil {
		want = &table{}
	}
	if have == nil {
		have = &table{}
	}
	i, j := 0, 0
	for i < want.len() || j < have.len() {
		var k key
		switch {
		case j == have.len() || i < want.len() && want.key(i) <= have.key(j):
			k = want.key(i)
		default:
			k = have.key(j)
		}
		w := ""
		if i < want.len() && want.key(i) == k {
			w = want.name(i)
			i++
		}
		h := ""
		for n := 0; j < have.len() && have.key(j) == k; j, n = j+1, n+1 {
			if n == 0 {
				h = have.name(j)
			} else {
				h += "," + have.name(j)
			}
		}
		if !each(k.prefix(), w, h) {
			return
		}
	}
}
