package overlay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/quiltmesh/quilt-runtime/proto/quiltpb"
)

// proc is a helper or frontend process of a node.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *logBuffer
	done chan struct{} // closed once the process has been reaped
	err  error         // its exit status, once done
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// output returns what the process has written to stdout and stderr.
func (p *proc) output() string { return p.out.String() }

// signal sends sig and waits up to 10s for the process to end. It reports
// whether the process was still running.
func (p *proc) signal(sig syscall.Signal) (bool, error) {
	if p.exited() {
		return false, nil
	}
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return true, fmt.Errorf("signal %s: %w", p.name, err)
	}
	select {
	case <-p.done:
		return true, nil
	case <-time.After(10 * time.Second):
		return true, fmt.Errorf("%s (pid %d) still running 10s after %v", p.name, p.pid(), sig)
	}
}

// kill ends the process with SIGKILL, if it still runs.
func (p *proc) kill() bool {
	running, _ := p.signal(syscall.SIGKILL)
	return running
}

// killedBy reports whether the process ended by sig.
func (p *proc) killedBy(sig syscall.Signal) bool {
	if !p.exited() || p.cmd.ProcessState == nil {
		return false
	}
	ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == sig
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
	p := &proc{name: n.name + " " + name, out: &logBuffer{file: logf}, done: make(chan struct{})}
	p.cmd = exec.Command("ip", append([]string{"netns", "exec", n.ns}, argv...)...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", p.name, err)
	}
	c.log.Info("started", "process", p.name, "pid", p.pid())
	go func() {
		p.err = p.cmd.Wait()
		logf.Close()
		close(p.done)
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
		return strings.Contains(p.output(), "route helper serving")
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

// ErrExited means a process ended while we waited for it to get ready.
var ErrExited = errors.New("process exited")

// waitUntil polls cond every 20ms until it holds, p exits, ctx ends or the
// limit passes.
func waitUntil(ctx context.Context, limit time.Duration, p *proc, cond func() bool) error {
	deadline := time.Now().Add(limit)
	for !cond() {
		if p != nil && p.exited() {
			return fmt.Errorf("%s: %w (%v):\n%s", p.name, ErrExited, p.err, p.output())
		}
		if time.Now().After(deadline) {
			out := ""
			if p != nil {
				out = fmt.Sprintf("; %s said:\n%s", p.name, p.output())
			}
			return fmt.Errorf("not ready after %v%s: %w", limit, out, context.DeadlineExceeded)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// logBuffer keeps a process's output in memory, for checks, and in its
// log file, for people.
type logBuffer struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	file *os.File
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.file.Write(p)
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
