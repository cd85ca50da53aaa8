package overlay

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/quiltmesh/quilt-runtime/proto/quiltpb"
)

// ErrNotRoot means Run was started without root.
var ErrNotRoot = errors.New("needs root: it creates network namespaces and starts processes under other uids")

// Run builds the three-node cluster, drives the scenario and removes
// everything it made before it returns, whatever happened. The report is
// complete up to the step that failed; the error says which check failed
// (errors.Is(err, ErrCheckFailed)) or what stopped the run.
func Run(ctx context.Context, cfg Config) (rep *Report, err error) {
	cfg.defaults()
	rep = &Report{Started: time.Now(), Measurements: Measurements{ResyncIntervalSeconds: cfg.ResyncInterval.Seconds()}}
	defer func() {
		rep.Seconds = time.Since(rep.Started).Seconds()
		rep.OK = err == nil
		if err != nil {
			rep.Error = err.Error()
		}
	}()
	if os.Geteuid() != 0 {
		return rep, ErrNotRoot
	}
	c, err := newCluster(ctx, cfg)
	if err != nil {
		return rep, err
	}
	rep.Prefix = c.prefix
	defer func() {
		rep.Cleanup = c.close()
		if len(rep.Cleanup.Leftovers) > 0 {
			err = errors.Join(err, fmt.Errorf("cleanup left behind: %s", strings.Join(rep.Cleanup.Leftovers, ", ")))
		}
	}()
	s := &scenario{c: c, a: &agent{c: c}, rep: rep, cfg: cfg}
	return rep, s.run(ctx)
}

type scenario struct {
	c   *cluster
	a   *agent
	rep *Report
	cfg Config
	// icmpSpent is when probes last drew on the kernel's budget of ICMP
	// errors (see icmpRefill).
	icmpSpent time.Time
}

// icmpRefill is how long the kernel takes to refill a source address's
// budget of ICMP "unreachable" errors once it is spent. A router sends at
// most net.ipv4.route.error_burst (5) of them per source at once, then one
// per error_cost (1s); those sysctls are global, not per namespace, so the
// scenario waits rather than change the machine's. Without the wait, a
// probe over budget would see its SYN dropped silently and fail only on
// a retransmission or a timeout: the rate limit, not our routes.
const icmpRefill = 5 * time.Second

// check records one assertion.
func (st *Step) check(name string, ok bool, format string, args ...any) {
	st.Checks = append(st.Checks, Check{Name: name, OK: ok, Detail: fmt.Sprintf(format, args...)})
}

// step runs one stage, records it, and stops the scenario if the stage
// could not run or a check failed.
func (s *scenario) step(ctx context.Context, name, title, explain string, f func(context.Context, *Step) error) error {
	st := &Step{Name: name, Title: title, Explain: explain}
	start := time.Now()
	err := f(ctx, st)
	st.Calls = append(s.a.take(), st.Calls...)
	st.Seconds = time.Since(start).Seconds()
	s.rep.Steps = append(s.rep.Steps, st)
	if err != nil {
		st.check("the step ran to its end", false, "%v", err)
	}
	if s.cfg.OnStep != nil {
		s.cfg.OnStep(st)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", title, err)
	}
	if failed := st.Failed(); len(failed) > 0 {
		return fmt.Errorf("%s: %w: %s: %s", title, ErrCheckFailed, failed[0].Name, failed[0].Detail)
	}
	return nil
}

func (s *scenario) run(ctx context.Context) error {
	for _, st := range []struct {
		name, title, explain string
		f                    func(context.Context, *Step) error
	}{
		{"nodes", "1. Three nodes on a shared underlay", explainNodes, s.buildNodes},
		{"start", "2. Start each node's helper and frontend", explainStart, s.startProcesses},
		{"configure", "3. The agent configures each node", explainConfigure, s.configure},
		{"containers", "4. Two containers per node, addressed by the node's IPAM", explainContainers, s.containers},
		{"isolated", "5. Before any route: containers reach only their own node", explainIsolated, s.isolated},
		{"inject", "6. The agent injects a route to every peer", explainInject, s.inject},
		{"cni", "7. A container runtime's containers: cnitool, the reference bridge plugin and quilt-ipam", explainCNI, s.cni},
		{"leave", "8. Node 3 leaves", explainLeave, s.leave},
		{"restart", "9. SIGKILL and restart node 2's helper and frontend", explainRestart, s.restart},
		{"heal", "10. Flush node 2's routes: the frontend heals them", explainHeal, s.heal},
	} {
		if err := s.step(ctx, st.name, st.title, st.explain, st.f); err != nil {
			return err
		}
	}
	return nil
}

