package frontend

import (
	"maps"
	"net/netip"
	"sync"

	"github.com/quiltmesh/quilt-runtime/frontend/state"
)

// RouteStore makes changes to the desired routes durable.
type RouteStore interface {
	ChangeRoutes(changes ...state.RouteChange) error
}

// Desired is the set of routes the agent asked for: what the kernel should
// hold, whatever it holds now. It is kept in memory and written through to
// the state file before any change is acknowledged.
//
// Lock serialises everything done for one destination: recording it and
// the helper request that follows, in an RPC or in a resync, so the two
// can never cross.
type Desired struct {
	store RouteStore

	mu     sync.RWMutex
	routes map[netip.Prefix]string // destination -> interface

	stripes [64]sync.Mutex
}

// NewDesired resumes from the saved routes.
func NewDesired(store RouteStore, saved map[netip.Prefix]string) *Desired {
	return &Desired{store: store, routes: maps.Clone(saved)}
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
	if cur, ok := d.Get(dst); ok && cur == ifname {
		return false, nil
	}
	if err := d.store.ChangeRoutes(state.RouteChange{Dst: dst, Ifname: ifname}); err != nil {
		return false, err
	}
	d.mu.Lock()
	d.routes[dst] = ifname
	d.mu.Unlock()
	return true, nil
}

// SetMany records many changes (an empty Ifname: not routed) in one
// transaction; the caller holds every lock. It returns how many changed
// the desired set.
func (d *Desired) SetMany(changes []Change) (int, error) {
	var rc []state.RouteChange
	for _, c := range changes {
		if cur, ok := d.Get(c.Dst); c.Ifname == "" && ok || c.Ifname != "" && cur != c.Ifname {
			rc = append(rc, state.RouteChange{Dst: c.Dst, Ifname: c.Ifname})
		}
	}
	if len(rc) == 0 {
		return 0, nil
	}
	if err := d.store.ChangeRoutes(rc...); err != nil {
		return 0, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, c := range rc {
		if c.Ifname == "" {
			delete(d.routes, c.Dst)
		} else {
			d.routes[c.Dst] = c.Ifname
		}
	}
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
	d.mu.Unlock()
	return true, nil
}
