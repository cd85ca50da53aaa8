package reconcile

import (
	"context"

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
