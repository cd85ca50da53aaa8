package policy

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/quiltmesh/quilt-runtime/shared/wire"
)

// Policy is the set of routes the cluster may own.
type Policy struct {
	Cluster    netip.Prefix // cluster CIDR, e.g. 10.42.0.0/16
	PrefixLen  int          // length of every node subnet, e.g. 24
	Interfaces []string     // interfaces routes may point at, e.g. vxlan100
}

// Validate reports whether the policy itself is usable.
func (p Policy) Validate() error {
	if !p.Cluster.Addr().Is4() || p.Cluster != p.Cluster.Masked() ||
		p.PrefixLen < p.Cluster.Bits() || p.PrefixLen > 32 || len(p.Interfaces) == 0 {
		return fmt.Errorf("route policy %v /%d %v: want an IPv4 cluster CIDR without host bits, a node prefix length "+
			"between its length and 32, and at least one interface", p.Cluster, p.PrefixLen, p.Interfaces)
	}
	return nil
}

// CheckPrefix reports whether dst is a node subnet of the cluster.
func (p Policy) CheckPrefix(dst netip.Prefix) error {
	switch {
	case !dst.IsValid() || !dst.Addr().Is4():
		return fmt.Errorf("%v is not an IPv4 prefix (%w)", dst, wire.StatusNotIPv4)
	case dst != dst.Masked():
		return fmt.Errorf("%v has host bits set; the network is %v (%w)", dst, dst.Masked(), wire.StatusBadPrefix)
	case dst.Bits() != p.PrefixLen:
		return fmt.Errorf("%v is a /%d; node subnets are /%d (%w)", dst, dst.Bits(), p.PrefixLen, wire.StatusPrefixLen)
	case !p.Cluster.Contains(dst.Addr()):
		return fmt.Errorf("%v is outside the cluster CIDR %v (%w)", dst, p.Cluster, wire.StatusOutsideCluster)
	}
	return nil
}

// CheckInterface reports whether routes may point at the interface name.
func (p Policy) CheckInterface(name string) error {
	if !slices.Contains(p.Interfaces, name) {
		return fmt.Errorf("interface %q is not on the allow list %v (%w)", name, p.Interfaces, wire.StatusIfaceDenied)
	}
	return nil
}
