package bench

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
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/quiltmesh/quilt-runtime/internal/testutil"
	"github.com/quiltmesh/quilt-runtime/proto/quiltpb"
)

// Identities of (c)'s processes, as packaging runs them: the helper as
// nobody with CAP_NET_ADMIN alone, the frontend as an unprivileged uid in
// the helper socket's group. No passwd entries are needed.
const (
	nobody      = 65534
	frontendUID = 64210
	socketGID   = 64310
	grpcAddr    = "127.0.0.1:50051" // in each system's own namespace
)

var systemNames = map[string]string{"a": "kernel floor", "b": "one process", "c": "privilege-separated"}

// runner is one invocation: its directory (binaries, sockets, state,
// logs) and the namespaces it made.
type runner struct {
	cfg  Config
	set  Settings // as the report shows them: row titles use them
	log  *slog.Logger
	dir  string
	bins map[string]string // file name -> copy in dir
	seq  int
}

// Run measures every system for every N, each in namespaces of its own,
// and removes every namespace, process and file it made before it returns
// (Config.KeepDir keeps the files), also when a workload fails or ctx is
// cancelled. The report holds whatever was measured by then.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	rep := &Report{Started: time.Now()}
	if err := cfg.defaults(); err != nil {
		return rep, err
	}
	rep.Settings = Settings{Cluster: Cluster.String(), NodeSubnet: netip.PrefixFrom(Cluster.Addr(), NodePrefixLen).String(),
		Interface: Device, Clients: cfg.Clients, KernelBatch: cfg.KernelBatch, ApplyChunk: ApplyChunk,
		PhaseLimit: cfg.PhaseLimit.Seconds(), ResyncInterval: cfg.ResyncInterval.Seconds(), Deletions: cfg.Deletions, Veths: cfg.Veths,
		Systems: cfg.Systems}
	rep.Machine = machine()
	if os.Geteuid() != 0 {
		return rep, ErrNotRoot
	}
	defer func() {
		rep.Machine.LoadEnd = loadavg()
		rep.Seconds = time.Since(rep.Started).Seconds()
	}()
	swept, err := sweepStale()
	if len(swept) > 0 {
		cfg.Log.Info("removed namespaces left by a killed run", "namespaces", swept)
	}
	if err != nil {
		return rep, fmt.Errorf("sweep namespaces of killed runs: %w", err)
	}
	r := &runner{cfg: cfg, set: rep.Settings, log: cfg.Log}
	if err := r.prepare(); err != nil {
		return rep, err
	}
	defer r.close()
	for _, n := range cfg.Ns {
		plan, err := NewPlan(Cluster, NodePrefixLen, n)
		if err != nil {
			return rep, err
		}
		run := Scale{N: n, Peers: len(plan.Peers)}
		if plan.Capped {
			run.Note = fmt.Sprintf("N=%s asked; %v holds %s /%d subnets: the node's own %v and %s peers",
				group(float64(n)), Cluster, group(float64(len(plan.Peers)+1)), NodePrefixLen, plan.Node, group(float64(len(plan.Peers))))
		}
		for _, id := range cfg.Systems {
			run.Systems = append(run.Systems, r.system(ctx, id, plan))
			if ctx.Err() != nil {
				break
			}
		}
		run.ratios()
		rep.Runs = append(rep.Runs, run)
		if ctx.Err() != nil {
			break
		}
	}
	rep.Targets = targets(rep.Runs, rep.Settings)
	if err := ctx.Err(); err != nil {
		rep.Error = "interrupted: " + err.Error()
		return rep, err
	}
	return rep, nil
}

// prepare makes the run's directory, traversable by every uid, with copies
// of the binaries the chosen systems need.
func (r *runner) prepare() error {
	var err error
	if r.dir, err = os.MkdirTemp("", "quilt-bench-"); err != nil {
		return err
	}
	if err := os.Chmod(r.dir, 0o755); err != nil {
		return err
	}
	need := map[string][]string{"b": {SingleBin}, "c": {HelperBin, FrontendBin}}
	r.bins = map[string]string{}
	for _, id := range r.cfg.Systems {
		for _, name := range need[id] {
			dst := filepath.Join(r.dir, name)
			if err := copyFile(filepath.Join(r.cfg.BinDir, name), dst); err != nil {
				return fmt.Errorf("%s (build it with make bench, or point -bin at it): %w", name, err)
			}
			r.bins[name] = dst
		}
	}
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	return errors.Join(err, out.Close())
}

