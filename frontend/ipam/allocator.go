package ipam

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/quiltmesh/quilt-runtime/frontend/internal/quote"
)

// Errors of the allocator, besides ErrExhausted.
var (
	ErrNoSubnet    = errors.New("this node has no subnet yet: the agent's ConfigureNodeSubnet comes first")
	ErrSubnetInUse = errors.New("container IPs are live in the current subnet")
	ErrContainerID = errors.New("is not a valid container ID (1-128 bytes of A-Z a-z 0-9 _ . -, starting with a letter or digit)")
)

// MaxIDLen is the longest container ID accepted.
const MaxIDLen = 128

// CheckID reports whether id is a container ID: the characters CNI
// allows, bounded in length so it stays a small key and one log field.
func CheckID(id string) error {
	ok := id != "" && len(id) <= MaxIDLen && strings.IndexByte("_.-", id[0]) < 0 &&
		strings.TrimLeft(id, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-") == ""
	if ok {
		return nil
	}
	return fmt.Errorf("container_id %s %w", quote.Value(id), ErrContainerID)
}

// Store makes the allocator's changes durable. Each call returns only
// once its change is on disk.
type Store interface {
	// SetSubnet records a new node subnet (no allocation may be live).
	SetSubnet(netip.Prefix) error
	// PutAllocation records an allocation and that ip was handed out last.
	PutAllocation(id string, ip netip.Addr) error
	// DeleteAllocation forgets an allocation.
	DeleteAllocation(id string) error
}

// Allocation is one container's address.
type Allocation struct {
	ContainerID string
	IP          netip.Addr
}

// Allocator hands out the node subnet's addresses. It is safe for
// concurrent use.
type Allocator struct {
	offsets Offsets
	store   Store

	mu   sync.Mutex
	pool Pool // zero until a subnet is configured
	byID map[string]netip.Addr
	byIP map[netip.Addr]string
	last netip.Addr // handed out most recently
}

// NewAllocator returns an allocator resuming from saved state: the subnet
// (invalid if none yet), the live allocations and the last address handed
// out. Saved allocations outside the subnet, or two containers with one
// address, mean the state is corrupt.
func NewAllocator(o Offsets, s Store, subnet netip.Prefix, allocs []Allocation, last netip.Addr) (*Allocator, error) {
	a := &Allocator{offsets: o, store: s, byID: map[string]netip.Addr{}, byIP: map[netip.Addr]string{}, last: last}
	if !subnet.IsValid() {
		if len(allocs) > 0 {
			return nil, fmt.Errorf("%d allocations are saved but no subnet", len(allocs))
		}
		return a, nil
	}
	var err error
	if a.pool, err = NewPool(subnet, o); err != nil {
		return nil, err
	}
	for _, al := range allocs {
		if err := CheckID(al.ContainerID); err != nil {
			return nil, fmt.Errorf("saved allocation: %w", err)
		}
		if !subnet.Contains(al.IP) || al.IP == subnet.Addr() || al.IP == a.pool.Gateway {
			return nil, fmt.Errorf("saved allocation of %s for container %q is not a host address of subnet %v other than the gateway", al.IP, al.ContainerID, subnet)
		}
		if other, dup := a.byIP[al.IP]; dup {
			return nil, fmt.Errorf("saved allocations give %s to both container %q and %q", al.IP, other, al.ContainerID)
		}
		a.byID[al.ContainerID], a.byIP[al.IP] = al.IP, al.ContainerID
	}
	return a, nil
}

// Pool returns the node's pool, and false if no subnet is configured.
func (a *Allocator) Pool() (Pool, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.pool, a.pool.Subnet.IsValid()
}

// Count returns the number of live allocations.
func (a *Allocator) Count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.byID)
}

// SetSubnet makes subnet the node's, if it is not already. It refuses to
// move a node that has live allocations, naming the current subnet and
// their number. changed says whether anything was written.
func (a *Allocator) SetSubnet(subnet netip.Prefix) (changed bool, err error) {
	pool, err := NewPool(subnet, a.offsets)
	if err != nil {
		return false, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case subnet == a.pool.Subnet:
		return false, nil
	case len(a.byID) > 0:
		return false, fmt.Errorf("subnet %v: this node already allocates from %v and %d container IPs are live; release them first (%w)",
			subnet, a.pool.Subnet, len(a.byID), ErrSubnetInUse)
	}
	if err := a.store.SetSubnet(subnet); err != nil {
		return false, err
	}
	a.pool, a.last = pool, netip.Addr{}
	return true, nil
}

// Allocate returns the container's address, handing out the next free one
// if it has none. existing says it already had it.
func (a *Allocator) Allocate(id string) (ip netip.Addr, pool Pool, existing bool, err error) {
	if err := CheckID(id); err != nil {
		return netip.Addr{}, Pool{}, false, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.pool.Subnet.IsValid() {
		return netip.Addr{}, Pool{}, false, ErrNoSubnet
	}
	if ip, ok := a.byID[id]; ok {
		return ip, a.pool, true, nil
	}
	ip, err = a.pool.next(a.last, func(x netip.Addr) bool { _, used := a.byIP[x]; return used })
	if err != nil {
		return netip.Addr{}, Pool{}, false, err
	}
	if err := a.store.PutAllocation(id, ip); err != nil {
		return netip.Addr{}, Pool{}, false, err
	}
	a.byID[id], a.byIP[ip], a.last = ip, id, ip
	return ip, a.pool, false, nil
}

// Release frees the container's address. Releasing a container that has
// none changes nothing and is not an error: released is false.
func (a *Allocator) Release(id string) (ip netip.Addr, released bool, err error) {
	if err := CheckID(id); err != nil {
		return netip.Addr{}, false, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	ip, ok := a.byID[id]
	if !ok {
		return netip.Addr{}, false, nil
	}
	if err := a.store.DeleteAllocation(id); err != nil {
		return netip.Addr{}, false, err
	}
	delete(a.byID, id)
	delete(a.byIP, ip)
	return ip, true, nil
}

// List returns the live allocations, ordered by address.
func (a *Allocator) List() []Allocation {
	a.mu.Lock()
	out := make([]Allocation, 0, len(a.byID))
	for id, ip := range a.byID {
		out = append(out, Allocation{id, ip})
	}
	a.mu.Unlock()
	slices.SortFunc(out, func(x, y Allocation) int {
		return cmp.Or(x.IP.Compare(y.IP), strings.Compare(x.ContainerID, y.ContainerID))
	})
	return out
}
