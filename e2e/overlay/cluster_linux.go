package overlay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"google.golang.org/grpc"

	"github.com/quiltmesh/quilt-runtime/internal/netns"
	"github.com/quiltmesh/quilt-runtime/proto/quiltpb"
)

// The data plane's fixed facts.
const (
	overlayDev = "vxlan100"
	vni        = "100"
	vxlanPort  = "4789"
	bridgeDev  = "quilt0"
	uplinkDev  = "eth0" // each node's underlay interface
	// overlayMTU: the underlay's 1500 less VXLAN's 50 bytes (outer IPv4,
	// UDP, VXLAN and Ethernet headers). quilt0 and every container
	// interface use it, so no container sends a packet the overlay cannot
	// carry whole.
	overlayMTU = "1450"
	// grpcAddr is where each node's frontend listens, on its own loopback.
	grpcAddr = "127.0.0.1:50051"
	// nobody runs the helper, as packaging does.
	nobody = 65534
)

// cluster is everything one run made; close removes it all.
type cluster struct {
	cfg      Config
	log      *slog.Logger
	prefix   string // "qov<pid>-"
	dir      string // binaries, sockets, state directories, logs
	helper   string // binaries inside dir
	frontend string
	// CNI: the plugins' directory (bridge, quilt-ipam), cnitool, and what
	// cnitool's mount namespace sees as /var/lib (its result cache).
	cniPath, cnitoolBin, varlib string
	underlay                    string // the underlay namespace

	mu         sync.Mutex
	namespaces []string // in creation order
	procs      []*proc  // every process started
	listeners  []net.Listener
	nodes      []*node
	closed     bool
}

// node is one simulated host.
type node struct {
	idx         int
	name        string // node1
	ns          string
	underlay    netip.Addr   // 192.0.2.N
	subnet      netip.Prefix // 10.42.N.0/24
	gateway     netip.Addr   // 10.42.N.1, on quilt0
	helperUID   int
	frontendUID int
	socketGID   int    // the helper socket's group; the frontend is a member
	cniGID      int    // the container runtime's group: its socket's group; the frontend is a member
	runtimeSock string // the frontend's Unix socket, for quilt-ipam
	netconf     string // the node's CNI configuration directory (NETCONFPATH)
	dir         string
	socket      string
	stateDir    string
	helperProc  *proc
	frontProc   *proc
	conn        *grpc.ClientConn
	rt          quiltpb.QuiltRuntimeClient
	admin       quiltpb.QuiltAdminClient
	containers  []*container
}

// container is one simulated container: a namespace with a veth into its
// node's quilt0 and an echo server.
type container struct {
	id      string // node1-a
	ns      string
	node    *node
	addr    netip.Prefix // its address with the node subnet's length
	gateway netip.Addr
	veth    string // the node's end, on quilt0
}

func (c *container) echoAddr() string { return netip.AddrPortFrom(c.addr.Addr(), echoPort).String() }

// newCluster sweeps what killed runs left, and prepares a directory every
// uid can traverse, holding copies of the binaries.
func newCluster(ctx context.Context, cfg Config) (*cluster, error) {
	c := &cluster{cfg: cfg, log: cfg.Log, prefix: fmt.Sprintf("%s%d-", namePrefix, os.Getpid())}
	swept, err := sweepStale()
	if len(swept) > 0 {
		c.log.Info("removed namespaces left by an earlier run that was killed", "namespaces", swept)
	}
	if err != nil {
		return nil, fmt.Errorf("sweep namespaces of killed runs: %w", err)
	}
	if c.dir, err = os.MkdirTemp("", "quilt-overlay-"); err != nil {
		return nil, err
	}
	if err := os.Chmod(c.dir, 0o755); err != nil {
		os.RemoveAll(c.dir)
		return nil, err
	}
	c.helper, c.frontend = filepath.Join(c.dir, "quilt-route-helper"), filepath.Join(c.dir, "quilt-runtime")
	c.cniPath, c.cnitoolBin, c.varlib = filepath.Join(c.dir, "cni-bin"), filepath.Join(c.dir, "cnitool"), filepath.Join(c.dir, "varlib")
	for _, d := range []string{c.cniPath, filepath.Join(c.varlib, "cni")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			os.RemoveAll(c.dir)
			return nil, err
		}
	}
	for src, dst := range map[string]string{cfg.HelperBin: c.helper, cfg.FrontendBin: c.frontend, cfg.IPAMBin: filepath.Join(c.cniPath, "quilt-ipam"),
		filepath.Join(cfg.CNIBin, "bridge"): filepath.Join(c.cniPath, "bridge"), filepath.Join(cfg.CNIBin, "cnitool"): c.cnitoolBin} {
		if err := copyFile(src, dst, 0o755); err != nil {
			os.RemoveAll(c.dir)
			return nil, fmt.Errorf("copy %s: %w", src, err)
		}
	}
	return c, nil
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	return errors.Join(err, out.Close())
}

// ip runs the ip command, logging it.
func (c *cluster) ip(ctx context.Context, args ...string) (string, error) {
	c.log.Debug("ip " + strings.Join(args, " "))
	return command(ctx, "ip", args...)
}

