package reconcile

import (
	"maps"
	"net/netip"
	"slices"
	"sync"

	"github.com/quiltmesh/quilt-runtime/frontend/route"
)

// Store makes changes to the desired routes durable. Each call returns
// once its change is on disk.
type Store interface {
	// ChangeRoutes records changes; a change to an adopted route confirms it.
	ChangeRoutes(changes ...route.Route) error
	// AdoptRoutes records routes found in the kernel as desired, adopted.
	AdoptRoutes(changes ...route.Route) error
}

// desired is the set of routes the agent asked for: what the kernel should
// hold, whatever it holds now. It is kept in memory and written through to
// the state file before any change is acknowledged.
//
// lock serialises everything done for one destination: recording it and
// the helper request that follows, in an RPC or in a resync, so the two
// can never cross.
//
// Some desired routes may be adopted: found in the kernel when the state
// file was new, and taken as desired until the agent confirms them (any
// request of its that names them) or a resync forgets them.
type desired struct {
	store Store

	mu      sync.RWMutex
	routes  map[netip.Prefix]string // destination -> interface
	adopted map[netip.Prefix]bool   // desired, adopted, not yet confirmed

	stripes [64]sync.Mutex
}

func newDesired(store Store, saved map[netip.Prefix]string, adopted map[netip.Prefix]bool) *desired {
	d := &desired{store: store, routes: maps.Clone(saved), adopted: maps.Clone(adopted)}
	if d.routes == nil {
		d.routes = map[netip.Prefix]string{}
	}
	if d.adopted == nil {
		d.adopted = map[netip.Prefix]bool{}
	}
	return d
}

// lock takes the destination's lock and returns its unlock.
func (d *desired) lock(dst netip.Prefix) (unlock func()) {
	a := dst.Addr().As4()
	m := &d.stripes[(uint(a[1])<<8|uint(a[2])^uint(a[3]))%uint(len(d.stripes))]
	m.Lock()
	return m.Unlock
}

// lockAll takes every destination's lock, in order, and returns the
// unlock: for changes to many routes at once.
func (d *desired) lockAll() (unlock func()) {
	for i := range d.stripes {
		d.stripes[i].Lock()
	}
	return func() {
		for i := range d.stripes {
			d.stripes[i].Unlock()
		}
	}
}

// get returns the interface dst should go via, if it is desired.
func (d *desired) get(dst netip.Prefix) (string, bool) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	ifname, ok := d.routes[dst]
	return ifname, ok
}

func (d *desired) len() int {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return len(d.routes)
}

// all returns a copy of the desired routes.
func (d *desired) all() map[netip.Prefix]string {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return maps.Clone(d.routes)
}

// set records changes (an empty Ifname: not routed) in one transaction;
// the caller holds their locks. A change that names an adopted route
// confirms it. It returns how many changed the desired set.
func (d *desired) set(changes []route.Route) (int, error) {
	var rc []route.Route
	for _, c := range changes {
		cur, ok := d.get(c.Dst)
		if c.IsRemoval() && ok || !c.IsRemoval() && cur != c.Ifname || d.isAdopted(c.Dst) {
			rc = append(rc, c)
		}
	}
	if len(rc) == 0 {
		return 0, nil
	}
	if err := d.store.ChangeRoutes(rc...); err != nil {
		return 0, err
	}
	d.apply(rc, false)
	return len(rc), nil
}

// adopt records routes of ours found in the kernel as desired, adopted, in
// one transaction; the caller holds every lock.
func (d *desired) adopt(found []route.Route) error {
	if err := d.store.AdoptRoutes(found...); err != nil {
		return err
	}
	d.apply(found, true)
	return nil
}

// forget records that adopted routes the agent never confirmed are no
// longer desired, in one transaction; the caller holds every lock. A
// route confirmed since is kept.
func (d *desired) forget(dsts []netip.Prefix) (forgotten []netip.Prefix, err error) {
	var rc []route.Route
	for _, dst := range dsts {
		if d.isAdopted(dst) {
			rc = append(rc, route.Route{Dst: dst})
			forgotten = append(forgotten, dst)
		}
	}
	if len(rc) == 0 {
		return nil, nil
	}
	if err := d.store.ChangeRoutes(rc...); err != nil {
		return nil, err
	}
	d.apply(rc, false)
	return forgotten, nil
}

// apply makes recorded changes in memory: an empty Ifname deletes, and
// every route changed is adopted or, if not, confirmed.
func (d *desired) apply(rc []route.Route, adopt bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, c := range rc {
		if c.IsRemoval() {
			delete(d.routes, c.Dst)
		} else {
			d.routes[c.Dst] = c.Ifname
		}
		if adopt {
			d.adopted[c.Dst] = true
		} else {
			delete(d.adopted, c.Dst)
		}
	}
}

func (d *desired) isAdopted(dst netip.Prefix) bool {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.adopted[dst]
}

func (d *desired) adoptedLen() int {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return len(d.adopted)
}

// adoptedList returns the adopted routes not yet confirmed, in order.
func (d *desired) adoptedList() []netip.Prefix {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return slices.SortedFunc(maps.Keys(d.adopted), route.Compare)
}