const explainNodes = `
Each node is a network namespace. An underlay namespace holds a bridge (br0)
with a veth to each node's eth0 (192.0.2.N/24, a documentation range that
exists only inside these namespaces). On each node: vxlan100 (VNI 100, UDP
4789, nolearning, local 192.0.2.N, plus 10.42.N.0/32 as the source of its
ARP requests), the container bridge quilt0 with the gateway 10.42.N.1/24,
forwarding on, proxy ARP on vxlan100, strict rp_filter. No routes of ours yet.`

func (s *scenario) buildNodes(ctx context.Context, st *Step) error {
	c := s.c
	if err := c.buildUnderlay(ctx); err != nil {
		return err
	}
	for i := 1; i <= 3; i++ {
		n, err := c.addNode(ctx, i)
		if err != nil {
			return err
		}
		if err := c.prepareNode(n); err != nil {
			return err
		}
		s.rep.Nodes = append(s.rep.Nodes, NodeInfo{Name: n.name, Namespace: n.ns, Underlay: n.underlay.String(), Subnet: n.subnet.String(),
			Gateway: n.gateway.String(), HelperUID: n.helperUID, FrontendUID: n.frontendUID, StateDir: n.stateDir})
	}
	for _, n := range c.nodes {
		for key, want := range map[string]string{
			"net.ipv4.conf." + overlayDev + ".forwarding": "1",
			"net.ipv4.conf." + overlayDev + ".proxy_arp":  "1",
			"net.ipv4.conf." + bridgeDev + ".rp_filter":   "1",
		} {
			got, err := readSysctl(n.ns, key)
			if err != nil {
				return err
			}
			st.check(fmt.Sprintf("%s %s=%s", n.name, key, want), got == want, "read back %q", got)
		}
		ours, err := c.ourRoutes(ctx, n)
		if err != nil {
			return err
		}
		st.check(n.name+" has no routes of ours yet", ours == "", "%s", strings.TrimSpace(ours))
	}
	nr, err := c.routeTable(ctx, c.nodes[0])
	st.Routes = append(st.Routes, nr)
	if s.cfg.OnStart != nil {
		s.cfg.OnStart(s.rep)
	}
	return err
}

const explainStart = `
On each node, as in production: quilt-route-helper as nobody with
CAP_NET_ADMIN as its only capability, serving a SOCK_SEQPACKET socket of its
own; quilt-runtime as an unprivileged uid with no capabilities, serving gRPC
on the node's 127.0.0.1:50051, with its own --state-dir and a short
--resync-interval. Both are started with setpriv inside the node's namespace.`

func (s *scenario) startProcesses(ctx context.Context, st *Step) error {
	for _, n := range s.c.nodes {
		if err := s.c.startHelper(ctx, n); err != nil {
			return err
		}
		if err := s.c.startFrontend(ctx, n); err != nil {
			return err
		}
		for _, p := range []struct {
			proc   *proc
			uid    int
			capEff string
		}{
			{n.helperProc, n.helperUID, "0000000000001000"}, // 1<<12: CAP_NET_ADMIN alone
			{n.frontProc, n.frontendUID, "0000000000000000"},
		} {
			uid, capEff, capPrm, err := procCreds(p.proc.Pid())
			if err != nil {
				return err
			}
			st.check(fmt.Sprintf("%s runs as uid %d with CapEff=CapPrm=%s", p.proc.name, p.uid, p.capEff),
				uid == p.uid && capEff == p.capEff && capPrm == p.capEff, "pid %d: uid %d, CapEff %s, CapPrm %s", p.proc.Pid(), uid, capEff, capPrm)
		}
		status, err := s.status(ctx, n)
		if err != nil {
			return err
		}
		st.check(n.name+" frontend uses its own state directory and our resync interval",
			status.StateDir == n.stateDir && status.ResyncIntervalSeconds == s.cfg.ResyncInterval.Seconds(),
			"GetStatus: state_dir %q, resync_interval_seconds %v", status.StateDir, status.ResyncIntervalSeconds)
	}
	return nil
}

