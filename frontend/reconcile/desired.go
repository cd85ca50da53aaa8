package reconcile

import (
	"iter"
	"net/netip"
	"slices"
	"sync"

	"github.com/quiltmesh/quilt-runtime/frontend/route"
)

// Store makes changes to the desired routes durable. Each call returns
// once its change is on disk.
type Store interface {
	// ChangeRoutes records changes, read once; a change to an adopted
	// route confirms it.
	ChangeRoutes(changes iter.Seq[route.Route]) error
	// AdoptRoutes records routes found in the kernel as desired, adopted.
	AdoptRoutes(changes iter.Seq[route.Route]) error
}

// desired is the set of routes the agent asked for: what the kernel should
// hold, whatever it holds now. It is kept in memory and written through to
// the state file before any change is acknowledged. In memory each route
// is a key and the index of its interface's name: a node of 65,536 peers
// keeps its routes in about a megabyte.
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
	routes  map[key]uint32 // destination -> index in names of its interface, with heldBit
	names   []string       // every interface name routes have used, once; only ever appended to
	adopted map[key]struct{}

	stripes [64]sync.Mutex
}

func newDesired(store Store, saved map[netip.Prefix]string, adopted map[netip.Prefix]bool) *desired {
	d := &desired{store: store, routes: make(map[key]uint32, len(saved)), adopted: map[key]struct{}{}}
	for dst, ifname := range saved {
		d.routes[keyOf(dst)] = d.nameIndex(ifname)
	}
	for dst := range adopted {
		d.adopted[keyOf(dst)] = struct{}{}
	}
	return d
}

// nameIndex returns ifname's index in names, adding it if it is new; mu
// is held for writing (or not yet shared).
func (d *desired) nameIndex(ifname string) uint32 {
	i := slices.Index(d.names, ifname)
	if i < 0 {
		i = len(d.names)
		d.names = append(d.names, ifname)
	}
	return uint32(i)
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
	return d.getLocked(dst)
}

func (d *desired) getLocked(dst netip.Prefix) (string, bool) {
	i, ok := d.routes[keyOf(dst)]
	if !ok {
		return "", false
	}
	return d.names[i&^heldBit], true
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
	m := make(map[netip.Prefix]string, len(d.routes))
	for k, i := range d.routes {
		m[k.prefix()] = d.names[i&^heldBit]
	}
	return m
}

// snapshot returns the desired routes now, as a sorted table.
func (d *desired) snapshot() *table {
	d.mu.RLock()
	t := &table{entries: make([]uint64, 0, len(d.routes)), names: slices.Clip(d.names)}
	for k, i := range d.routes {
		t.add(k, i&^heldBit)
	}
	d.mu.RUnlock()
	t.sort()
	return t
}

// differs reports whether recording c would change the desired routes: it
// names a route that is adopted (so confirms it), or changes it. mu is
// held.
func (d *desired) differs(c route.Route) bool {
	k := keyOf(c.Dst)
	if _, adopted := d.adopted[k]; adopted {
		return true
	}
	cur, ok := d.getLocked(c.Dst)
	if c.IsRemoval() {
		return ok
	}
	return cur != c.Ifname
}

