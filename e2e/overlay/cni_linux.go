package overlay

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/invoke"
	current "github.com/containernetworking/cni/pkg/types/100"
	"golang.org/x/sys/unix"

	"github.com/quiltmesh/quilt-runtime/proto/quiltpb"
)

// cniNetwork is the CNI network the scenario configures on every node.
const cniNetwork = "quilt"

// clusterCIDR is the cluster every frontend runs with (its default).
var clusterCIDR = netip.MustParsePrefix("10.42.0.0/16")

// cniPluginConf is the network's one plugin: the reference bridge plugin
// on quilt0 as the containers' gateway, no masquerading (the overlay
// routes container addresses as they are), quilt-ipam for addresses from
// the node's frontend. It is packaging/cni/10-quilt.conflist's plugin but
// for the socket, which is each node's own here, and GC's grace period,
// none, so a GC acts on what the step just did.
func cniPluginConf(n *node) map[string]any {
	return map[string]any{
		"type":      "bridge",
		"bridge":    bridgeDev,
		"isGateway": true,
		"ipMasq":    false,
		"mtu":       1450,
		"ipam":      map[string]any{"type": "quilt-ipam", "socket": n.runtimeSock, "gcGracePeriod": "0s"},
	}
}

// writeConflist writes the node's network configuration where its cnitool
// looks (NETCONFPATH).
func writeConflist(n *node) error {
	b, err := json.MarshalIndent(map[string]any{"cniVersion": "1.1.0", "name": cniNetwork, "plugins": []any{cniPluginConf(n)}}, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(n.netconf, "10-quilt.conflist"), b, 0o644)
}

// ipamConf is what a main plugin hands quilt-ipam: its own configuration
// with the network's name and version, plus GC's valid attachments.
func ipamConf(n *node, valid []map[string]string) ([]byte, error) {
	conf := cniPluginConf(n)
	conf["cniVersion"], conf["name"] = "1.1.0", cniNetwork
	if valid != nil {
		conf["cni.dev/valid-attachments"] = valid
	}
	return json.Marshal(conf)
}

// cnitool runs the reference cnitool on the node as a container runtime
// would: in the node's network namespace, with the node's conflist and
// the plugins' directory. cnitool keeps its results under /var/lib/cni, so
// it runs in a mount namespace of its own where the run's directory is
// mounted over /var/lib: nothing is written to the host's.
func (c *cluster) cnitool(ctx context.Context, n *node, ifname string, args ...string) (string, error) {
	argv := append([]string{"--mount", "--propagation", "private", "--", "sh", "-c", `mount --bind "$0" /var/lib && exec "$@"`,
		c.varlib, "ip", "netns", "exec", n.ns, c.cnitoolBin}, args...)
	cmd := exec.CommandContext(ctx, "unshare", argv...)
	cmd.Env = append(os.Environ(), "NETCONFPATH="+n.netconf, "CNI_PATH="+c.cniPath, "CNI_IFNAME="+ifname)
	c.log.Debug("cnitool "+strings.Join(args, " "), "node", n.name, "ifname", ifname)
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		return "", &CommandError{Args: append([]string{"cnitool"}, args...), Output: string(out) + string(stderr), Err: err}
	}
	return string(out), nil
}

// cniContainer is a container the step makes with cnitool.
type cniContainer struct {
	*container
	netnsPath string
	id        string // the container ID cnitool chose, from the node's allocations
}

// cniAdd makes a namespace and has cnitool attach ifname to it through
// bridge and quilt-ipam; it returns the result cnitool printed.
func (s *scenario) cniAdd(ctx context.Context, st *Step, n *node, ct *cniContainer, ifname string) (*current.Result, error) {
	call := Call{Node: n.name, Call: fmt.Sprintf("cnitool add %s %s (CNI_IFNAME=%s)", cniNetwork, ct.netnsPath, ifname)}
	out, err := s.c.cnitool(ctx, n, ifname, "add", cniNetwork, ct.netnsPath)
	var res *current.Result
	if err == nil {
		res, err = parseResult(out)
	}
	if err != nil {
		call.Answer = err.Error()
		st.Calls = append(st.Calls, call)
		return nil, err
	}
	call.Success, call.Answer = true, fmt.Sprintf("%v gateway %v, route %v via %v", res.IPs[0].Address.String(), res.IPs[0].Gateway, res.Routes[0].Dst.String(), res.Routes[0].GW)
	st.Calls = append(st.Calls, call)
	return res, nil
}