// procCreds reads a process's real uid and effective and permitted
// capability sets from /proc.
func procCreds(pid int) (uid int, capEff, capPrm string, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, "", "", err
	}
	uid = -1
	for _, l := range lines(string(b)) {
		f := strings.Fields(l)
		switch {
		case len(f) >= 2 && f[0] == "Uid:":
			fmt.Sscan(f[1], &uid)
		case len(f) == 2 && f[0] == "CapEff:":
			capEff = f[1]
		case len(f) == 2 && f[0] == "CapPrm:":
			capPrm = f[1]
		}
	}
	return uid, capEff, capPrm, nil
}

// status asks a node's frontend for its state.
func (s *scenario) status(ctx context.Context, n *node) (*quiltpb.GetStatusResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	r, err := n.admin.GetStatus(ctx, &quiltpb.GetStatusRequest{})
	if err != nil {
		return nil, fmt.Errorf("GetStatus on %s: %w", n.name, err)
	}
	return r, nil
}

const explainConfigure = `
The agent (a stand-in here, speaking real gRPC) tells each node its subnet,
then writes one all-zero FDB entry on vxlan100 per peer: frames with no
better FDB match (broadcast ARP, unknown unicast) are copied to every peer's
underlay address. It injects no route yet.`

func (s *scenario) configure(ctx context.Context, st *Step) error {
	nodes := s.c.nodes
	for _, n := range nodes {
		if err := s.a.configure(ctx, n); err != nil {
			return err
		}
	}
	for _, n := range nodes {
		for _, peer := range nodes {
			if peer != n {
				if err := s.a.fdb(ctx, n, peer, "append"); err != nil {
					return err
				}
			}
		}
	}
	for _, n := range nodes {
		out, err := command(ctx, "bridge", "-n", n.ns, "fdb", "show", "dev", overlayDev)
		if err != nil {
			return err
		}
		var dsts []string
		for _, l := range lines(out) {
			if f := strings.Fields(l); len(f) >= 3 && f[0] == zeroMAC && f[1] == "dst" {
				dsts = append(dsts, f[2])
			}
		}
		slices.Sort(dsts)
		var want []string
		for _, peer := range nodes {
			if peer != n {
				want = append(want, peer.underlay.String())
			}
		}
		st.check(n.name+" floods to exactly its peers' underlay addresses", slices.Equal(dsts, want), "all-zero FDB entries to %v", dsts)
	}
	nr, err := s.c.routeTable(ctx, nodes[0])
	st.Routes = append(st.Routes, nr)
	return err
}

const explainContainers = `
For each container the runtime asks the node's IPAM for an address
(QuiltAdmin.AllocateIP), then makes a network namespace with a veth into the
node's quilt0, that address, and a default route via the gateway AllocateIP
named. Each container runs a TCP echo server that answers with its own name.`

func (s *scenario) containers(ctx context.Context, st *Step) error {
	for i, n := range s.c.nodes {
		for _, suffix := range []string{"a", "b"} {
			ct, err := s.c.addContainer(ctx, n, n.name+"-"+suffix, s.a)
			if err != nil {
				return err
			}
			s.rep.Nodes[i].Containers = append(s.rep.Nodes[i].Containers,
				ContainerInfo{ID: ct.id, Namespace: ct.ns, IP: ct.addr.String(), Gateway: ct.gateway.String()})
		}
		a, b := n.containers[0].addr.Addr(), n.containers[1].addr.Addr()
		st.check(n.name+" IPAM gave its containers distinct addresses of its subnet", a != b && n.subnet.Contains(a) && n.subnet.Contains(b),
			"%v and %v in %v", a, b, n.subnet)
	}
	return nil
}

