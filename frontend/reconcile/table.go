package reconcile

import (
	"encoding/binary"
	"net/netip"
	"slices"

	"github.com/quiltmesh/quilt-runtime/frontend/route"
)

// key packs an IPv4 destination into 40 bits, its address and then its
// length, so that keys order as route.Compare orders prefixes.
type key uint64

func keyOf(dst netip.Prefix) key {
	a := dst.Addr().As4()
	return key(binary.BigEndian.Uint32(a[:]))<<8 | key(dst.Bits())
}

func (k key) prefix() netip.Prefix {
	var a [4]byte
	binary.BigEndian.PutUint32(a[:], uint32(k>>8))
	return netip.PrefixFrom(netip.AddrFrom4(a), int(k&0xff))
}

// table holds many routes at once, compactly (8 bytes a route: a key and
// the index of its interface's name) and, once sorted, in destination
// order: the helper's list of our routes, a snapshot of the desired ones,
// a batch's destinations. A destination may appear more than once (the
// helper's list, where an older version left several routes of ours).
type table struct {
	entries []uint64 // key<<24 | index in names
	names   []string
}

// nameBits is how many of an entry's bits index its name.
const nameBits = 24

func (t *table) add(k key, name uint32) {
	t.entries = append(t.entries, uint64(k)<<nameBits|uint64(name))
}

// addRoute adds r, with its interface's name added to the table's names
// if it is new there. A destination that is not IPv4 cannot be ours, and
// is left out.
func (t *table) addRoute(r route.Route) {
	if !r.Dst.Addr().Is4() {
		return
	}
	i := slices.Index(t.names, r.Ifname)
	if i < 0 {
		i = len(t.names)
		t.names = append(t.names, r.Ifname)
	}
	t.add(keyOf(r.Dst), uint32(i))
}

func (t *table) sort() { slices.Sort(t.entries) }

func (t *table) len() int { return len(t.entries) }

func (t *table) key(i int) key { return key(t.entries[i] >> nameBits) }

func (t *table) name(i int) string { return t.names[t.entries[i]&(1<<nameBits-1)] }

// has reports whether the sorted table holds a route to dst.
func (t *table) has(dst netip.Prefix) bool {
	k := uint64(keyOf(dst)) << nameBits
	i, _ := slices.BinarySearch(t.entries, k)
	return i < len(t.entries) && key(t.entries[i]>>nameBits) == keyOf(dst)
}

// dsts returns the number of destinations in the sorted table.
func (t *table) dsts() int {
	n := 0
	for i := range t.entries {
		if i == 0 || t.key(i) != t.key(i-1) {
			n++
		}
	}
	return n
}

// change returns a sorted copy of the table of desired routes with the
// routes of add added (they are not in it) and the destinations of drop
// dropped.
func (t *table) change(add []route.Route, drop []netip.Prefix) *table {
	c := &table{entries: make([]uint64, 0, t.len()+len(add)), names: slices.Clip(t.names)}
	dropped := destinations(nil)
	for _, dst := range drop {
		dropped.add(keyOf(dst), 0)
	}
	dropped.sort()
	for i := range t.entries {
		if !dropped.has(t.key(i).prefix()) {
			c.entries = append(c.entries, t.entries[i])
		}
	}
	for _, r := range add {
		c.addRoute(r)
	}
	c.sort()
	return c
}