// script runs ip commands one after another, stopping at the first error.
func (c *cluster) script(ctx context.Context, cmds [][]string) error {
	for _, args := range cmds {
		if _, err := c.ip(ctx, args...); err != nil {
			return err
		}
	}
	return nil
}

// newNetns makes a namespace of this run and records it for close.
func (c *cluster) newNetns(ctx context.Context, suffix string) (string, error) {
	name := c.prefix + suffix
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return "", errors.New("cluster closed")
	}
	c.namespaces = append(c.namespaces, name)
	c.mu.Unlock()
	return name, createNetns(ctx, name)
}

// buildUnderlay makes the shared L2 segment: a bridge in its own namespace.
func (c *cluster) buildUnderlay(ctx context.Context) error {
	ns, err := c.newNetns(ctx, "underlay")
	if err != nil {
		return err
	}
	c.underlay = ns
	return c.script(ctx, [][]string{
		{"-n", ns, "link", "add", "br0", "type", "bridge"},
		{"-n", ns, "link", "set", "br0", "up"},
	})
}

// addNode makes node idx (1-based): its namespace, its underlay veth, its
// VXLAN device, its container bridge and the sysctls routed overlay
// traffic needs. The agent has not spoken to it yet.
func (c *cluster) addNode(ctx context.Context, idx int) (*node, error) {
	n := &node{
		idx:         idx,
		name:        fmt.Sprintf("node%d", idx),
		underlay:    netip.AddrFrom4([4]byte{192, 0, 2, byte(idx)}),
		subnet:      netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 42, byte(idx), 0}), 24),
		gateway:     netip.AddrFrom4([4]byte{10, 42, byte(idx), 1}),
		helperUID:   nobody,
		frontendUID: 64000 + idx,
		socketGID:   64100 + idx,
		cniGID:      64200 + idx,
	}
	c.mu.Lock()
	c.nodes = append(c.nodes, n)
	c.mu.Unlock()
	var err error
	if n.ns, err = c.newNetns(ctx, n.name); err != nil {
		return nil, err
	}
	ns, ul := n.ns, c.underlay
	// The vxlan device's own address, the subnet's network address as a
	// /32, is the source of the ARP requests it sends; peers check it
	// against their route to this node's subnet (strict rp_filter).
	vxlanAddr := netip.PrefixFrom(n.subnet.Addr(), 32).String()
	err = c.script(ctx, [][]string{
		// Underlay: a veth from the underlay bridge into the node, created
		// there directly so no interface ever exists in our own namespace.
		{"-n", ul, "link", "add", n.name, "type", "veth", "peer", "name", uplinkDev, "netns", ns},
		{"-n", ul, "link", "set", n.name, "master", "br0", "up"},
		{"-n", ns, "addr", "add", n.underlay.String() + "/24", "dev", uplinkDev},
		{"-n", ns, "link", "set", uplinkDev, "up"},
		// Overlay: VNI 100 on UDP 4789, sourced from the underlay address.
		// nolearning: the FDB holds only what the agent writes.
		{"-n", ns, "link", "add", overlayDev, "type", "vxlan", "id", vni, "dstport", vxlanPort,
			"local", n.underlay.String(), "dev", uplinkDev, "nolearning"},
		{"-n", ns, "addr", "add", vxlanAddr, "dev", overlayDev},
		// Containers' bridge with the node's gateway address.
		{"-n", ns, "link", "add", bridgeDev, "mtu", overlayMTU, "type", "bridge"},
		{"-n", ns, "addr", "add", netip.PrefixFrom(n.gateway, n.subnet.Bits()).String(), "dev", bridgeDev},
	})
	if err != nil {
		return nil, err
	}
	err = setSysctls(ns,
		// Route between quilt0 and vxlan100.
		"net.ipv4.ip_forward", "1",
		// rp_filter: the effective value is the larger of "all" and the
		// device's, so "all" is 0 and each device says strict (1): a
		// container cannot send from an address outside its node's subnet,
		// and the overlay only delivers sources of subnets we route there.
		"net.ipv4.conf.all.rp_filter", "0",
		"net.ipv4.conf."+uplinkDev+".rp_filter", "1",
		"net.ipv4.conf."+overlayDev+".rp_filter", "1",
		"net.ipv4.conf."+bridgeDev+".rp_filter", "1",
		// Routes to peers are device routes ("dev vxlan100", no next hop),
		// so this node ARPs for each remote container's address on
		// vxlan100. The peer that routes that address to its own quilt0
		// answers for it with its vxlan100 MAC (proxy ARP), at once
		// (proxy_delay 0: the default holds a proxied answer to a
		// broadcast request up to 0.8s).
		"net.ipv4.conf."+overlayDev+".proxy_arp", "1",
		"net.ipv4.neigh."+overlayDev+".proxy_delay", "0",
		// Test only: answer every unroutable probe with ICMP at once, so
		// "fails fast" does not depend on how many probes came before.
		"net.ipv4.icmp_ratelimit", "0",
	)
	if err != nil {
		return nil, err
	}
	return n, c.script(ctx, [][]string{
		{"-n", ns, "link", "set", bridgeDev, "up"},
		{"-n", ns, "link", "set", overlayDev, "up"},
	})
}

