package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Offsets place the gateway and the allocation range inside a node subnet,
// as host numbers: with a /24, Gateway 1 is .1 and First 10, Last 254 is
// .10 to .254.
type Offsets struct {
	Gateway, First, Last uint32
}

// DefaultOffsets are the gateway .1 and the range .10-.254.
var DefaultOffsets = Offsets{Gateway: 1, First: 10, Last: 254}

// ParseGateway parses --gateway: a host number, "1" or ".1".
func ParseGateway(s string) (uint32, error) {
	n, err := strconv.ParseUint(strings.TrimPrefix(s, "."), 10, 32)
	if err != nil {
		return 0, fmt.Errorf("gateway %q: want a host number such as 1 or .1", s)
	}
	return uint32(n), nil
}

// ParseRange parses --ip-range: two host numbers, "10-254" or ".10-.254".
func ParseRange(s string) (first, last uint32, err error) {
	a, b, ok := strings.Cut(s, "-")
	f, ferr := strconv.ParseUint(strings.TrimPrefix(a, "."), 10, 32)
	l, lerr := strconv.ParseUint(strings.TrimPrefix(b, "."), 10, 32)
	if !ok || ferr != nil || lerr != nil || f > l {
		return 0, 0, fmt.Errorf("ip range %q: want FIRST-LAST host numbers with FIRST <= LAST, such as 10-254", s)
	}
	return uint32(f), uint32(l), nil
}

// Check reports whether the offsets fit a subnet of the given prefix
// length: the gateway and the range inside it, clear of the network and
// broadcast addresses.
func (o Offsets) Check(bits int) error {
	if bits < 1 || bits > 30 {
		return fmt.Errorf("a /%d subnet has no room for a gateway and containers", bits)
	}
	top := uint32(1)<<(32-bits) - 2 // the highest host number below broadcast
	switch {
	case o.Gateway < 1 || o.Gateway > top:
		return fmt.Errorf("gateway .%d is outside the hosts of a /%d (1 to %d)", o.Gateway, bits, top)
	case o.First < 1 || o.Last > top || o.First > o.Last:
		return fmt.Errorf("ip range %d-%d is outside the hosts of a /%d (1 to %d)", o.First, o.Last, bits, top)
	case o.First == o.Last && o.First == o.Gateway:
		return fmt.Errorf("ip range %d-%d holds only the gateway", o.First, o.Last)
	}
	return nil
}

// Pool is a node subnet with its gateway and allocation range.
type Pool struct {
	Subnet      netip.Prefix
	Gateway     netip.Addr
	First, Last netip.Addr // the range, inclusive
}

// NewPool places the offsets in an IPv4 subnet.
func NewPool(subnet netip.Prefix, o Offsets) (Pool, error) {
	if !subnet.Addr().Is4() || subnet != subnet.Masked() {
		return Pool{}, fmt.Errorf("subnet %v: want an IPv4 network address", subnet)
	}
	if err := o.Check(subnet.Bits()); err != nil {
		return Pool{}, fmt.Errorf("subnet %v: %w", subnet, err)
	}
	at := func(n uint32) netip.Addr { return add(subnet.Addr(), n) }
	return Pool{Subnet: subnet, Gateway: at(o.Gateway), First: at(o.First), Last: at(o.Last)}, nil
}

// Allocatable reports whether a may be handed to a container.
func (p Pool) Allocatable(a netip.Addr) bool {
	return a != p.Gateway && a.Compare(p.First) >= 0 && a.Compare(p.Last) <= 0
}

// Capacity is the number of addresses that may be handed out.
func (p Pool) Capacity() int {
	n := int(u32(p.Last) - u32(p.First) + 1)
	if p.Gateway.Compare(p.First) >= 0 && p.Gateway.Compare(p.Last) <= 0 {
		n--
	}
	return n
}

// Range names the range for messages, e.g. 10.42.1.10-10.42.1.254.
func (p Pool) Range() string { return p.First.String() + "-" + p.Last.String() }

// ErrExhausted means every address of the range is allocated.
var ErrExhausted = errors.New("no free address")

// next returns the first free address after the given one, wrapping at
// the end of the range, or ErrExhausted.
func (p Pool) next(after netip.Addr, used func(netip.Addr) bool) (netip.Addr, error) {
	a := after
	if !a.IsValid() || a.Compare(p.First) < 0 || a.Compare(p.Last) > 0 {
		a = p.Last // so the search starts at First
	}
	for range u32(p.Last) - u32(p.First) + 1 {
		if a = a.Next(); !a.IsValid() || a.Compare(p.Last) > 0 {
			a = p.First
		}
		if p.Allocatable(a) && !used(a) {
			return a, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("subnet %v is exhausted: all %d addresses of the range %s are allocated (%w)", p.Subnet, p.Capacity(), p.Range(), ErrExhausted)
}

func u32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func add(a netip.Addr, n uint32) netip.Addr {
	v := u32(a) + n
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}