// close removes what is left: namespaces (and what runs in them), and the
// directory unless it is kept.
func (r *runner) close() {
	for _, ns := range ourNamespaces() {
		if err := removeNetns(ns); err != nil {
			r.log.Warn("could not remove namespace", "namespace", ns, "err", err)
		}
	}
	if r.cfg.KeepDir {
		r.log.Info("kept the run's directory: process logs and state files", "dir", r.dir)
		return
	}
	os.RemoveAll(r.dir)
}

// newNetns makes the next namespace of this run, with vxlan100.
func (r *runner) newNetns(ctx context.Context, id string) (string, error) {
	r.seq++
	name := fmt.Sprintf("%s%d-%s%d", namePrefix, os.Getpid(), id, r.seq)
	if err := createNetns(ctx, name, Device); err != nil {
		removeNetns(name)
		return "", err
	}
	return name, nil
}

// system measures one system for one plan, in a namespace made for it and
// removed before it returns, with the one of its extra veths, if any.
func (r *runner) system(ctx context.Context, id string, plan Plan) System {
	s := System{ID: id, Name: systemNames[id]}
	log := r.log.With("system", "("+id+")", "peers", len(plan.Peers))
	log.Info("starting")
	ns, err := r.newNetns(ctx, id)
	if err != nil {
		s.Error = err.Error()
		return s
	}
	defer removeNetns(ns)
	defer removeNetns(vethNetns(ns)) // after the processes stop, so no measured process sees the veths go
	s.Namespace = ns
	switch id {
	case "a":
		err = r.kernel(ctx, &s, ns, plan, log)
	case "b":
		err = r.single(ctx, &s, ns, plan, log)
	case "c":
		err = r.privsep(ctx, &s, ns, plan, log)
	}
	switch {
	case ctx.Err() != nil:
		s.Error = "interrupted"
	case err != nil:
		s.Error = err.Error()
		log.Warn("stopped", "err", err)
	}
	return s
}

// record turns a workload's outcome into a result. lat is per operation;
// nil for workloads timed only as a whole.
func record(id string, peers int, set Settings, of, done int, took time.Duration, lat []time.Duration, err error) Result {
	res := Result{Workload: id, Title: workload(id).Title(peers, set), Routes: done, Of: of, Seconds: took.Seconds(), Status: StatusOK}
	if done > 0 && took > 0 {
		res.RoutesPerSec = float64(done) / took.Seconds()
	}
	if len(lat) > 0 {
		p50, p99 := latencies(lat)
		res.P50Ms, res.P99Ms = ptr(p50.Seconds()*1e3), ptr(p99.Seconds()*1e3)
	}
	switch {
	case errors.Is(err, context.Canceled):
		res.Status, res.Detail = StatusPartial, fmt.Sprintf("interrupted: %d of %d routes", done, of)
	case errors.Is(err, errUnimplemented):
		res.Status, res.Detail = StatusUnimplemented, err.Error()
	case err != nil:
		res.Status, res.Detail = StatusError, err.Error()
	case done < of:
		res.Status, res.Detail = StatusPartial, fmt.Sprintf("stopped at the phase limit: %d of %d routes", done, of)
	}
	return res
}

// countOurs returns how many IPv4 routes of our protocol the namespace's
// main table holds.
func countOurs(ctx context.Context, ns string) (int, error) {
	out, err := command(ctx, "ip", "-4", "-n", ns, "route", "show", "table", "main", "proto", fmt.Sprint(quiltProto))
	return strings.Count(out, "\n"), err
}

// verify checks the kernel holds exactly want routes of ours after a
// workload, and turns a result that says otherwise into an error.
func verify(ctx context.Context, ns string, want int, res *Result) error {
	got, err := countOurs(ctx, ns)
	if err == nil && got != want {
		err = fmt.Errorf("after %s the kernel holds %d routes of ours, want %d", res.Workload, got, want)
	}
	if err != nil && res.Status != StatusError {
		res.Status, res.Detail = StatusError, err.Error()
	}
	return err
}