// parseResult reads a CNI result with the reference library; it must hold
// one address and one route.
func parseResult(out string) (*current.Result, error) {
	r, err := current.NewResult([]byte(out))
	if err != nil {
		return nil, fmt.Errorf("CNI result %q: %w", out, err)
	}
	res, err := current.GetResult(r)
	if err == nil && (len(res.IPs) != 1 || len(res.Routes) != 1) {
		err = fmt.Errorf("want one address and one route, got %d and %d", len(res.IPs), len(res.Routes))
	}
	if err != nil {
		return nil, fmt.Errorf("CNI result %q: %w", out, err)
	}
	return res, nil
}

// resultOK checks a result against the node: an address of its subnet
// with the subnet's length, its gateway, the cluster CIDR via the gateway.
func resultOK(n *node, res *current.Result) (netip.Prefix, bool) {
	ipc, rt := res.IPs[0], res.Routes[0]
	addr, _ := netip.AddrFromSlice(ipc.Address.IP.To4())
	ones, _ := ipc.Address.Mask.Size()
	gw, _ := netip.AddrFromSlice(ipc.Gateway.To4())
	rgw, _ := netip.AddrFromSlice(rt.GW.To4())
	p := netip.PrefixFrom(addr, ones)
	return p, n.subnet.Contains(addr) && ones == n.subnet.Bits() && gw == n.gateway && rgw == n.gateway && rt.Dst.String() == clusterCIDR.String()
}

// allocations lists the node's allocations of the CNI network.
func (s *scenario) allocations(ctx context.Context, n *node) ([]*quiltpb.Allocation, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	l, err := n.admin.ListAllocations(ctx, &quiltpb.ListAllocationsRequest{})
	if err != nil {
		return nil, fmt.Errorf("ListAllocations on %s: %w", n.name, err)
	}
	var out []*quiltpb.Allocation
	for _, al := range l.Allocations {
		if al.Network == cniNetwork {
			out = append(out, al)
		}
	}
	return out, nil
}

// describe lists allocations as container/interface=address.
func describe(als []*quiltpb.Allocation) []string {
	var out []string
	for _, al := range als {
		out = append(out, fmt.Sprintf("%s/%s=%s", al.ContainerId, al.InterfaceName, al.Ip))
	}
	slices.Sort(out)
	return out
}

const explainCNI = `
A container runtime's view: each node's frontend also serves a Unix socket,
owned by its uid, mode 0660, in the runtime's group. On every node the
reference cnitool (github.com/containernetworking/cni) runs the reference
bridge plugin (github.com/containernetworking/plugins) on quilt0, which asks
quilt-ipam for the address: bridge quilt0, isGateway, ipMasq off, the
network "quilt" of CNI 1.1. Each container gets an address of its node's
subnet, the gateway, and a route to the cluster via the gateway. Then TCP
across nodes over our routes, cnitool check, a second interface, a repeated
ADD, STATUS, GC of an allocation the runtime no longer lists, and cnitool
del, which releases every address.`

