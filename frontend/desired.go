package frontend

import (
	"cmp"
	"maps"
	"net/netip"
	"slices"
	"sync"

	"github.com/quiltmesh/quilt-runtime/frontend/state"
)

// RouteStore makes changes to the desired routes durable.
type RouteStore interface {
	// ChangeRoutes records changes; a change to an adopted route confirms it.
	ChangeRoutes(changes ...state.RouteChange) error
	// AdoptRoutes records routes found in the kernel as desired, adopted.
	AdoptRoutes(changes ...state.RouteChange) error
}

// Desired is the set of routes the agent asked for: what the kernel should
// hold, whatever it holds now. It is kept in memory and written through to
// the state file before any change is acknowledged.
//
// Lock serialises everything done for one destination: recording it and
// the helper request that follows, in an RPC or in a resync, so the two
// can never cross.
//
// Some desired routes may be adopted: found in the kernel when the state
// file was new, and taken as desired until the agent confirms them (any
// request of its that names them: Set, SetMany, Delete) or a resync
// forgets them (Forget).
type Desired struct {
	store RouteStore

	mu      sync.RWMutex
	routes  map[netip.Prefix]string // destination -> interface
	adopted map[netip.Prefix]bool   // desired, adopted, not yet confirmed

	stripes [64]sync.Mutex
}

// NewDesired resumes from the saved routes and their adoption marks.
func NewDesired(store RouteStore, saved map[netip.Prefix]string, adopted map[netip.Prefix]bool) *Desired {
	d := &Desired{store: store, routes: maps.Clone(saved), adopted: maps.Clone(adopted)}
	if d.adopted == nil {
		d.adopted = map[netip.Prefix]bool{}
	}
	return d
}

// Lock takes the destination's lock and returns its unlock.
func (d *Desired) Lock(dst netip.Prefix) (unlock func()) {
	a := dst.Addr().As4()
	m := &d.stripes[(uint(a[1])<<8|uint(a[2])^uint(a[3]))%uint(len(d.stripes))]
	m.Lock()
	return m.Unlock
}

// LockAll takes every destination's lock, in order, and returns the
// unlock: for changes to many routes at once.
func (d *Desired) LockAll() (unlock func()) {
	for i := range d.stripes {
		d.stripes[i].Lock()
	}
	return func() {
		for i := range d.stripes {
			d.stripes[i].Unlock()
		}
	}
}

// Get returns the interface dst should go via, if it is desired.
func (d *Desired) Get(dst netip.Prefix) (string, bool) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	ifname, ok := d.routes[dst]
	return ifname, ok
}

// Len returns the number of desired routes.
func (d *Desired) Len() int {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return len(d.routes)
}

// All returns a copy of the desired routes.
func (d *Desired) All() map[netip.Prefix]string {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return maps.Clone(d.routes)
}

// Set records that dst should go via ifname; the caller holds dst's
// lock. changed says whether anything was written.
func (d *Desired) Set(dst netip.Prefix, ifname string) (changed bool, err error) {
	if cur, ok := d.Get(dst); ok && cur == ifname && !d.IsAdopted(dst) {
		return false, nil
	}
	if err := d.store.ChangeRoutes(state.RouteChange{Dst: dst, Ifname: ifname}); err != nil {
		return false, err
	}
	d.mu.Lock()
	d.routes[dst] = ifname
	delete(d.adopted, dst)
	d.mu.Unlock()
	return true, nil
}

// SetMany records many changes (an empty Ifname: not routed) in one
// transaction; the caller holds every lock. It returns how many changed
// the desired set.
func (d *Desired) SetMany(changes []Change) (int, error) {
	var rc []state.RouteChange
	for _, c := range changes {
		cur, ok := d.Get(c.Dst)
		if c.Ifname == "" && ok || c.Ifname != "" && cur != c.Ifname || d.IsAdopted(c.Dst) {
			rc = append(rc, state.RouteChange{Dst: c.Dst, Ifname: c.Ifname})
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

// Delete records that dst should not be routed; the caller holds dst's
// lock. changed says whether anything was written.
func (d *Desired) Delete(dst netip.Prefix) (changed bool, err error) {
	if _, ok := d.Get(dst); !ok {
		return false, nil
	}
	if err := d.store.ChangeRoutes(state.RouteChange{Dst: dst}); err != nil {
		return false, err
	}
	d.mu.Lock()
	delete(d.routes, dst)
	delete(d.adopted, dst)
	d.mu.Unlock()
	return true, nil
}

// Adopt records routes of ours found in the kernel as desired, adopted, in
// one transaction; the caller holds every lock.
func (d *Desired) Adopt(found []Change) error {
	var rc []state.RouteChange
	for _, c := range found {
		rc = append(rc, state.RouteChange{Dst: c.Dst, Ifname: c.Ifname})
	}
	if err := d.store.AdoptRoutes(rc...); err != nil {
		return err
	}
	d.apply(rc, true)
	return nil
}

// Forget records that adopted routes the agent never confirmed are no
// longer desired, in one transaction; the caller holds every lock. A
// route confirmed since is kept.
func (d *Desired) Forget(dsts []netip.Prefix) (forgotten []netip.Prefix, err error) {
	var rc []state.RouteChange
	for _, dst := range dsts {
		if d.IsAdopted(dst) {
			rc = append(rc, state.RouteChange{Dst: dst})
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
func (d *Desired) apply(rc []state.RouteChange, adopt bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, c := range rc {
		if c.Ifname == "" {
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

// IsAdopted reports whether dst is desired as adopted, not yet confirmed.
func (d *Desired) IsAdopted(dst netip.Prefix) bool {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.adopted[dst]
}

// AdoptedLen returns the number of adopted routes not yet confirmed.
func (d *Desired) AdoptedLen() int {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return len(d.adopted)
}

// Adopted returns the adopted routes not yet confirmed.
func (d *Desired) Adopted() []netip.Prefix {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return slices.SortedFunc(maps.Keys(d.adopted), comparePrefixes)
}

// comparePrefixes orders prefixes by address, then length: the order of
// repairs and of every list of routes.
func comparePrefixes(a, b netip.Prefix) int {
	return cmp.Or(a.Addr().Compare(b.Addr()), a.Bits()-b.Bits())
}