// kernel measures (a): raw rtnetlink from this process, pipelined then one
// ack per message, adds then deletes.
func (r *runner) kernel(ctx context.Context, s *System, ns string, plan Plan, log *slog.Logger) error {
	c, err := openNL(ns, Device, r.cfg.KernelBatch)
	if err != nil {
		return err
	}
	defer c.close()
	n, installed := len(plan.Peers), 0
	for _, step := range []struct {
		id        string
		add, pipe bool
	}{
		{"kernel-add-pipelined", true, true},
		{"kernel-delete-pipelined", false, true},
		{"kernel-add-sequential", true, false},
		{"kernel-delete-sequential", false, false},
	} {
		var res Result
		if step.pipe {
			done, took, err := c.pipelined(ctx, step.add, plan.Peers, r.cfg.KernelBatch, time.Now().Add(r.cfg.PhaseLimit))
			res = record(step.id, n, r.set, n, done, took, nil, err)
		} else {
			lat, took, err := c.sequential(ctx, step.add, plan.Peers, time.Now().Add(r.cfg.PhaseLimit))
			res = record(step.id, n, r.set, n, len(lat), took, lat, err)
		}
		if step.add {
			installed = res.Routes
		} else {
			installed -= res.Routes
		}
		if ctx.Err() != nil {
			s.Results = append(s.Results, res)
			return ctx.Err()
		}
		verr := verify(ctx, ns, installed, &res)
		s.Results = append(s.Results, res)
		log.Info(res.Title, "routes", res.Routes, "took", time.Duration(res.Seconds*1e9), "status", res.Status)
		if res.Status == StatusError || verr != nil {
			return fmt.Errorf("%s: %s", res.Title, res.Detail)
		}
		if res.Status == StatusPartial && !step.add {
			return fmt.Errorf("%s stopped at the phase limit with routes left", res.Title) // the next add would collide
		}
	}
	return nil
}

func joinDetail(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

// single measures (b): quilt-bench-single, as root, in the namespace.
func (r *runner) single(ctx context.Context, s *System, ns string, plan Plan, log *slog.Logger) error {
	dir := filepath.Join(r.dir, ns)
	state := filepath.Join(dir, "state")
	if err := os.MkdirAll(state, 0o700); err != nil {
		return err
	}
	p, err := startProc(ns, SingleBin, r.bins[SingleBin], filepath.Join(dir, "single.log"), nil,
		"--netns", ns, "--grpc-addr", grpcAddr, "--state-dir", state, "--cluster-cidr", Cluster.String(),
		"--node-prefix-len", fmt.Sprint(NodePrefixLen), "--allowed-interface", Device, "--resync-interval", r.cfg.ResyncInterval.String())
	if err != nil {
		return err
	}
	defer p.Kill()
	return r.drive(ctx, s, ns, plan, log, []*proc{p})
}

// privsep measures (c): the real helper, as nobody with CAP_NET_ADMIN
// alone, and the real frontend, as an unprivileged uid with no
// capabilities, both in the namespace, as e2e/overlay and packaging run
// them.
func (r *runner) privsep(ctx context.Context, s *System, ns string, plan Plan, log *slog.Logger) error {
	dir := filepath.Join(r.dir, ns)
	run, state := filepath.Join(dir, "run"), filepath.Join(dir, "state")
	sock := filepath.Join(run, "route-helper.sock")
	for _, d := range []struct {
		path     string
		uid, gid int
		mode     os.FileMode
	}{{dir, 0, 0, 0o755}, {run, nobody, socketGID, 0o750}, {state, frontendUID, frontendUID, 0o700}} {
		if err := os.Mkdir(d.path, d.mode); err != nil {
			return err
		}
		if err := errors.Join(os.Chown(d.path, d.uid, d.gid), os.Chmod(d.path, d.mode)); err != nil {
			return err
		}
	}
	helper, err := startProc(ns, HelperBin, r.bins[HelperBin], filepath.Join(dir, "helper.log"),
		[]string{"setpriv", fmt.Sprintf("--reuid=%d", nobody), fmt.Sprintf("--regid=%d", socketGID), "--clear-groups",
			"--inh-caps=-all,+net_admin", "--ambient-caps=-all,+net_admin", "--bounding-set=-all,+net_admin", "--no-new-privs", "--"},
		"--socket", sock, "--allow-uid", fmt.Sprint(frontendUID), "--cluster-cidr", Cluster.String(),
		"--node-prefix-len", fmt.Sprint(NodePrefixLen), "--allowed-interface", Device)
	if err != nil {
		return err
	}
	defer helper.Kill()
	if err := waitFor(ctx, helper, func() bool { return helper.logHas("route helper serving") }); err != nil {
		return err
	}
	front, err := startProc(ns, FrontendBin, r.bins[FrontendBin], filepath.Join(dir, "frontend.log"),
		[]string{"setpriv", fmt.Sprintf("--reuid=%d", frontendUID), fmt.Sprintf("--regid=%d", frontendUID), fmt.Sprintf("--groups=%d", socketGID),
			"--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"},
		"--grpc-addr", grpcAddr, "--helper-socket", sock, "--state-dir", state, "--cluster-cidr", Cluster.String(),
		"--node-prefix-len", fmt.Sprint(NodePrefixLen), "--allowed-interface", Device, "--resync-interval", r.cfg.ResyncInterval.String())
	if err != nil {
		return err
	}
	defer front.Kill()
	return r.drive(ctx, s, ns, plan, log, []*proc{helper, front})
}

// waitFor polls cond until it holds, p exits, ctx ends or 20s pass.
func waitFor(ctx context.Context, p *proc, cond func() bool) error {
	if err := testutil.Until(ctx, 20*time.Second, p.Proc, cond); err != nil {
		return fmt.Errorf("%s: %w; its last words:\n%s", p.name, err, p.tail(20))
	}
	return nil
}

// dial opens the clients' connections into the namespace and waits until
// the server answers health checks as SERVING on every one, so no
// workload pays for a connection set-up.
func (r *runner) dial(ctx context.Context, ns string, server *proc) (*clients, error) {
	c := &clients{}
	for range r.cfg.Clients {
		cc, err := grpc.NewClient("passthrough:///"+grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) { return dialIn(ctx, ns, addr) }))
		if err != nil {
			c.close()
			return nil, err
		}
		c.conns = append(c.conns, cc)
		c.rt = append(c.rt, quiltpb.NewQuiltRuntimeClient(cc))
		health := healthpb.NewHealthClient(cc)
		if err := waitFor(ctx, server, func() bool {
			cctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			h, err := health.Check(cctx, &healthpb.HealthCheckRequest{Service: quiltpb.QuiltRuntime_ServiceDesc.ServiceName})
			return err == nil && h.Status == healthpb.HealthCheckResponse_SERVING
		}); err != nil {
			c.close()
			return nil, err
		}
	}
	c.admin, c.health = quiltpb.NewQuiltAdminClient(c.conns[0]), healthpb.NewHealthClient(c.conns[0])
	return c, nil
}