// container finds a container by its ID.
func (s *scenario) container(id string) *container {
	for _, ct := range s.c.allContainers() {
		if ct.id == id {
			return ct
		}
	}
	return nil
}

// expectMatrix probes every pair and checks each against want. A matrix
// that expects pairs to be unreachable spends the kernel's budget of ICMP
// errors, so it first waits until the last such matrix is icmpRefill
// past.
func (s *scenario) expectMatrix(ctx context.Context, st *Step, name string, want func(from, to *container) Outcome) *Matrix {
	if s.expectsUnreachable(want) {
		if wait := time.Until(s.icmpSpent.Add(icmpRefill)); wait > 0 {
			st.Notes = append(st.Notes, fmt.Sprintf("waited %.1fs for the kernel's budget of ICMP errors per source to refill (5 at once, then 1/s; the last matrix with unreachable pairs spent it)", wait.Seconds()))
			select {
			case <-ctx.Done():
			case <-time.After(wait):
			}
		}
		defer func() { s.icmpSpent = time.Now() }()
	}
	m := s.c.matrix(ctx)
	st.Matrix = m
	s.retryTimeouts(ctx, st, m, want)
	var bad []string
	for _, cell := range m.Cells {
		if w := want(s.container(cell.From), s.container(cell.To)); cell.Outcome != w {
			bad = append(bad, fmt.Sprintf("%s->%s %s (want %s: %s)", cell.From, cell.To, cell.Outcome, w, cell.Error))
		}
	}
	detail := fmt.Sprintf("%d probes as expected", len(m.Cells))
	if len(bad) > 0 {
		detail = fmt.Sprintf("%d of %d probes not as expected: %s", len(bad), len(m.Cells), strings.Join(bad[:min(len(bad), 4)], "; "))
	}
	st.check(name, len(bad) == 0, "%s", detail)
	return m
}

// retryTimeouts probes once more, after icmpRefill, each pair that timed
// out where want is unreachable, and puts the second outcome in the
// matrix. Rarely, the gateway's ICMP error for one of the
// matrix's simultaneous SYNs never reaches its socket, and its
// retransmissions get none either (the budget above); a pair that really
// hangs times out again and still fails the check.
func (s *scenario) retryTimeouts(ctx context.Context, st *Step, m *Matrix, want func(from, to *container) Outcome) {
	for i := range m.Cells {
		cell := &m.Cells[i]
		from, to := s.container(cell.From), s.container(cell.To)
		if cell.Outcome != TimedOut || want(from, to) != Unreachable {
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(icmpRefill):
		}
		start := time.Now()
		err := probe(ctx, from, to, matrixTimeout)
		cell.Outcome, cell.Millis, cell.Error = classify(err), ms(time.Since(start)), ""
		if err != nil {
			cell.Error = err.Error()
		}
		st.Notes = append(st.Notes, fmt.Sprintf("%s->%s timed out; probed again after %v: %s in %.1fms", cell.From, cell.To, icmpRefill, cell.Outcome, cell.Millis))
		s.icmpSpent = time.Now()
	}
}

// expectsUnreachable reports whether want has any pair of containers
// unreachable.
func (s *scenario) expectsUnreachable(want func(from, to *container) Outcome) bool {
	all := s.c.allContainers()
	for _, from := range all {
		for _, to := range all {
			if from != to && want(from, to) == Unreachable {
				return true
			}
		}
	}
	return false
}

const explainIsolated = `
Every node knows its subnet and its peers' underlay addresses, but has no
route to any other node's subnet. A container's packet to another node's
container goes to its gateway, which has no route for it and answers ICMP
"network unreachable": the connection fails at once.`

func (s *scenario) isolated(ctx context.Context, st *Step) error {
	s.expectMatrix(ctx, st, "containers reach their own node's containers, and no other node's (unreachable)",
		func(from, to *container) Outcome {
			if from.node == to.node {
				return Reached
			}
			return Unreachable
		})
	return nil
}

