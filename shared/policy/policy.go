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

// Default is the policy of a stock install.
var Default = Policy{
	Cluster:    netip.MustParsePrefix("10.42.0.0/16"),
	PrefixLen:  24,
	Interfaces: []string{"vxlan100"},
}

// Validate reports whether the policy itself is usable.
func (p Policy) Validate() error {
	switch {
	case !p.Cluster.IsValid() || !p.Cluster.Addr().Is4() || p.Cluster != p.Cluster.Masked():
		return fmt.Errorf("cluster CIDR %v must be an IPv4 network without host bits", p.Cluster)
	case p.PrefixLen < p.Cluster.Bits() || p.PrefixLen > 32:
		return fmt.Errorf("node prefix length %d must be between the cluster's /%d and /32", p.PrefixLen, p.Cluster.Bits())
	case len(p.Interfaces) == 0:
		return fmt.Errorf("at least one allowed interface is required")
	}
	return nil
}

// CheckPrefix reports whether dst is a node subnet of the cluster.
func (p Policy) CheckPrefix(dst netip.Prefix) error {
	switch {
	case !dst.IsValid() || !dst.Addr().Is4():
		return fmt.Errorf("%w: %v is not an IPv4 prefix", wire.StatusNotIPv4, dst)
	case dst != dst.Masked():
		return fmt.Errorf("%w: %v has host bits set (the network is %v)", wire.StatusBadPrefix, dst, dst.Masked())
	case dst.Bits() != p.PrefixLen:
		return fmt.Errorf("%w: %v is a /%d, node subnets are /%d", wire.StatusPrefixLen, dst, dst.Bits(), p.PrefixLen)
	case !p.Cluster.Contains(dst.Addr()):
		return fmt.Errorf("%w: %v is outside the cluster CIDR %v", wire.StatusOutsideCluster, dst, p.Cluster)
	}
	return nil
}

// CheckInterface reports whether routes may point at the interface name.
func (p Policy) CheckInterface(name string) error {
	if !slices.Contains(p.Interfaces, name) {
		return fmt.Errorf("%w: interface %q is not on the allow list %v", wire.StatusIfaceDenied, name, p.Interfaces)
	}
	return nil
}