// drive runs the gRPC workloads against the server in ns, whose last
// process serves gRPC, then reads every process's figures.
func (r *runner) drive(ctx context.Context, s *System, ns string, plan Plan, log *slog.Logger, procs []*proc) error {
	cl, err := r.dial(ctx, ns, procs[len(procs)-1])
	if err != nil {
		return err
	}
	defer cl.close()
	if resp, err := cl.rt[0].ConfigureNodeSubnet(ctx, &quiltpb.ConfigureNodeSubnetRequest{Subnet: plan.Node.String()}); err != nil || !resp.Success {
		return fmt.Errorf("ConfigureNodeSubnet(%v): %v %v", plan.Node, err, resp.GetError())
	}
	werr := r.workloads(ctx, s, ns, plan, cl, log)
	if ctx.Err() != nil {
		return werr // interrupted: the processes may have had the signal too
	}
	for _, p := range procs {
		pr, err := p.info(p.reportedGOMAXPROCS())
		if err != nil {
			return errors.Join(werr, err)
		}
		s.Processes = append(s.Processes, pr)
	}
	return werr
}

// workers is the number of concurrent clients of a workload.
func (r *runner) workers(id string) int {
	if strings.HasSuffix(id, "-concurrent") {
		return r.cfg.Clients
	}
	return 1
}