// expectRoutes checks that a node holds exactly our routes to peers.
func (s *scenario) expectRoutes(ctx context.Context, st *Step, n *node, peers ...*node) error {
	got, err := s.c.ourRoutes(ctx, n)
	if err != nil {
		return err
	}
	var want []string
	for _, p := range peers {
		want = append(want, fmt.Sprintf("%v dev %s scope link", p.subnet, overlayDev))
	}
	gotLines := lines(got)
	names := []string{}
	for _, p := range peers {
		names = append(names, p.name)
	}
	label := "none"
	if len(names) > 0 {
		label = strings.Join(names, ", ")
	}
	st.check(fmt.Sprintf("%s's kernel holds exactly our routes to: %s", n.name, label), slices.Equal(gotLines, want),
		"proto 81 routes: %q, want %q", gotLines, want)
	return nil
}

// tables records every node's routing table in the step.
func (s *scenario) tables(ctx context.Context, st *Step) error {
	for _, n := range s.c.nodes {
		nr, err := s.c.routeTable(ctx, n)
		if err != nil {
			return err
		}
		st.Routes = append(st.Routes, nr)
	}
	return nil
}

const explainInject = `
The agent calls InjectRoute(peer subnet, "vxlan100") on every node for every
peer. Each frontend validates the request and has its helper add
"10.42.M.0/24 dev vxlan100" with route protocol 81. A packet for a remote
container now leaves through vxlan100: the node ARPs for the container's
address there, the owning peer answers by proxy ARP, and the frame travels
in UDP to that peer's underlay address.`

func (s *scenario) inject(ctx context.Context, st *Step) error {
	nodes := s.c.nodes
	for _, n := range nodes {
		for _, peer := range nodes {
			if peer != n {
				if err := s.a.inject(ctx, n, peer); err != nil {
					return err
				}
			}
		}
	}
	if err := s.tables(ctx, st); err != nil {
		return err
	}
	for _, n := range nodes {
		if err := s.expectRoutes(ctx, st, n, others(nodes, n)...); err != nil {
			return err
		}
	}
	s.expectMatrix(ctx, st, "every container reaches every other one, and the right one answers",
		func(from, to *container) Outcome { return Reached })
	return nil
}

// others returns nodes without the excluded ones.
func others(nodes []*node, except ...*node) []*node {
	var out []*node
	for _, n := range nodes {
		if !slices.Contains(except, n) {
			out = append(out, n)
		}
	}
	return out
}

const explainLeave = `
Node 3 leaves the mesh. The agent on nodes 1 and 2 calls RemoveRoute for
node 3's subnet and deletes its FDB entry for node 3; node 3's agent does the
same for nodes 1 and 2. Traffic between node 3's containers and the others
must now fail fast (ICMP unreachable from the sender's gateway), not hang.`

func (s *scenario) leave(ctx context.Context, st *Step) error {
	nodes := s.c.nodes
	n3 := nodes[2]
	for _, n := range nodes[:2] {
		if err := s.a.remove(ctx, n, n3); err != nil {
			return err
		}
		if err := s.a.fdb(ctx, n, n3, "del"); err != nil {
			return err
		}
	}
	for _, peer := range nodes[:2] {
		if err := s.a.remove(ctx, n3, peer); err != nil {
			return err
		}
		if err := s.a.fdb(ctx, n3, peer, "del"); err != nil {
			return err
		}
	}
	if err := s.tables(ctx, st); err != nil {
		return err
	}
	for _, n := range nodes[:2] {
		if err := s.expectRoutes(ctx, st, n, others(nodes[:2], n)...); err != nil {
			return err
		}
	}
	if err := s.expectRoutes(ctx, st, n3); err != nil {
		return err
	}
	m := s.expectMatrix(ctx, st, "nodes 1 and 2 still reach each other; node 3's containers and theirs are unreachable both ways",
		func(from, to *container) Outcome {
			if from.node == to.node || (from.node != n3 && to.node != n3) {
				return Reached
			}
			return Unreachable
		})
	var slowest float64
	for _, cell := range m.Cells {
		if s.container(cell.To).node == n3 && s.container(cell.From).node != n3 {
			slowest = max(slowest, cell.Millis)
		}
	}
	st.Notes = append(st.Notes, fmt.Sprintf("the slowest failed connection to node 3 took %.1fms: the kernel refused it, no timeout ran", slowest))
	return nil
}

