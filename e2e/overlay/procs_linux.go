package overlay

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/quiltmesh/quilt-runtime/internal/testutil"
	"github.com/quiltmesh/quilt-runtime/proto/quiltpb"
)

// proc is a helper or frontend process of a node. Its output is kept in
// memory, for checks, and in its log file, for people.
type proc struct {
	*testutil.Proc
	name string
}

// kill ends the process with SIGKILL, if it still runs, and reports
// whether it did.
func (p *proc) kill() (bool, error) {
	running := !p.Exited()
	if err := p.Kill(); err != nil {
		return running, fmt.Errorf("%s: %w", p.name, err)
	}
	return running, nil
}

// start runs argv inside the node's namespace. `ip netns exec` and setpriv
// both exec, so the pid is the program's own.
func (c *cluster) start(n *node, name string, argv ...string) (*proc, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, errors.New("cluster closed")
	}
	logf, err := os.OpenFile(filepath.Join(n.dir, name+".log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", n.ns}, argv...)...)
	out := &testutil.LogBuffer{Tee: logf}
	cmd.Stdout, cmd.Stderr = out, out
	tp, err := testutil.Start(cmd)
	if err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s %s: %w", n.name, name, err)
	}
	p := &proc{Proc: tp, name: n.name + " " + name}
	c.log.Info("started", "process", p.name, "pid", p.Pid())
	go func() {
		<-p.Done() // its last write is in
		logf.Close()
	}()
	c.procs = append(c.procs, p)
	return p, nil
}

// prepareNode makes the node's directories: the helper's socket directory
// (the helper's uid owns it, the socket group may enter it) and the
// frontend's state directory (its uid alone, mode 0700).
func (c *cluster) prepareNode(n *node) error {
	n.dir = filepath.Join(c.dir, n.name)
	n.socket = filepath.Join(n.dir, "run", "route-helper.sock")
	n.stateDir = filepath.Join(n.dir, "state")
	n.runtimeSock = filepath.Join(n.dir, "api", "runtime.sock")
	n.netconf = filepath.Join(n.dir, "net.d")
	for _, d := range []struct {
		path     string
		uid, gid int
		mode     os.FileMode
	}{
		{n.dir, 0, 0, 0o755},
		{filepath.Dir(n.socket), n.helperUID, n.socketGID, 0o750},
		{n.stateDir, n.frontendUID, n.frontendUID, 0o700},
		{filepath.Dir(n.runtimeSock), n.frontendUID, n.frontendUID, 0o755},
		{n.netconf, 0, 0, 0o755},
	} {
		if err := os.Mkdir(d.path, d.mode); err != nil {
			return err
		}
		if err := os.Chown(d.path, d.uid, d.gid); err != nil {
			return err
		}
		if err := os.Chmod(d.path, d.mode); err != nil { // past the umask
			return err
		}
	}
	return writeConflist(n)
}

// startHelper starts quilt-route-helper in the node's namespace as it runs
// in production: as nobody, with CAP_NET_ADMIN as its only capability,
// admitting only the frontend's uid. Its socket's group is the socket
// group, so the frontend (a member) may connect.
func (c *cluster) startHelper(ctx context.Context, n *node) error {
	p, err := c.start(n, "helper",
		"setpriv", fmt.Sprintf("--reuid=%d", n.helperUID), fmt.Sprintf("--regid=%d", n.socketGID), "--clear-groups",
		"--inh-caps=-all,+net_admin", "--ambient-caps=-all,+net_admin", "--bounding-set=-all,+net_admin", "--no-new-privs", "--",
		c.helper, "--socket", n.socket, "--allow-uid", fmt.Sprint(n.frontendUID))
	if err != nil {
		return err
	}
	n.helperProc = p
	return waitUntil(ctx, 15*time.Second, p, func() bool {
		return strings.Contains(p.Output(), "route helper serving")
	})
}

// startFrontend starts quilt-runtime in the node's namespace as an
// unprivileged uid with no capabilities, on the namespace's loopback, and
// waits until it reports SERVING (its helper answers).
func (c *cluster) startFrontend(ctx context.Context, n *node) error {
	p, err := c.start(n, "frontend",
		"setpriv", fmt.Sprintf("--reuid=%d", n.frontendUID), fmt.Sprintf("--regid=%d", n.frontendUID), fmt.Sprintf("--groups=%d,%d", n.socketGID, n.cniGID),
		"--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--",
		c.frontend, "--grpc-addr", grpcAddr, "--grpc-addr", "unix://"+n.runtimeSock, "--grpc-socket-group", fmt.Sprint(n.cniGID), "--helper-socket", n.socket,
		"--state-dir", n.stateDir, "--resync-interval", c.cfg.ResyncInterval.String())
	if err != nil {
		return err
	}
	n.frontProc = p
	if n.conn != nil {
		n.conn.Close() // a fresh connection: no reconnect backoff left from the old process
	}
	n.conn, err = grpc.NewClient("passthrough:///"+grpcAddr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) { return dialIn(ctx, n.ns, addr, 0) }))
	if err != nil {
		return err
	}
	n.rt, n.admin = quiltpb.NewQuiltRuntimeClient(n.conn), quiltpb.NewQuiltAdminClient(n.conn)
	health := healthpb.NewHealthClient(n.conn)
	return waitUntil(ctx, 15*time.Second, p, func() bool {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		r, err := health.Check(cctx, &healthpb.HealthCheckRequest{Service: quiltpb.QuiltRuntime_ServiceDesc.ServiceName})
		return err == nil && r.Status == healthpb.HealthCheckResponse_SERVING
	})
}

// waitUntil polls cond until it holds, p (unless nil) exits, ctx ends or
// the limit passes (see testutil.Until).
func waitUntil(ctx context.Context, limit time.Duration, p *proc, cond func() bool) error {
	if p == nil {
		return testutil.Until(ctx, limit, nil, cond)
	}
	if err := testutil.Until(ctx, limit, p.Proc, cond); err != nil {
		return fmt.Errorf("%s: %w", p.name, err)
	}
	return nil
}
