package api_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/quiltmesh/quilt-runtime/frontend/api"
	"github.com/quiltmesh/quilt-runtime/frontend/helperclient"
	"github.com/quiltmesh/quilt-runtime/frontend/internal/testkit"
	"github.com/quiltmesh/quilt-runtime/frontend/ipam"
	"github.com/quiltmesh/quilt-runtime/proto/quiltpb"
	"github.com/quiltmesh/quilt-runtime/shared/wire"
)

func TestAgentSequence(t *testing.T) {
	fake := testkit.New()
	var log strings.Builder
	c := runtimeClient(t, newNode(t, fake, &log))
	ctx := context.Background()
	ok := func(what string, success bool, msg string, err error) {
		t.Helper()
		if err != nil || !success || msg != "" {
			t.Fatalf("%s: success=%v error=%q err=%v", what, success, msg, err)
		}
	}
	r1, err := c.ConfigureNodeSubnet(ctx, &quiltpb.ConfigureNodeSubnetRequest{Subnet: "10.42.1.0/24"})
	ok("configure", r1.GetSuccess(), r1.GetError(), err)
	for _, dst := range []string{"10.42.2.0/24", "10.42.3.0/24", "10.42.2.0/24"} {
		r, err := c.InjectRoute(ctx, &quiltpb.InjectRouteRequest{Destination: dst, ViaInterface: "vxlan100"})
		ok("inject "+dst, r.GetSuccess(), r.GetError(), err)
	}
	for range 2 {
		r, err := c.RemoveRoute(ctx, &quiltpb.RemoveRouteRequest{Destination: "10.42.3.0/24"})
		ok("remove", r.GetSuccess(), r.GetError(), err)
	}
	if routes := fake.Routes(); len(routes) != 1 || routes[pfx("10.42.2.0/24")] != "vxlan100" {
		t.Fatalf("routes %v", routes)
	}
	for _, line := range []string{"RPC: ConfigureNodeSubnet(subnet=10.42.1.0/24)", "IPAM configured with subnet: 10.42.1.0/24",
		"RPC: InjectRoute(destination=10.42.2.0/24, via=vxlan100)", "Added route: 10.42.2.0/24 dev vxlan100", "Removed route: 10.42.3.0/24"} {
		if !strings.Contains(log.String(), line) {
			t.Errorf("log lacks %q:\n%s", line, log.String())
		}
	}
	// The calls that changed nothing are logged at DEBUG only (TestCallLogLevels).
	for _, line := range []string{"Route already present", "Route already absent"} {
		if strings.Contains(log.String(), line) {
			t.Errorf("log at INFO has %q:\n%s", line, log.String())
		}
	}
	// Own subnet refused; bad input refused before the helper.
	r, err := c.InjectRoute(ctx, &quiltpb.InjectRouteRequest{Destination: "10.42.1.0/24", ViaInterface: "vxlan100"})
	if err != nil || r.Success || !strings.Contains(r.Error, "own subnet") {
		t.Fatalf("own subnet: %v %v", r, err)
	}
	r, err = c.InjectRoute(ctx, &quiltpb.InjectRouteRequest{Destination: "10.42.9.0/24\n", ViaInterface: "vxlan100"})
	if err != nil || r.Success || strings.Contains(r.Error, "\n") {
		t.Fatalf("newline: %v %v", r, err)
	}
}

func TestConfigureNodeSubnet(t *testing.T) {
	n := newNode(t, testkit.New(), io.Discard)
	c := runtimeClient(t, n)
	ctx := context.Background()
	cfg := func(s string) *quiltpb.ConfigureNodeSubnetResponse {
		r, err := c.ConfigureNodeSubnet(ctx, &quiltpb.ConfigureNodeSubnetRequest{Subnet: s})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	subnet := func() string {
		pool, _ := n.IPAM.Pool()
		return pool.Subnet.String()
	}
	if r := cfg("10.42.1.0/24"); !r.Success {
		t.Fatal(r)
	}
	if r := cfg("10.42.1.0/24"); !r.Success {
		t.Fatal("same subnet again must succeed", r)
	}
	if r := cfg("10.42.7.0/24"); !r.Success || subnet() != "10.42.7.0/24" {
		t.Fatal("a new subnet with no allocations must be accepted", r)
	}
	for _, id := range []string{"a", "b", "c"} {
		if _, _, _, err := n.IPAM.Allocate(ipam.Key{ContainerID: id}, ""); err != nil {
			t.Fatal(err)
		}
	}
	if r := cfg("10.42.8.0/24"); r.Success || !strings.Contains(r.Error, "10.42.7.0/24") || !strings.Contains(r.Error, "3 container IPs") {
		t.Fatal("a new subnet with live allocations must be refused naming the current one", r)
	}
	for _, bad := range []string{"", "10.43.1.0/24", "10.42.1.1/24", "10.42.0.0/16", "fd00::/24"} {
		if r := cfg(bad); r.Success || r.Error == "" {
			t.Errorf("%q accepted", bad)
		}
	}
	if subnet() != "10.42.7.0/24" {
		t.Fatal("a refused request changed the subnet")
	}
}

func TestHelperErrorsToMessages(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{wire.StatusConflict, "exists and is not managed by quilt"},
		{wire.StatusNoIface, `interface "vxlan100" does not exist`},
		{fmtErrno(unix.EEXIST), "kernel refused to add 10.42.2.0/24 dev vxlan100: file exists"},
		{helperclient.ErrUnavailable, "route helper unavailable"},
	} {
		fake := testkit.New()
		fake.Fail(tc.err)
		r, err := runtimeClient(t, newNode(t, fake, io.Discard)).InjectRoute(context.Background(), &quiltpb.InjectRouteRequest{Destination: "10.42.2.0/24", ViaInterface: "vxlan100"})
		if err != nil || r.Success || !strings.Contains(r.Error, tc.want) {
			t.Errorf("%v: got %v %v, want %q", tc.err, r, err, tc.want)
		}
	}
	fake := testkit.New()
	fake.Fail(wire.StatusNotOwned)
	r, _ := runtimeClient(t, newNode(t, fake, io.Discard)).RemoveRoute(context.Background(), &quiltpb.RemoveRouteRequest{Destination: "10.42.2.0/24"})
	if r.Success || !strings.Contains(r.Error, "not managed by quilt; refusing to delete") {
		t.Errorf("not owned: %v", r)
	}
	if err := api.HelperError(via("10.42.2.0/24"), fmtErrno(unix.EEXIST)); !errors.Is(err, unix.EEXIST) {
		t.Errorf("errno lost: %v", err)
	}
}