const explainRestart = `
A probe from node 1's container to node 2's opens a new TCP connection every
10ms. Node 2's frontend and helper are killed with SIGKILL (no chance to
clean up), left dead until 50 more probes have got through, then started
again with the same socket and state directory. The routes live in the
kernel, not in the processes, so traffic must not notice; the restarted
frontend must find its state on disk and the kernel already in sync.`

// probeInterval is how often the continuous probes connect.
const probeInterval = 10 * time.Millisecond

func (s *scenario) restart(ctx context.Context, st *Step) error {
	n1, n2 := s.c.nodes[0], s.c.nodes[1]
	before, err := s.c.ourRoutes(ctx, n2)
	if err != nil {
		return err
	}
	pr := startProber(ctx, n1.containers[0], n2.containers[0], probeInterval, time.Second)
	defer pr.stop()
	warm := time.Now()
	if err := waitUntil(ctx, 10*time.Second, nil, func() bool { return pr.successesAfter(warm) >= 5 }); err != nil {
		return fmt.Errorf("probe %s -> %s never worked: %w", pr.from.id, pr.to.id, err)
	}

	killed := time.Now()
	for _, p := range []*proc{n2.frontProc, n2.helperProc} {
		if _, err := p.kill(); err != nil {
			return err
		}
		st.check(p.name+" was killed by SIGKILL", p.KilledBy(syscall.SIGKILL), "pid %d: %v", p.Pid(), p.Err())
	}
	during, err := s.c.ourRoutes(ctx, n2)
	if err != nil {
		return err
	}
	st.check("node2's routes stay in the kernel while neither process runs", during == before, "%q, before %q", lines(during), lines(before))
	// Both stay dead until traffic has been seen to flow without them.
	if err := waitUntil(ctx, 10*time.Second, nil, func() bool { return pr.successesAfter(killed) >= 50 }); err != nil {
		return fmt.Errorf("probe %s -> %s with node2's helper and frontend dead: %w", pr.from.id, pr.to.id, err)
	}
	deadEnd := time.Now()

	if err := s.c.startHelper(ctx, n2); err != nil {
		return err
	}
	frontendStarted := time.Now()
	if err := s.c.startFrontend(ctx, n2); err != nil {
		return err
	}
	serving := time.Now()
	s.rep.Measurements.ControlPlaneDownSeconds = serving.Sub(killed).Seconds()

	// Keep probing through the new frontend's first resync: a frontend that
	// lost its state would see our routes as strays and remove them.
	var status *quiltpb.GetStatusResponse
	err = waitUntil(ctx, s.cfg.ResyncInterval+s.cfg.HealSlack, n2.frontProc, func() bool {
		status, err = s.status(ctx, n2)
		if err != nil || status.LastResync == nil {
			return false
		}
		t, perr := time.Parse(time.RFC3339Nano, status.LastResync.Time)
		return perr == nil && !t.Before(frontendStarted)
	})
	if err != nil {
		return fmt.Errorf("node2's restarted frontend reported no resync: %w", err)
	}
	lr := status.LastResync
	inSync := cmp.Diff(&quiltpb.ResyncStatus{Ok: true}, lr, protocmp.Transform(), protocmp.IgnoreFields(lr, "time", "duration_seconds"))
	found := "ok, nothing repaired"
	if inSync != "" {
		found = "(-want +got):\n" + inSync
	}
	st.check("node2's restarted frontend found the kernel in sync on its first resync, with nothing to repair", inSync == "",
		"resync at %s: %s", lr.Time, found)
	resynced := time.Now()
	if err := waitUntil(ctx, 10*time.Second, nil, func() bool { return pr.successesAfter(resynced) >= 5 }); err != nil {
		return fmt.Errorf("probe %s -> %s after the restarted frontend's resync: %w", pr.from.id, pr.to.id, err)
	}
	run := pr.stop()
	st.Probes = append(st.Probes, run)

	down := pr.probesBetween(killed, deadEnd)
	st.check("traffic flowed while node2 had no helper and no frontend", down >= 10 && run.Failures == 0,
		"%d probes in the %.0fms both were dead, %d failed in the whole run", down, ms(deadEnd.Sub(killed)), run.Failures)
	st.check("no probe failed across the kill and the restart", run.Failures == 0 && run.Probes > 0,
		"%d probes, %d failed, longest gap between successes %.0fms", run.Probes, run.Failures, run.MaxGapMs)
	after, err := s.c.ourRoutes(ctx, n2)
	if err != nil {
		return err
	}
	st.check("node2's routes are unchanged after the restart", after == before, "%q, before %q", lines(after), lines(before))

	// The restarted frontend's IPAM state came back from its state dir.
	ct := n2.containers[0]
	actx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	r, err := n2.admin.AllocateIP(actx, &quiltpb.AllocateIPRequest{ContainerId: ct.id})
	if err != nil {
		return fmt.Errorf("AllocateIP(%s) after restart: %w", ct.id, err)
	}
	st.Calls = append(st.Calls, Call{Node: n2.name, Call: fmt.Sprintf("QuiltAdmin.AllocateIP(%s)", ct.id), Success: true,
		Answer: fmt.Sprintf("%s existing=%v", r.Ip, r.Existing)})
	st.check("node2's IPAM kept its allocations across the SIGKILL", r.Existing && r.Ip == ct.addr.Addr().String(),
		"AllocateIP(%s) = %s existing=%v, before the restart %v", ct.id, r.Ip, r.Existing, ct.addr.Addr())

	s.rep.Measurements.RestartProbes = run.Probes
	s.rep.Measurements.RestartFailures = run.Failures
	s.rep.Measurements.RestartMaxGapMs = run.MaxGapMs
	st.Notes = append(st.Notes, fmt.Sprintf("control plane down %.2fs (SIGKILL to SERVING); data plane: %d of %d probes failed, longest gap %.0fms",
		s.rep.Measurements.ControlPlaneDownSeconds, run.Failures, run.Probes, run.MaxGapMs))
	return s.tables(ctx, st)
}

