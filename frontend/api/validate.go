package api

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/quiltmesh/quilt-runtime/frontend/internal/quote"
	"github.com/quiltmesh/quilt-runtime/shared/policy"
	"github.com/quiltmesh/quilt-runtime/shared/wire"
)

// Errors of the frontend's own rules, beyond the shared policy's.
var (
	ErrEmpty     = errors.New("is empty")
	ErrSpace     = errors.New("has surrounding whitespace")
	ErrSyntax    = errors.New("is not an IPv4 prefix like 10.42.2.0/24")
	ErrOwnSubnet = errors.New("is this node's own subnet; routing it into the overlay would black-hole local containers")
	ErrIfname    = errors.New("is not a valid interface name (1-15 bytes of A-Z a-z 0-9 . _ -)")
)

// ParseDestination parses a node subnet as the agent sends it and checks it
// against the policy. what names the field in the message.
func ParseDestination(pol policy.Policy, what, s string) (netip.Prefix, error) {
	switch {
	case s == "":
		return netip.Prefix{}, fmt.Errorf("%s %w; want a /%d inside %v such as %v", what, ErrEmpty, pol.PrefixLen, pol.Cluster, example(pol))
	case strings.TrimSpace(s) != s:
		return netip.Prefix{}, fmt.Errorf("%s %s %w", what, quote.Value(s), ErrSpace)
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%s %s %w: decimal octets without leading zeros, then /length", what, quote.Value(s), ErrSyntax)
	}
	if !p.Addr().Is4() {
		return netip.Prefix{}, fmt.Errorf("%s %s is IPv6; only IPv4 prefixes are routed: %w", what, quote.Value(s), wire.StatusNotIPv4)
	}
	if err := pol.CheckPrefix(p); err != nil {
		return netip.Prefix{}, fmt.Errorf("%s %w", what, err)
	}
	return p, nil
}

func example(pol policy.Policy) netip.Prefix {
	a := pol.Cluster.Addr().As4()
	if pol.PrefixLen <= 24 && pol.Cluster.Bits() <= 16 {
		a[2] = 2
	}
	return netip.PrefixFrom(netip.AddrFrom4(a), pol.PrefixLen).Masked()
}

// ParseInterface checks an interface name's form, then the allow list. It
// returns the allow list's own copy of the name, so that the many routes
// via one interface share one string.
func ParseInterface(pol policy.Policy, s string) (string, error) {
	if s == "" || len(s) > 15 || strings.TrimLeft(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") != "" {
		return "", fmt.Errorf("via_interface %s %w", quote.Value(s), ErrIfname)
	}
	if err := pol.CheckInterface(s); err != nil {
		return "", fmt.Errorf("via_interface: %w", err)
	}
	return pol.Interfaces[slices.Index(pol.Interfaces, s)], nil
}
