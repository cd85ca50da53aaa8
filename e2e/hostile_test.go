package e2e

import (
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/quiltmesh/quilt-runtime/internal/testutil"
	"github.com/quiltmesh/quilt-runtime/proto/quiltpb"
)

// hostileCase is one malformed request of the agent's and the rule its
// refusal must name.
type hostileCase struct {
	rpc  string // configure, inject or remove
	arg  string // subnet or destination
	via  string // inject only
	rule string // in the error
}

// hostileCases are at least 60 malformed requests of every kind. The node
// under test has subnet 10.42.1.0/24, a desired route 10.42.3.0/24, a live
// allocation, and interfaces vxlan100 (allowed), vxlan1000 and VXLAN100
// (present, not allowed).
func hostileCases() []hostileCase {
	const mib = 1 << 20
	var cs []hostileCase
	dsts := []struct{ in, rule string }{
		{"", "is empty"}, {" ", "surrounding whitespace"}, {"\n", "surrounding whitespace"}, {"\t10.42.2.0/24", "surrounding whitespace"},
		{"10.42.2.0/24\n", "surrounding whitespace"}, {"10.42.2.0/24\r\n", "surrounding whitespace"}, {" 10.42.2.0/24", "surrounding whitespace"},
		{"10.42.2.0/24\x00", "is not an IPv4 prefix"}, {"\x00", "is not an IPv4 prefix"}, {"10.42\x00.2.0/24", "is not an IPv4 prefix"},
		{strings.Repeat("9", mib), "larger than max"}, {"10.42.2.0/24" + strings.Repeat(" ", mib), "larger than max"},
		{"fd00::/64", "is IPv6"}, {"::ffff:10.42.2.0/120", "is IPv6"}, {"::/0", "is IPv6"}, {"::ffff:a2a:200/120", "is IPv6"},
		{"10.42.2.1/24", "host bits"}, {"10.42.2.255/24", "host bits"}, {"10.42.255.255/24", "host bits"},
		{"0.0.0.0/0", "node subnets are /24"}, {"10.42.2.7/32", "node subnets are /24"}, {"10.42.2.0/23", "node subnets are /24"},
		{"10.42.2.0/25", "node subnets are /24"}, {"10.42.0.0/16", "node subnets are /24"}, {"10.42.255.255/32", "node subnets are /24"},
		{"010.42.2.0/24", "is not an IPv4 prefix"}, {"10.042.2.0/24", "is not an IPv4 prefix"}, {"10.42.02.0/24", "is not an IPv4 prefix"},
		{"10.42.2.0/024", "is not an IPv4 prefix"}, {"10.42.256.0/24", "is not an IPv4 prefix"}, {"10.42.2.0/33", "is not an IPv4 prefix"},
		{"10.42.-1.0/24", "is not an IPv4 prefix"}, {"١٠.42.2.0/24", "is not an IPv4 prefix"}, {"10.42.２.0/24", "is not an IPv4 prefix"},
		{"0x0a.42.2.0/24", "is not an IPv4 prefix"}, {"012.42.2.0/24", "is not an IPv4 prefix"}, {"0xa2a0200/24", "is not an IPv4 prefix"},
		{"169476608/24", "is not an IPv4 prefix"}, {"10.42.2/24", "is not an IPv4 prefix"}, {"10.42.2.0", "is not an IPv4 prefix"},
		{"/24", "is not an IPv4 prefix"}, {"10.42.2.0/", "is not an IPv4 prefix"}, {"10,42,2,0/24", "is not an IPv4 prefix"},
		{"10.42.2.0/24/24", "is not an IPv4 prefix"}, {"10.42.2.0%vxlan100/24", "is not an IPv4 prefix"}, {"10.42.2.0/+24", "is not an IPv4 prefix"},
		{"10.43.2.0/24", "outside the cluster CIDR"}, {"10.41.255.0/24", "outside the cluster CIDR"}, {"192.168.1.0/24", "outside the cluster CIDR"},
		{"127.0.0.0/24", "outside the cluster CIDR"}, {"224.0.0.0/24", "outside the cluster CIDR"}, {"255.255.255.0/24", "outside the cluster CIDR"},
		{"10.42.1.0/24", "own subnet"},
	}
	for _, d := range dsts {
		cs = append(cs, hostileCase{"inject", d.in, "vxlan100", d.rule}, hostileCase{"remove", d.in, "", d.rule})
	}
	for _, via := range []struct{ in, rule string }{
		{"", "is not a valid interface name"}, {" ", "is not a valid interface name"}, {"vxlan100 ", "is not a valid interface name"},
		{" vxlan100", "is not a valid interface name"}, {"vxlan100\n", "is not a valid interface name"}, {"vxlan100\x00", "is not a valid interface name"},
		{"vxlan1000", "not on the allow list"}, {"VXLAN100", "not on the allow list"}, {"vxlan10", "not on the allow list"},
		{"eth0", "not on the allow list"}, {"lo", "not on the allow list"}, {"vxlan100.", "not on the allow list"},
		{"a234567890123456", "is not a valid interface name"}, {strings.Repeat("v", 1024), "is not a valid interface name"},
		{strings.Repeat("v", mib), "larger than max"}, {"../vxlan100", "is not a valid interface name"}, {"/dev/vxlan100", "is not a valid interface name"},
		{"vxlan100;reboot", "is not a valid interface name"}, {"$(id)", "is not a valid interface name"}, {"`id`", "is not a valid interface name"},
		{"vxlan100|x", "is not a valid interface name"}, {"vxlan100&", "is not a valid interface name"}, {"vxlän100", "is not a valid interface name"},
		{"*", "is not a valid interface name"}, {"..", "not on the allow list"},
	} {
		cs = append(cs, hostileCase{"inject", "10.42.7.0/24", via.in, via.rule})
	}
	for _, sub := range []struct{ in, rule string }{
		{"", "is empty"}, {"10.42.1.0/24\n", "surrounding whitespace"}, {"10.43.1.0/24", "outside the cluster CIDR"},
		{"10.42.1.1/24", "host bits"}, {"10.42.0.0/16", "node subnets are /24"}, {"fd00::/24", "is IPv6"},
		{"10.42.1.0/25", "node subnets are /24"}, {"0.0.0.0/0", "node subnets are /24"}, {"10.42.01.0/24", "is not an IPv4 prefix"},
		{"10.42.9.0/24", "container IPs are live"}, {"10.42.3.0/24", "routed to a peer"}, {strings.Repeat("1", mib), "larger than max"},
	} {
		cs = append(cs, hostileCase{"configure", sub.in, "", sub.rule})
	}
	return cs
}