// addContainer asks the node's IPAM for an address for id, then makes the
// container: a namespace, a veth into quilt0, the address, a default route
// via the gateway AllocateIP named, and an echo server.
func (c *cluster) addContainer(ctx context.Context, n *node, id string, a *agent) (*container, error) {
	ip, gw, err := a.allocate(ctx, n, id)
	if err != nil {
		return nil, err
	}
	if gw != n.gateway {
		return nil, fmt.Errorf("AllocateIP(%s) on %s: gateway %v, but quilt0 has %v", id, n.name, gw, n.gateway)
	}
	if !n.subnet.Contains(ip.Addr()) || ip.Bits() != n.subnet.Bits() {
		return nil, fmt.Errorf("AllocateIP(%s) on %s: %v is not an address of %v", id, n.name, ip, n.subnet)
	}
	ct := &container{id: id, node: n, addr: ip, gateway: gw, veth: "v" + strings.ReplaceAll(id, "node", "")}
	if ct.ns, err = c.newNetns(ctx, id); err != nil {
		return nil, err
	}
	n.containers = append(n.containers, ct)
	err = c.script(ctx, [][]string{
		{"-n", n.ns, "link", "add", ct.veth, "mtu", overlayMTU, "type", "veth", "peer", "name", "eth0", "netns", ct.ns},
		{"-n", n.ns, "link", "set", ct.veth, "master", bridgeDev, "up"},
		{"-n", ct.ns, "link", "set", "eth0", "mtu", overlayMTU},
		{"-n", ct.ns, "addr", "add", ip.String(), "dev", "eth0"},
		{"-n", ct.ns, "link", "set", "eth0", "up"},
		{"-n", ct.ns, "route", "add", "default", "via", gw.String()},
	})
	if err != nil {
		return nil, err
	}
	return ct, c.startEcho(ct)
}

// allContainers returns every container, node by node.
func (c *cluster) allContainers() []*container {
	var all []*container
	for _, n := range c.nodes {
		all = append(all, n.containers...)
	}
	return all
}

// ourRoutes returns the node's routes of protocol 81, as `ip route`
// prints them (without the protocol, since it is the filter).
func (c *cluster) ourRoutes(ctx context.Context, n *node) (string, error) {
	return c.ip(ctx, "-n", n.ns, "-4", "route", "show", "table", "main", "proto", "81")
}

// routeTable returns the node's IPv4 main table with our routes marked.
func (c *cluster) routeTable(ctx context.Context, n *node) (NodeRoutes, error) {
	all, err := c.ip(ctx, "-n", n.ns, "-4", "route", "show", "table", "main")
	if err != nil {
		return NodeRoutes{}, err
	}
	ours, err := c.ourRoutes(ctx, n)
	if err != nil {
		return NodeRoutes{}, err
	}
	mine := map[string]bool{}
	for _, l := range lines(ours) {
		mine[strings.Fields(l)[0]] = true
	}
	nr := NodeRoutes{Node: n.name}
	for _, l := range lines(all) {
		nr.Routes = append(nr.Routes, Route{Line: l, Ours: mine[strings.Fields(l)[0]]})
	}
	return nr, nil
}

// lines splits command output into its non-empty, trimmed lines.
func lines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// close stops every process, removes every namespace (their interfaces go
// with them) and the directory, then checks that nothing is left. It is
// safe to call more than once and from another goroutine.
func (c *cluster) close() Cleanup {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return Cleanup{}
	}
	c.closed = true
	procs, nss, ls, nodes := c.procs, c.namespaces, c.listeners, c.nodes
	c.mu.Unlock()

	var res Cleanup
	for _, l := range ls {
		l.Close()
	}
	for _, n := range nodes {
		if n.conn != nil {
			n.conn.Close()
		}
	}
	for _, p := range procs {
		killed, err := p.kill()
		if killed {
			res.Processes++
		}
		if err != nil {
			c.log.Error("kill", "process", p.name, "err", err)
		}
	}
	for i := len(nss) - 1; i >= 0; i-- {
		killed, err := netns.Remove(nss[i])
		res.Processes += killed
		if err != nil {
			c.log.Error("remove namespace", "namespace", nss[i], "err", err)
		}
		res.Namespaces++
	}
	for _, p := range procs {
		if !p.Exited() {
			res.Leftovers = append(res.Leftovers, fmt.Sprintf("process %d (%s)", p.Pid(), p.name))
		}
	}
	for _, ns := range nss {
		if _, err := os.Stat(filepath.Join(netnsDir, ns)); !errors.Is(err, os.ErrNotExist) {
			res.Namespaces--
			res.Leftovers = append(res.Leftovers, "namespace "+ns)
		}
	}
	if err := os.RemoveAll(c.dir); err != nil {
		res.Leftovers = append(res.Leftovers, "directory "+c.dir)
	}
	return res
}
