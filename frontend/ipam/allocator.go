package ipam

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/quiltmesh/quilt-runtime/frontend/internal/quote"
)

// Errors of the allocator, besides ErrExhausted.
var (
	ErrNoSubnet    = errors.New("this node has no subnet yet: the agent's ConfigureNodeSubnet comes first")
	ErrSubnetInUse = errors.New("container IPs are live in the current subnet")
	ErrContainerID = errors.New("is not a valid container ID (1-128 bytes of A-Z a-z 0-9 _ . -, starting with a letter or digit)")
	ErrIfname      = errors.New("is not a valid interface name (1-15 bytes of printable ASCII other than / and :, not . or ..)")
	ErrNetwork     = errors.New("is not a valid CNI network name (1-128 bytes of A-Z a-z 0-9 _ . -, starting with a letter or digit)")
)

// MaxIDLen is the longest container ID, and the longest network name,
// accepted.
const MaxIDLen = 128

// MaxIfnameLen is the longest interface name: the kernel's IFNAMSIZ less
// its NUL.
const MaxIfnameLen = 15

// nameChars are the characters CNI allows in container IDs and network
// names.
const nameChars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-"

// isName reports whether s is 1 to MaxIDLen of nameChars, not starting
// with punctuation.
func isName(s string) bool {
	return s != "" && len(s) <= MaxIDLen && strings.IndexByte("_.-", s[0]) < 0 && strings.TrimLeft(s, nameChars) == ""
}

// CheckID reports whether id is a container ID: the characters CNI
// allows, bounded in length so it stays a small key and one log field.
func CheckID(id string) error {
	if isName(id) {
		return nil
	}
	return fmt.Errorf("container_id %s %w", quote.Value(id), ErrContainerID)
}

// CheckNetwork reports whether name is a CNI network name; empty means
// none (an allocation made through QuiltAdmin without one).
func CheckNetwork(name string) error {
	if name == "" || isName(name) {
		return nil
	}
	return fmt.Errorf("network %s %w", quote.Value(name), ErrNetwork)
}

// CheckIfname reports whether name can be a Linux interface name; empty
// means none (an allocation for the container as a whole, as QuiltAdmin
// gives without an interface).
func CheckIfname(name string) error {
	ok := len(name) <= MaxIfnameLen && name != "." && name != ".."
	for i := 0; ok && i < len(name); i++ {
		ok = name[i] > ' ' && name[i] < 0x7f && name[i] != '/' && name[i] != ':'
	}
	if ok {
		return nil
	}
	return fmt.Errorf("interface_name %s %w", quote.Value(name), ErrIfname)
}

// Key names one allocation: an interface of a container. CNI allocates
// per container ID and interface name, so one container with two
// interfaces has two addresses; an empty Ifname is the container's one
// address given through QuiltAdmin without an interface.
type Key struct {
	ContainerID string
	Ifname      string
}

// Check reports whether both halves of the key are valid.
func (k Key) Check() error {
	if err := CheckID(k.ContainerID); err != nil {
		return err
	}
	return CheckIfname(k.Ifname)
}

// String is "container/interface", or the container ID alone.
func (k Key) String() string {
	if k.Ifname == "" {
		return k.ContainerID
	}
	return k.ContainerID + "/" + k.Ifname
}

// Allocation is one interface's address, and the CNI network that asked
// for it (empty when it came through QuiltAdmin without one).
type Allocation struct {
	Key
	IP      netip.Addr
	Network string
}

// Store makes the allocator's changes durable. Each call returns only
// once its change is on disk.
type Store interface {
	// SetSubnet records a new node subnet (no allocation may be live).
	SetSubnet(netip.Prefix) error
	// PutAllocation records an allocation and that its address was handed
	// out last.
	PutAllocation(Allocation) error
	// DeleteAllocations forgets allocations, all in one change.
	DeleteAllocations(...Key) error
}