// workloads runs the gRPC workloads in order, each on the routes the one
// before left: the present set.
func (r *runner) workloads(ctx context.Context, s *System, ns string, plan Plan, cl *clients, log *slog.Logger) error {
	n := len(plan.Peers)
	names := make([]string, n)
	for i, p := range plan.Peers {
		names[i] = p.String()
	}
	present := make([]bool, n)
	pick := func(want bool) []int {
		var idx []int
		for i, p := range present {
			if p == want {
				idx = append(idx, i)
			}
		}
		return idx
	}
	count := func() int { return len(pick(true)) }
	applyUnimplemented := false
	for _, wl := range Workloads {
		if strings.HasPrefix(wl.ID, "kernel-") {
			continue // (a)'s
		}
		if wl.Watch && s.ID == "b" {
			s.Results = append(s.Results, Result{Workload: wl.ID, Title: wl.Title(n, r.set), Status: StatusSkipped,
				Detail: "no watch: the one-process baseline repairs drift on its periodic resync alone"})
			continue
		}
		// Adds work on the routes absent, removals, the re-inject and the
		// repairs on those present; the health checks on no route, as many
		// times; the deletions on a spread of Config.Deletions of them.
		add := strings.Contains(wl.ID, "inject") || wl.ID == "apply-add"
		idx := pick(!add)
		switch {
		case wl.ID == "health-sequential":
			idx = make([]int, n)
		case wl.ID == "reinject-sequential":
			idx = pick(true)
		case wl.ID == "repair-delete":
			idx = spread(idx, r.cfg.Deletions)
		case wl.ID == "apply-remove" && applyUnimplemented && len(idx) == 0:
			idx = pick(false) // still ask, so the table says whether the server has the RPC
		}
		if len(idx) == 0 {
			s.Results = append(s.Results, Result{Workload: wl.ID, Title: wl.Title(n, r.set), Status: StatusSkipped, Detail: "no routes to work on"})
			continue
		}
		if wl.ID == "inject-veths" {
			t0 := time.Now()
			if err := addVeths(ctx, ns, r.cfg.Veths); err != nil {
				s.Results = append(s.Results, Result{Workload: wl.ID, Title: wl.Title(n, r.set), Of: len(idx), Status: StatusError, Detail: err.Error()})
				return fmt.Errorf("%s: %w", wl.Title(n, r.set), err)
			}
			log.Info("made the extra veths", "veths", r.cfg.Veths, "took", time.Since(t0).Round(time.Millisecond))
		}
		deadline := time.Now().Add(r.cfg.PhaseLimit)
		var res Result
		switch wl.ID {
		case "health-sequential":
			o := phase(ctx, idx, 1, deadline, func(ctx context.Context, _, _ int) error { return cl.check(ctx) })
			res = record(wl.ID, n, r.set, len(idx), len(o.done), o.took, o.lat, o.err)
			res.Detail = "calls, not routes"
		case "inject-sequential", "reinject-sequential", "inject-concurrent", "inject-veths":
			o := phase(ctx, idx, r.workers(wl.ID), deadline, func(ctx context.Context, w, i int) error { return cl.inject(ctx, w, names[i], Device) })
			for _, i := range o.done {
				present[i] = true
			}
			res = record(wl.ID, n, r.set, len(idx), len(o.done), o.took, o.lat, o.err)
		case "remove-sequential", "remove-concurrent":
			o := phase(ctx, idx, r.workers(wl.ID), deadline, func(ctx context.Context, w, i int) error { return cl.remove(ctx, w, names[i]) })
			for _, i := range o.done {
				present[i] = false
			}
			res = record(wl.ID, n, r.set, len(idx), len(o.done), o.took, o.lat, o.err)
		case "repair-delete":
			o := r.repairDelete(ctx, ns, plan.Peers, idx, deadline)
			res = record(wl.ID, n, r.set, len(idx), len(o.done), o.took, o.lat, o.err)
		case "repair-bounce":
			b, err := r.repairBounce(ctx, ns, plan.Peers, len(idx))
			res = record(wl.ID, n, r.set, len(idx), b.back, b.took, nil, err)
			if b.down > 0 {
				res.Note = b.note()
			}
		case "apply-add", "apply-remove":
			dev, want := Device, quiltpb.RouteResult_ROUTE_RESULT_CREATED
			if !add {
				dev, want = "", quiltpb.RouteResult_ROUTE_RESULT_DELETED
			}
			took, err := cl.apply(ctx, changes(plan.Peers, idx, dev), want, r.cfg.PhaseLimit)
			done := 0
			if err == nil {
				done = len(idx)
				for _, i := range idx {
					present[i] = add
				}
			}
			applyUnimplemented = errors.Is(err, errUnimplemented)
			res = record(wl.ID, n, r.set, len(idx), done, took, nil, err)
			if done > 0 {
				res.Detail = joinDetail(res.Detail, fmt.Sprintf("one call, %d messages", (len(idx)+ApplyChunk-1)/ApplyChunk))
			}
		}
		if ctx.Err() != nil {
			s.Results = append(s.Results, res)
			return ctx.Err()
		}
		verr := verify(ctx, ns, count(), &res)
		s.Results = append(s.Results, res)
		log.Info(res.Title, "routes", res.Routes, "took", time.Duration(res.Seconds*1e9), "status", res.Status)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if res.Status == StatusError || verr != nil {
			return fmt.Errorf("%s: %s", res.Title, res.Detail)
		}
	}
	return nil
}