const explainHeal = `
A reboot stand-in: "ip route flush proto 81" on node 2 removes every route
of ours from its kernel, behind the frontend's back. Node 1 still routes to
node 2, but node 2 cannot answer. No one calls the agent: the helper sees
routes of quilt's go by another process's hand and tells the frontend at
once through its watch, and the frontend has the helper re-add the ones it
still wants (its periodic resync, which compares every desired route with
the kernel's, is the backstop). Probes run both ways every 10ms from the
moment of the flush.`

// flushRoundRe reads how many routes the first round of "ip -s route
// flush" deleted.
var flushRoundRe = regexp.MustCompile(`\*\*\* Round 1, deleting (\d+) entries \*\*\*`)

func (s *scenario) heal(ctx context.Context, st *Step) error {
	n1, n2 := s.c.nodes[0], s.c.nodes[1]
	want, err := s.c.ourRoutes(ctx, n2)
	if err != nil {
		return err
	}
	if len(lines(want)) == 0 {
		return errors.New("node2 has no routes of ours to flush")
	}
	rpcs := s.a.rpcCount()
	rpcLines := strings.Count(n2.frontProc.Output(), "RPC: ")
	created := strings.Count(n2.helperProc.Output(), "result=created")
	const readdedLine = "resync: re-added missing route"
	resynced := strings.Count(n2.frontProc.Output(), readdedLine)

	const healProbeTimeout = 100 * time.Millisecond
	ab := startProber(ctx, n1.containers[0], n2.containers[0], probeInterval, healProbeTimeout)
	defer ab.stop()
	ba := startProber(ctx, n2.containers[0], n1.containers[0], probeInterval, healProbeTimeout)
	defer ba.stop()
	warm := time.Now()
	if err := waitUntil(ctx, 10*time.Second, nil, func() bool { return ab.successesAfter(warm) > 0 && ba.successesAfter(warm) > 0 }); err != nil {
		return fmt.Errorf("probes between node1 and node2 did not work before the flush: %w", err)
	}

	// The helper's watch repairs within a millisecond or so, before even a
	// listing in the same ip process: so what the flush removed is read
	// off its own statistics, whose first round counts the routes it found
	// and deleted before any repair.
	batch := filepath.Join(s.c.dir, "flush.batch")
	if err := os.WriteFile(batch, []byte("route flush proto 81\n"), 0o644); err != nil {
		return err
	}
	flushed := time.Now()
	stats, err := s.c.ip(ctx, "-s", "-n", n2.ns, "-4", "-batch", batch)
	if err != nil {
		return err
	}
	flushDone := time.Now()
	st.Calls = append(st.Calls, Call{Node: n2.name, Call: "ip route flush proto 81", Success: true})
	first := flushRoundRe.FindStringSubmatch(stats)
	st.check("the flush removed every route of ours from node2", first != nil && first[1] == strconv.Itoa(len(lines(want))),
		"ip -s route flush: %q; node2 had %d", strings.TrimSpace(stats), len(lines(want)))

	deadline := flushed.Add(s.cfg.ResyncInterval + s.cfg.HealSlack)
	var routesBack, healed time.Time
	for time.Now().Before(deadline) && (routesBack.IsZero() || healed.IsZero()) {
		if routesBack.IsZero() {
			if got, err := s.c.ourRoutes(ctx, n2); err == nil && got == want {
				routesBack = time.Now()
			}
		}
		t1, ok1 := ab.firstSuccessAfter(flushDone)
		t2, ok2 := ba.firstSuccessAfter(flushDone)
		if ok1 && ok2 && healed.IsZero() {
			healed = t1
			if t2.After(t1) {
				healed = t2
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	abRun, baRun := ab.stop(), ba.stop()
	st.Probes = append(st.Probes, abRun, baRun)
	limit := s.cfg.ResyncInterval + s.cfg.HealSlack
	st.check(fmt.Sprintf("node2's kernel holds its routes again within one resync interval (%v) plus %v", s.cfg.ResyncInterval, s.cfg.HealSlack),
		!routesBack.IsZero(), "after %s", since(flushed, routesBack, limit))
	st.check("TCP works again both ways between node1 and node2 within the same bound", !healed.IsZero(),
		"after %s", since(flushed, healed, limit))
	st.check("the heal took no agent call", s.a.rpcCount() == rpcs && strings.Count(n2.frontProc.Output(), "RPC: ") == rpcLines,
		"agent calls %d -> %d; RPCs in node2's frontend log %d -> %d", rpcs, s.a.rpcCount(), rpcLines, strings.Count(n2.frontProc.Output(), "RPC: "))
	readded := strings.Count(n2.helperProc.Output(), "result=created") - created
	resyncAdds := strings.Count(n2.frontProc.Output(), readdedLine) - resynced
	st.check("node2's frontend re-added the flushed routes through its helper (both logs say so)",
		readded >= len(lines(want)) && resyncAdds >= len(lines(want)),
		"%d %q lines in the frontend's log and %d route adds with result=created in the helper's audit log since the flush; %d routes flushed",
		resyncAdds, readdedLine, readded, len(lines(want)))
	if !routesBack.IsZero() {
		s.rep.Measurements.RoutesBackSeconds = routesBack.Sub(flushed).Seconds()
	}
	if !healed.IsZero() {
		s.rep.Measurements.HealSeconds = healed.Sub(flushed).Seconds()
	}
	st.Notes = append(st.Notes, fmt.Sprintf("routes back after %.3fs, TCP both ways after %.3fs (probe timeout %v adds up to that much to the second figure)",
		s.rep.Measurements.RoutesBackSeconds, s.rep.Measurements.HealSeconds, healProbeTimeout))
	if err := s.tables(ctx, st); err != nil {
		return err
	}
	n3 := s.c.nodes[2]
	s.expectMatrix(ctx, st, "after the heal, nodes 1 and 2 reach each other again; node 3 stays unreachable",
		func(from, to *container) Outcome {
			if from.node == to.node || (from.node != n3 && to.node != n3) {
				return Reached
			}
			return Unreachable
		})
	return nil
}

// since describes when something happened after start, or that it did not
// within limit.
func since(start, at time.Time, limit time.Duration) string {
	if at.IsZero() {
		return fmt.Sprintf("never, within %v", limit)
	}
	return fmt.Sprintf("%.3fs", at.Sub(start).Seconds())
}
