package policy

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/quiltmesh/quilt-runtime/shared/wire"
)

var Default = Policy{Cluster: netip.MustParsePrefix("10.42.0.0/16"), PrefixLen: 24, Interfaces: []string{"vxlan100"}}

func TestCheckPrefix(t *testing.T) {
	for _, tc := range []struct {
		dst  string
		want error
	}{
		{"10.42.2.0/24", nil},
		{"10.42.0.0/24", nil},
		{"10.42.255.0/24", nil},
		{"10.42.2.1/24", wire.StatusBadPrefix},
		{"10.42.0.0/16", wire.StatusPrefixLen},
		{"10.42.2.0/25", wire.StatusPrefixLen},
		{"10.42.2.0/23", wire.StatusPrefixLen},
		{"10.42.2.7/32", wire.StatusPrefixLen},
		{"0.0.0.0/0", wire.StatusPrefixLen},
		{"10.43.0.0/24", wire.StatusOutsideCluster},
		{"10.41.255.0/24", wire.StatusOutsideCluster},
		{"fd00::/24", wire.StatusNotIPv4},
		{"::ffff:10.42.2.0/120", wire.StatusNotIPv4},
	} {
		err := Default.CheckPrefix(netip.MustParsePrefix(tc.dst))
		if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
			t.Errorf("%s: got %v, want %v", tc.dst, err, tc.want)
		}
		if err != nil && !strings.Contains(err.Error(), tc.dst) {
			t.Errorf("%s: the message %q does not name the value", tc.dst, err)
		}
	}
	if err := Default.CheckPrefix(netip.Prefix{}); !errors.Is(err, wire.StatusNotIPv4) {
		t.Errorf("no prefix: got %v", err)
	}
}

func TestCheckInterface(t *testing.T) {
	p := Policy{Cluster: Default.Cluster, PrefixLen: 24, Interfaces: []string{"vxlan100", "vxlan200"}}
	for name, ok := range map[string]bool{"vxlan100": true, "vxlan200": true, "vxlan1000": false, "VXLAN100": false, "": false, "eth0": false, "vxlan100 ": false} {
		err := p.CheckInterface(name)
		if (err == nil) != ok || (err != nil && !errors.Is(err, wire.StatusIfaceDenied)) {
			t.Errorf("%q: got %v", name, err)
		}
	}
}

func TestValidate(t *testing.T) {
	if err := Default.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, p := range []Policy{
		{Cluster: netip.MustParsePrefix("10.42.0.1/16"), PrefixLen: 24, Interfaces: []string{"x"}},
		{Cluster: netip.MustParsePrefix("fd00::/16"), PrefixLen: 24, Interfaces: []string{"x"}},
		{Cluster: netip.MustParsePrefix("10.42.0.0/16"), PrefixLen: 8, Interfaces: []string{"x"}},
		{Cluster: netip.MustParsePrefix("10.42.0.0/16"), PrefixLen: 33, Interfaces: []string{"x"}},
		{Cluster: netip.MustParsePrefix("10.42.0.0/16"), PrefixLen: 24},
		{},
	} {
		if p.Validate() == nil {
			t.Errorf("%+v: accepted", p)
		}
	}
}