func fmtErrno(e unix.Errno) error { return errors.Join(wire.StatusKernel, e) }

// TestConfigureRefusesRoutedSubnet: a subnet already routed to a peer
// cannot become this node's.
func TestConfigureRefusesRoutedSubnet(t *testing.T) {
	n := newNode(t, testkit.New(), io.Discard)
	c := runtimeClient(t, n)
	ctx := context.Background()
	c.InjectRoute(ctx, &quiltpb.InjectRouteRequest{Destination: "10.42.2.0/24", ViaInterface: "vxlan100"})
	r, err := c.ConfigureNodeSubnet(ctx, &quiltpb.ConfigureNodeSubnetRequest{Subnet: "10.42.2.0/24"})
	if _, configured := n.IPAM.Pool(); err != nil || r.Success || !strings.Contains(r.Error, "routed to a peer") || configured {
		t.Fatalf("%v %v", r, err)
	}
}

// TestInjectRecordsFirst: with the helper down, InjectRoute fails but the
// route is recorded, and RemoveRoute's removal too; a resync then makes the
// kernel match.
func TestInjectRecordsFirst(t *testing.T) {
	fake := testkit.New(via("10.42.3.0/24"))
	fake.Fail(helperclient.ErrUnavailable)
	n := newNode(t, fake, io.Discard, via("10.42.3.0/24"))
	c := runtimeClient(t, n)
	ctx := context.Background()
	r, err := c.InjectRoute(ctx, &quiltpb.InjectRouteRequest{Destination: "10.42.2.0/24", ViaInterface: "vxlan100"})
	if err != nil || r.Success || !strings.Contains(r.Error, "route helper unavailable") || !strings.Contains(r.Error, "recorded") {
		t.Fatalf("inject without helper: %v %v", r, err)
	}
	rr, err := c.RemoveRoute(ctx, &quiltpb.RemoveRouteRequest{Destination: "10.42.3.0/24"})
	if err != nil || rr.Success || !strings.Contains(rr.Error, "recorded") {
		t.Fatalf("remove without helper: %v %v", rr, err)
	}
	if got := n.Routes.DesiredRoutes(); len(got) != 1 || got[pfx("10.42.2.0/24")] != "vxlan100" {
		t.Fatalf("desired after both: %v", got)
	}
	if res := n.Routes.Resync(ctx); res.Err == nil || res.OK() {
		t.Fatalf("resync without helper: %+v", res)
	}
	fake.Fail(nil)
	res := n.Routes.Resync(ctx)
	if !res.OK() || res.Added != 1 || res.Removed != 1 || res.Installed != 1 {
		t.Fatalf("resync: %+v", res)
	}
	if routes := fake.Routes(); len(routes) != 1 || routes[pfx("10.42.2.0/24")] != "vxlan100" {
		t.Fatalf("kernel after resync: %v", routes)
	}
	// Invalid input is refused and records nothing.
	c.InjectRoute(ctx, &quiltpb.InjectRouteRequest{Destination: "10.42.5.0/24", ViaInterface: "eth0"})
	c.InjectRoute(ctx, &quiltpb.InjectRouteRequest{Destination: "10.42.5.1/24", ViaInterface: "vxlan100"})
	if n.Routes.DesiredLen() != 1 {
		t.Fatalf("refused requests were recorded: %v", n.Routes.DesiredRoutes())
	}
}