// set records changes (an empty Ifname: not routed) in one transaction;
// the caller holds their locks. A change that names an adopted route
// confirms it. It returns how many changed the desired set; only those
// are written, and the batch is not copied to pick them out.
func (d *desired) set(changes []route.Route) (int, error) {
	d.mu.RLock()
	n := 0
	for _, c := range changes {
		if d.differs(c) {
			n++
		}
	}
	d.mu.RUnlock()
	if n == 0 {
		return 0, nil
	}
	differing := func(yield func(route.Route) bool) {
		d.mu.RLock()
		defer d.mu.RUnlock()
		for _, c := range changes {
			if d.differs(c) && !yield(c) {
				return
			}
		}
	}
	if err := d.store.ChangeRoutes(differing); err != nil {
		return 0, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, c := range changes {
		if d.differs(c) {
			d.applyLocked(c, false)
		}
	}
	return n, nil
}

// adopt records routes of ours found in the kernel as desired, adopted, in
// one transaction; the caller holds every lock.
func (d *desired) adopt(found []route.Route) error {
	if err := d.store.AdoptRoutes(slices.Values(found)); err != nil {
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
	if err := d.store.ChangeRoutes(slices.Values(rc)); err != nil {
		return nil, err
	}
	d.apply(rc, false)
	return forgotten, nil
}

// apply makes recorded changes in memory.
func (d *desired) apply(rc []route.Route, adopt bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, c := range rc {
		d.applyLocked(c, adopt)
	}
}

// applyLocked makes one recorded change in memory: an empty Ifname
// deletes, and the route is adopted or, if not, confirmed. mu is held.
func (d *desired) applyLocked(c route.Route, adopt bool) {
	k := keyOf(c.Dst)
	if c.IsRemoval() {
		delete(d.routes, k)
	} else {
		d.routes[k] = d.nameIndex(c.Ifname)
	}
	if adopt {
		d.adopted[k] = struct{}{}
	} else {
		delete(d.adopted, k)
	}
}

func (d *desired) isAdopted(dst netip.Prefix) bool {
	d.mu.RLock()
	defer d.mu.RUnlock()
	_, ok := d.adopted[keyOf(dst)]
	return ok
}

func (d *desired) adoptedLen() int {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return len(d.adopted)
}

// adoptedList returns the adopted routes not yet confirmed, in order.
func (d *desired) adoptedList() []netip.Prefix {
	d.mu.RLock()
	keys := make([]key, 0, len(d.adopted))
	for k := range d.adopted {
		keys = append(keys, k)
	}
	d.mu.RUnlock()
	slices.Sort(keys)
	dsts := make([]netip.Prefix, len(keys))
	for i, k := range keys {
		dsts[i] = k.prefix()
	}
	return dsts
}

// heldBit, set in a route's value in routes, says the helper last said
// the kernel holds the route as desired, and nothing has contradicted it
// since (watch.go). Every change to a route clears it: its value is new.
// Interface indexes never come near it.
const heldBit = 1 << 31

// hold notes that the kernel holds dst via ifname, as the helper just
// answered, if that is how dst is desired and it is not adopted (an
// adopted route's next request confirms it, so it must reach Apply's
// record).
func (d *desired) hold(dst netip.Prefix, ifname string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	k := keyOf(dst)
	i, ok := d.routes[k]
	if _, adopted := d.adopted[k]; !ok || adopted || d.names[i&^heldBit] != ifname {
		return
	}
	d.routes[k] = i | heldBit
}

// release forgets that the kernel holds dst.
func (d *desired) release(dst netip.Prefix) {
	d.mu.Lock()
	defer d.mu.Unlock()
	k := keyOf(dst)
	if i, ok := d.routes[k]; ok {
		d.routes[k] = i &^ heldBit
	}
}

// releaseAll forgets that the kernel holds any route.
func (d *desired) releaseAll() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for k, i := range d.routes {
		d.routes[k] = i &^ heldBit
	}
}

// isHeld reports whether dst is desired via ifname and the kernel is known
// to hold it so.
func (d *desired) isHeld(dst netip.Prefix, ifname string) bool {
	d.mu.RLock()
	defer d.mu.RUnlock()
	i, ok := d.routes[keyOf(dst)]
	return ok && i&heldBit != 0 && d.names[i&^heldBit] == ifname
}

// heldLen is how many desired routes the kernel is known to hold.
func (d *desired) heldLen() int {
	d.mu.RLock()
	defer d.mu.RUnlock()
	n := 0
	for _, i := range d.routes {
		if i&heldBit != 0 {
			n++
		}
	}
	return n
}