// entry is a live allocation in memory.
type entry struct {
	ip      netip.Addr
	network string
	since   time.Time // when it was made, or loaded at start: the garbage collector's grace runs from here
	// saving is set while the allocation's making or release is on its way
	// to the state file, and closed once it is there (or failed): until
	// then nobody is answered about the key, and its address, reserved,
	// is handed to no one else.
	saving chan struct{}
}

// Allocator hands out the node subnet's addresses. It is safe for
// concurrent use. It does not hold its lock while the store writes, so
// that concurrent allocations and releases share the store's commits
// (state.Store commits what arrives while one is in flight together).
type Allocator struct {
	offsets Offsets
	store   Store
	now     func() time.Time

	mu    sync.Mutex
	pool  Pool // zero until a subnet is configured
	byKey map[Key]entry
	byIP  map[netip.Addr]Key
	last  netip.Addr // handed out most recently
}

// NewAllocator returns an allocator resuming from saved state: the subnet
// (invalid if none yet), the live allocations and the last address handed
// out. Saved allocations outside the subnet, or two interfaces with one
// address, mean the state is corrupt. Saved allocations count as made now
// for Collect's grace period: their age is not saved.
func NewAllocator(o Offsets, s Store, subnet netip.Prefix, allocs []Allocation, last netip.Addr) (*Allocator, error) {
	a := &Allocator{offsets: o, store: s, now: time.Now, byKey: map[Key]entry{}, byIP: map[netip.Addr]Key{}, last: last}
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
	loaded := a.now()
	for _, al := range allocs {
		if err := errors.Join(al.Key.Check(), CheckNetwork(al.Network)); err != nil {
			return nil, fmt.Errorf("saved allocation: %w", err)
		}
		if !subnet.Contains(al.IP) || al.IP == subnet.Addr() || al.IP == a.pool.Gateway {
			return nil, fmt.Errorf("saved allocation of %s for %q is not a host address of subnet %v other than the gateway", al.IP, al.Key, subnet)
		}
		if other, dup := a.byIP[al.IP]; dup {
			return nil, fmt.Errorf("saved allocations give %s to both %q and %q", al.IP, other, al.Key)
		}
		if _, dup := a.byKey[al.Key]; dup {
			return nil, fmt.Errorf("saved allocations give %q two addresses", al.Key)
		}
		a.byKey[al.Key], a.byIP[al.IP] = entry{ip: al.IP, network: al.Network, since: loaded}, al.Key
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
	return len(a.byKey)
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
	case len(a.byKey) > 0:
		return false, fmt.Errorf("subnet %v: this node already allocates from %v and %d container IPs are live; release them first (%w)",
			subnet, a.pool.Subnet, len(a.byKey), ErrSubnetInUse)
	}
	if err := a.store.SetSubnet(subnet); err != nil {
		return false, err
	}
	a.pool, a.last = pool, netip.Addr{}
	return true, nil
}

// Allocate returns the interface's address, handing out the next free one
// if it has none, on behalf of a CNI network (empty: none). existing says
// it already had it; an existing allocation keeps the network it was
// made for. It returns once the allocation is in the state file.
func (a *Allocator) Allocate(k Key, network string) (ip netip.Addr, pool Pool, existing bool, err error) {
	if err := errors.Join(k.Check(), CheckNetwork(network)); err != nil {
		return netip.Addr{}, Pool{}, false, err
	}
	a.mu.Lock()
	for a.byKey[k].saving != nil { // made or released right now: wait for the store's word
		a.wait(k)
	}
	if !a.pool.Subnet.IsValid() {
		a.mu.Unlock()
		return netip.Addr{}, Pool{}, false, ErrNoSubnet
	}
	pool = a.pool
	if e, ok := a.byKey[k]; ok {
		a.mu.Unlock()
		return e.ip, pool, true, nil
	}
	ip, err = a.pool.next(a.last, func(x netip.Addr) bool { _, used := a.byIP[x]; return used })
	if err != nil {
		a.mu.Unlock()
		return netip.Addr{}, Pool{}, false, err
	}
	saving := make(chan struct{})
	a.byKey[k], a.byIP[ip] = entry{ip: ip, network: network, since: a.now(), saving: saving}, k
	last := a.last
	a.last = ip
	a.mu.Unlock()
	err = a.store.PutAllocation(Allocation{Key: k, IP: ip, Network: network})
	a.mu.Lock()
	defer a.mu.Unlock()
	defer close(saving)
	if err != nil {
		a.forget(k, a.byKey[k])
		if a.last == ip {
			a.last = last
		}
		return netip.Addr{}, Pool{}, false, err
	}
	a.saved(k)
	return ip, pool, false, nil
}

