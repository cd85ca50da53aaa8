package api_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/quiltmesh/quilt-runtime/frontend/api"
	"github.com/quiltmesh/quilt-runtime/frontend/internal/quote"
	"github.com/quiltmesh/quilt-runtime/frontend/internal/testkit"
	"github.com/quiltmesh/quilt-runtime/shared/wire"
)

func TestParseDestinationRejects(t *testing.T) {
	huge := strings.Repeat("1", 1<<20)
	for _, tc := range []struct {
		in   string
		want error // nil: any error
	}{
		{"", api.ErrEmpty}, {" ", api.ErrSpace}, {" 10.42.2.0/24", api.ErrSpace}, {"10.42.2.0/24 ", api.ErrSpace},
		{"10.42.2.0/24\n", api.ErrSpace}, {"\t10.42.2.0/24", api.ErrSpace}, {"10.42.2.0/24\x00", api.ErrSyntax},
		{huge, api.ErrSyntax}, {"10.42.2.0", api.ErrSyntax}, {"10.42.2.0/", api.ErrSyntax}, {"/24", api.ErrSyntax},
		{"10.42.2/24", api.ErrSyntax}, {"10.042.2.0/24", api.ErrSyntax}, {"10.42.02.0/24", api.ErrSyntax},
		{"10.42.256.0/24", api.ErrSyntax}, {"10.42.2.0/024", api.ErrSyntax}, {"10.42.2.0/33", api.ErrSyntax},
		{"0x0a.42.2.0/24", api.ErrSyntax}, {"012.42.2.0/24", api.ErrSyntax}, {"10.42.２.0/24", api.ErrSyntax},
		{"١٠.42.2.0/24", api.ErrSyntax}, {"10.42.2.0/+24", api.ErrSyntax}, {"10.42.2.0%eth0/24", api.ErrSyntax},
		{"10.42.2.0/24/24", api.ErrSyntax}, {"10,42,2,0/24", api.ErrSyntax},
		{"fd00::/24", wire.StatusNotIPv4}, {"::ffff:10.42.2.0/120", wire.StatusNotIPv4}, {"::/0", wire.StatusNotIPv4},
		{"10.42.2.1/24", wire.StatusBadPrefix}, {"10.42.2.255/24", wire.StatusBadPrefix},
		{"0.0.0.0/0", wire.StatusPrefixLen}, {"10.42.2.7/32", wire.StatusPrefixLen}, {"10.42.2.0/23", wire.StatusPrefixLen},
		{"10.42.2.0/25", wire.StatusPrefixLen}, {"10.42.0.0/16", wire.StatusPrefixLen}, {"10.0.0.0/8", wire.StatusPrefixLen},
		{"10.43.2.0/24", wire.StatusOutsideCluster}, {"10.41.255.0/24", wire.StatusOutsideCluster},
		{"192.168.1.0/24", wire.StatusOutsideCluster}, {"255.255.255.0/24", wire.StatusOutsideCluster},
	} {
		_, err := api.ParseDestination(testkit.Policy, "destination", tc.in)
		name := quote.Value(tc.in)
		switch {
		case err == nil:
			t.Errorf("%s: accepted", name)
		case tc.want != nil && !errors.Is(err, tc.want):
			t.Errorf("%s: got %v, want %v", name, err, tc.want)
		case strings.ContainsAny(err.Error(), "\n\x00") || len(err.Error()) > 300:
			t.Errorf("%s: the message must be one short line: %q", name, err)
		case !strings.Contains(err.Error(), "destination"):
			t.Errorf("%s: the message %q does not name the field", name, err)
		case tc.in != "" && !strings.Contains(err.Error(), strings.Trim(quote.Value(tc.in)[:min(20, len(quote.Value(tc.in)))], `"`)[:min(8, len(tc.in))]):
			t.Errorf("%s: the message %q does not name the value", name, err)
		}
	}
	for _, ok := range []string{"10.42.0.0/24", "10.42.2.0/24", "10.42.255.0/24"} {
		if p, err := api.ParseDestination(testkit.Policy, "destination", ok); err != nil || p.String() != ok {
			t.Errorf("%s: %v %v", ok, p, err)
		}
	}
}

func TestParseInterface(t *testing.T) {
	for _, bad := range []string{"", " ", "vxlan100 ", "vxlan1000", "VXLAN100", "eth0", "lo", "../vxlan100", "/dev/vxlan100",
		"vxlan100;rm -rf /", "vxlan100$(id)", "vxlan100\n", "vxlan100\x00", "a234567890123456", strings.Repeat("v", 1<<20), "vxlan 100", "vxlän100"} {
		_, err := api.ParseInterface(testkit.Policy, bad)
		if err == nil || strings.ContainsAny(err.Error(), "\n\x00") || len(err.Error()) > 300 || !strings.Contains(err.Error(), "via_interface") {
			t.Errorf("%s: got %v", quote.Value(bad), err)
		}
	}
	if _, err := api.ParseInterface(testkit.Policy, "vxlan1000"); !errors.Is(err, wire.StatusIfaceDenied) {
		t.Errorf("vxlan1000: %v", err)
	}
	if got, err := api.ParseInterface(testkit.Policy, "vxlan100"); err != nil || got != "vxlan100" {
		t.Fatal(got, err)
	}
}

// FuzzParseDestination: anything accepted formats back to exactly the input.
func FuzzParseDestination(f *testing.F) {
	for _, s := range []string{"10.42.2.0/24", "10.42.2.1/24", "10.042.2.0/24", "::ffff:10.42.2.0/120", " 10.42.2.0/24"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := api.ParseDestination(testkit.Policy, "destination", s)
		if err == nil && p.String() != s {
			t.Fatalf("accepted %q as %v", s, p)
		}
		if err != nil && strings.ContainsAny(err.Error(), "\n\r") {
			t.Fatalf("multi-line message for %q: %q", s, err)
		}
	})
}

// FuzzParseInterface: anything accepted is an allowed name, unchanged;
// every refusal is one short line.
func FuzzParseInterface(f *testing.F) {
	for _, s := range []string{"vxlan100", "vxlan1000", "VXLAN100", "", "../x", "vxlan100\x00", "a;b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := api.ParseInterface(testkit.Policy, s)
		if err == nil && (got != s || s != "vxlan100") {
			t.Fatalf("accepted %q as %q", s, got)
		}
		if err != nil && (strings.ContainsAny(err.Error(), "\n\r\x00") || len(err.Error()) > 300) {
			t.Fatalf("message for %q: %q", s, err)
		}
	})
}
