package bench

import (
	"fmt"
	"net/netip"
)

// Plan is the set of routes one run uses: the node's own subnet, which
// ConfigureNodeSubnet gets and no workload touches, and the peers' subnets,
// which every workload adds and removes, in this order.
type Plan struct {
	Cluster netip.Prefix
	Node    netip.Prefix
	Peers   []netip.Prefix
	Capped  bool // fewer peers than asked: the cluster has no more subnets
}

// NewPlan takes the cluster's node subnets (/bits) in address order: the
// first is the node's own, the next n are its peers. A cluster with fewer
// than n+1 subnets gives every other one (10.0.0.0/8 with /24s holds
// 65,536: the node and 65,535 peers).
func NewPlan(cluster netip.Prefix, bits, n int) (Plan, error) {
	if !cluster.Addr().Is4() || cluster != cluster.Masked() || bits < cluster.Bits() || bits > 32 || n < 1 {
		return Plan{}, fmt.Errorf("plan: cluster %v, /%d subnets, %d peers: want an IPv4 CIDR without host bits, a length inside it, and n >= 1", cluster, bits, n)
	}
	total := uint64(1) << (bits - cluster.Bits())
	p := Plan{Cluster: cluster, Node: netip.PrefixFrom(cluster.Addr(), bits)}
	if uint64(n) >= total {
		n, p.Capped = int(total-1), true
	}
	base := u32(cluster.Addr())
	for i := 1; i <= n; i++ {
		p.Peers = append(p.Peers, netip.PrefixFrom(a4(base+uint32(i)<<(32-bits)), bits))
	}
	return p, nil
}

func u32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func a4(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// spread picks k of idx, evenly spaced from the first, or all of them if
// there are no more than k.
func spread(idx []int, k int) []int {
	if len(idx) <= k {
		return idx
	}
	out := make([]int, k)
	for j := range out {
		out[j] = idx[j*len(idx)/k]
	}
	return out
}