// TestHostileGRPCInputs sends every malformed request through the real
// gRPC server to the real helper: each is refused with a clear one-line
// message naming its rule, and the kernel's route tables, the desired
// routes, the subnet and the allocations are exactly as before.
func TestHostileGRPCInputs(t *testing.T) {
	n := newNode(t, "vxlan100", "vxlan1000", "VXLAN100")
	n.startFrontend(t)
	n.configure(t, "10.42.1.0/24")
	rt, adm, _ := n.clients(t)
	ctx := ctxT(t)
	if r, err := rt.InjectRoute(ctx, &quiltpb.InjectRouteRequest{Destination: "10.42.3.0/24", ViaInterface: "vxlan100"}); err != nil || !r.Success {
		t.Fatal(r, err)
	}
	if _, err := adm.AllocateIP(ctx, &quiltpb.AllocateIPRequest{ContainerId: "c1"}); err != nil {
		t.Fatal(err)
	}
	snapshot := func() string {
		lr, err1 := adm.ListRoutes(ctx, &quiltpb.ListRoutesRequest{})
		la, err2 := adm.ListAllocations(ctx, &quiltpb.ListAllocationsRequest{})
		if err1 != nil || err2 != nil {
			t.Fatal(err1, err2)
		}
		return testutil.Run(t, "ip", "-n", n.ns, "-4", "-d", "route", "show", "table", "all") +
			testutil.Run(t, "ip", "-n", n.ns, "-6", "-d", "route", "show", "table", "all") +
			protojson.Format(lr) + protojson.Format(la)
	}
	helperMutations := func() int { return strings.Count(n.helper.Output(), `msg="route `) }
	before, mutations := snapshot(), helperMutations()

	cases := hostileCases()
	if len(cases) < 60 {
		t.Fatalf("only %d cases", len(cases))
	}
	for _, c := range cases {
		var msg string
		var ok bool
		var err error
		switch c.rpc {
		case "configure":
			var r *quiltpb.ConfigureNodeSubnetResponse
			r, err = rt.ConfigureNodeSubnet(ctx, &quiltpb.ConfigureNodeSubnetRequest{Subnet: c.arg})
			ok, msg = r.GetSuccess(), r.GetError()
		case "inject":
			var r *quiltpb.InjectRouteResponse
			r, err = rt.InjectRoute(ctx, &quiltpb.InjectRouteRequest{Destination: c.arg, ViaInterface: c.via})
			ok, msg = r.GetSuccess(), r.GetError()
		case "remove":
			var r *quiltpb.RemoveRouteResponse
			r, err = rt.RemoveRoute(ctx, &quiltpb.RemoveRouteRequest{Destination: c.arg})
			ok, msg = r.GetSuccess(), r.GetError()
		}
		name := fmt.Sprintf("%s(%.40q, %.20q)", c.rpc, c.arg, c.via)
		if err != nil {
			// Only a request over the size limit is refused before our
			// code sees it, by gRPC, with a status naming the limit.
			if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), c.rule) {
				t.Errorf("%s: %v, want success=false naming %q", name, err, c.rule)
			}
			continue
		}
		switch {
		case ok:
			t.Errorf("%s: accepted", name)
		case !strings.Contains(msg, c.rule):
			t.Errorf("%s: %q does not name the rule %q", name, msg, c.rule)
		case strings.ContainsAny(msg, "\n\r\x00") || len(msg) > 300:
			t.Errorf("%s: not one short line: %q", name, msg)
		}
	}
	if after := snapshot(); after != before {
		t.Fatalf("refused requests changed the node:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if m := helperMutations(); m != mutations {
		t.Errorf("refused requests reached the helper as %d mutations", m-mutations)
	}
	t.Logf("%d malformed requests refused; kernel tables, desired routes and allocations unchanged", len(cases))
}