// wait waits, with a.mu held and given up meanwhile, until k's change in
// flight is in the store (or failed).
func (a *Allocator) wait(k Key) {
	saving := a.byKey[k].saving
	a.mu.Unlock()
	<-saving
	a.mu.Lock()
}

// saved marks k's allocation as in the store; a.mu is held.
func (a *Allocator) saved(k Key) {
	e := a.byKey[k]
	e.saving = nil
	a.byKey[k] = e
}

// Release frees the interface's address. Releasing one that has none
// changes nothing and is not an error: released is false. The address is
// handed out again only once its release is in the state file.
func (a *Allocator) Release(k Key) (ip netip.Addr, released bool, err error) {
	if err := k.Check(); err != nil {
		return netip.Addr{}, false, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for a.byKey[k].saving != nil {
		a.wait(k)
	}
	e, ok := a.byKey[k]
	if !ok {
		return netip.Addr{}, false, nil
	}
	if err := a.release([]Key{k}); err != nil {
		return netip.Addr{}, false, err
	}
	return e.ip, true, nil
}

// release has the store forget the keys' allocations, which are in it,
// and then forgets them; a.mu is held, and given up while the store
// writes.
func (a *Allocator) release(keys []Key) error {
	saving := make(chan struct{})
	defer close(saving)
	for _, k := range keys {
		e := a.byKey[k]
		e.saving = saving
		a.byKey[k] = e
	}
	a.mu.Unlock()
	err := a.store.DeleteAllocations(keys...)
	a.mu.Lock()
	for _, k := range keys {
		if err != nil {
			a.saved(k)
		} else {
			a.forget(k, a.byKey[k])
		}
	}
	return err
}

func (a *Allocator) forget(k Key, e entry) {
	delete(a.byKey, k)
	delete(a.byIP, e.ip)
}

// Collect releases, in one change, every allocation of the CNI network
// whose key is not in keep and that was made before notAfter: CNI's GC,
// where keep is every attachment the container runtime still knows and
// the grace period before now protects an ADD the runtime's list may not
// show yet. Allocations of other networks, and those made without one,
// are never collected, nor those on their way to the state file. It
// returns what it released, ordered by address.
func (a *Allocator) Collect(network string, keep map[Key]bool, notAfter time.Time) ([]Allocation, error) {
	if err := CheckNetwork(network); err != nil || network == "" {
		return nil, cmp.Or(err, fmt.Errorf("network %s %w", quote.Value(network), ErrNetwork))
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	var stale []Allocation
	var keys []Key
	for k, e := range a.byKey {
		if e.network == network && !keep[k] && !e.since.After(notAfter) && e.saving == nil {
			stale = append(stale, Allocation{k, e.ip, e.network})
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return nil, nil
	}
	if err := a.release(keys); err != nil {
		return nil, err
	}
	sortAllocations(stale)
	return stale, nil
}

// List returns the live allocations, ordered by address.
func (a *Allocator) List() []Allocation {
	a.mu.Lock()
	out := make([]Allocation, 0, len(a.byKey))
	for k, e := range a.byKey {
		out = append(out, Allocation{k, e.ip, e.network})
	}
	a.mu.Unlock()
	sortAllocations(out)
	return out
}

func sortAllocations(s []Allocation) {
	slices.SortFunc(s, func(x, y Allocation) int {
		return cmp.Or(x.IP.Compare(y.IP), strings.Compare(x.Key.String(), y.Key.String()))
	})
}