func (s *scenario) cni(ctx context.Context, st *Step) error {
	c := s.c
	var cts []*cniContainer
	for _, n := range c.nodes {
		var fi unix.Stat_t
		err := unix.Stat(n.runtimeSock, &fi)
		st.check(n.name+"'s frontend serves a Unix socket of its uid, the runtime's group, mode 0660",
			err == nil && int(fi.Uid) == n.frontendUID && int(fi.Gid) == n.cniGID && fi.Mode&0o7777 == 0o660,
			"%s: uid %d gid %d mode %o (%v)", n.runtimeSock, fi.Uid, fi.Gid, fi.Mode&0o7777, err)
		ct := &cniContainer{container: &container{id: n.name + "-cni", node: n, gateway: n.gateway}}
		if ct.ns, err = c.newNetns(ctx, ct.container.id); err != nil {
			return err
		}
		ct.netnsPath = filepath.Join(netnsDir, ct.ns)
		res, err := s.cniAdd(ctx, st, n, ct, "eth0")
		if err != nil {
			return err
		}
		var ok bool
		ct.addr, ok = resultOK(n, res)
		st.check(n.name+": cnitool add gave an address of the node's subnet, its gateway and the cluster route", ok,
			"%v gateway %v, route %v via %v", res.IPs[0].Address.String(), res.IPs[0].Gateway, res.Routes[0].Dst.String(), res.Routes[0].GW)
		got, err := c.ip(ctx, "-n", ct.ns, "-4", "route", "show", clusterCIDR.String())
		if err != nil {
			return err
		}
		want := fmt.Sprintf("%v via %v dev eth0", clusterCIDR, n.gateway)
		st.check(n.name+": the bridge plugin installed quilt-ipam's route in the container", strings.HasPrefix(strings.TrimSpace(got), want),
			"ip route show %v: %q, want %q", clusterCIDR, strings.TrimSpace(got), want)
		als, err := s.allocations(ctx, n)
		if err != nil {
			return err
		}
		for _, al := range als {
			if al.Ip == ct.addr.Addr().String() && al.InterfaceName == "eth0" {
				ct.id = al.ContainerId
			}
		}
		st.check(n.name+": the frontend lists the address under cnitool's container ID, interface eth0 and network quilt", ct.id != "",
			"%q", describe(als))
		if err := c.startEcho(ct.container); err != nil {
			return err
		}
		cts = append(cts, ct)
	}

	var containers []*container
	for _, ct := range cts {
		containers = append(containers, ct.container)
	}
	m := c.matrixOf(ctx, containers)
	st.Matrix = m
	var bad []string
	for _, cell := range m.Cells {
		if cell.Outcome != Reached {
			bad = append(bad, fmt.Sprintf("%s->%s %s: %s", cell.From, cell.To, cell.Outcome, cell.Error))
		}
	}
	st.check("TCP connects between the CNI containers of every pair of nodes, over our routes", len(bad) == 0 && len(m.Cells) == 6,
		"%d probes, %d failed %q", len(m.Cells), len(bad), bad)

	for _, ct := range cts {
		_, err := c.cnitool(ctx, ct.node, "eth0", "check", cniNetwork, ct.netnsPath)
		st.Calls = append(st.Calls, Call{Node: ct.node.name, Call: "cnitool check " + cniNetwork + " " + ct.netnsPath, Success: err == nil, Answer: errText(err)})
		st.check(ct.node.name+": cnitool check passes (bridge, and quilt-ipam's CHECK of the allocation)", err == nil, "%s", errText(err))
	}
	_, err := c.cnitool(ctx, c.nodes[0], "eth0", "status", cniNetwork, cts[0].netnsPath)
	st.Calls = append(st.Calls, Call{Node: c.nodes[0].name, Call: "cnitool status " + cniNetwork, Success: err == nil, Answer: errText(err)})
	st.check("cnitool status passes: bridge asks quilt-ipam's STATUS, and the frontend and its helper are available", err == nil, "%s", errText(err))

	// A second interface of the same container: a second address.
	n1, ct1 := c.nodes[0], cts[0]
	res, err := s.cniAdd(ctx, st, n1, ct1, "eth1")
	if err != nil {
		return err
	}
	eth1, ok := resultOK(n1, res)
	st.check("node1: a second interface of the same container gets a second address", ok && eth1.Addr() != ct1.addr.Addr(),
		"eth0 %v, eth1 %v", ct1.addr, eth1)

	// The same ADD again, as a runtime retrying it does: quilt-ipam run by
	// the reference invoke package, as the bridge plugin runs it.
	ipamBin := filepath.Join(c.cniPath, "quilt-ipam")
	conf, err := ipamConf(n1, nil)
	if err != nil {
		return err
	}
	args := &invoke.Args{Command: "ADD", ContainerID: ct1.id, NetNS: ct1.netnsPath, IfName: "eth0", Path: c.cniPath}
	again, err := invoke.ExecPluginWithResult(ctx, ipamBin, conf, args, nil)
	var againAddr netip.Prefix
	if err == nil {
		var r *current.Result
		if r, err = current.GetResult(again); err == nil && len(r.IPs) == 1 {
			againAddr, _ = resultOK(n1, r)
		}
	}
	st.Calls = append(st.Calls, Call{Node: n1.name, Call: fmt.Sprintf("quilt-ipam ADD %s eth0 again", ct1.id), Success: err == nil, Answer: cmpText(againAddr.String(), err)})
	st.check("node1: the same ADD again returns the same address", err == nil && againAddr == ct1.addr, "%v, first %v (%v)", againAddr, ct1.addr, err)

	// GC: an allocation whose container the runtime lost (an ADD, then a
	// crash before it recorded it) is released; every attachment the
	// runtime still lists is kept. bridge v1.10.0 does not pass GC on to
	// its IPAM plugin yet, so quilt-ipam is invoked as a main plugin would.
	args = &invoke.Args{Command: "ADD", ContainerID: "lost-1", NetNS: ct1.netnsPath, IfName: "eth0", Path: c.cniPath}
	if _, err := invoke.ExecPluginWithResult(ctx, ipamBin, conf, args, nil); err != nil {
		return fmt.Errorf("quilt-ipam ADD lost-1: %w", err)
	}
	valid := []map[string]string{{"containerID": ct1.id, "ifname": "eth0"}, {"containerID": ct1.id, "ifname": "eth1"}}
	gcConf, err := ipamConf(n1, valid)
	if err != nil {
		return err
	}
	before, err := s.allocations(ctx, n1)
	if err != nil {
		return err
	}
	err = invoke.ExecPluginWithoutResult(ctx, ipamBin, gcConf, &invoke.Args{Command: "GC", Path: c.cniPath}, nil)
	st.Calls = append(st.Calls, Call{Node: n1.name, Call: fmt.Sprintf("quilt-ipam GC, valid attachments %s/eth0 and %s/eth1", ct1.id, ct1.id), Success: err == nil, Answer: errText(err)})
	after, aerr := s.allocations(ctx, n1)
	if aerr != nil {
		return aerr
	}
	want := fmt.Sprintf("%q", describe(after))
	st.check("node1: GC released the allocation the runtime no longer lists, and kept the two it does",
		err == nil && len(before) == 3 && len(after) == 2 && !strings.Contains(want, "lost-1"), "before %q, after %s (%v)", describe(before), want, err)

	// cnitool del releases every address; the containers AllocateIP gave
	// addresses to through QuiltAdmin keep theirs.
	for _, d := range []struct {
		ct     *cniContainer
		ifname string
	}{{ct1, "eth1"}, {cts[0], "eth0"}, {cts[1], "eth0"}, {cts[2], "eth0"}} {
		_, err := c.cnitool(ctx, d.ct.node, d.ifname, "del", cniNetwork, d.ct.netnsPath)
		st.Calls = append(st.Calls, Call{Node: d.ct.node.name, Call: fmt.Sprintf("cnitool del %s %s (CNI_IFNAME=%s)", cniNetwork, d.ct.netnsPath, d.ifname),
			Success: err == nil, Answer: errText(err)})
		if err != nil {
			return err
		}
	}
	for _, n := range c.nodes {
		left, err := s.allocations(ctx, n)
		if err != nil {
			return err
		}
		l, err := n.admin.ListAllocations(ctx, &quiltpb.ListAllocationsRequest{})
		if err != nil {
			return err
		}
		st.check(n.name+": cnitool del released every CNI address; the two QuiltAdmin allocations stay", len(left) == 0 && len(l.Allocations) == 2,
			"CNI allocations left %q; %d allocations in all", describe(left), len(l.Allocations))
	}
	return nil
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func cmpText(ok string, err error) string {
	if err != nil {
		return err.Error()
	}
	return ok
}
