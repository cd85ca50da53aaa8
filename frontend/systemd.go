package frontend

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/mdlayher/vsock"

	"github.com/quiltmesh/quilt-runtime/frontend/helperclient"
	"github.com/quiltmesh/quilt-runtime/frontend/internal/quote"
	"github.com/quiltmesh/quilt-runtime/frontend/reconcile"
)

// systemd's side of the frontend: the listening sockets it passes
// (LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES), readiness and status
// (NOTIFY_SOCKET: READY=1, STATUS=, STOPPING=1) and the watchdog
// (WATCHDOG_USEC, WATCHDOG_PID: WATCHDOG=1). The protocol code is
// go-systemd's activation and daemon packages (CoreOS, now the systemd
// project's own Go bindings, used by etcd, containerd and podman): they
// check LISTEN_PID and WATCHDOG_PID, mark the passed descriptors
// close-on-exec and speak the datagram protocol, and link nothing beyond
// the standard library and x/sys. Without those variables every function
// here does nothing, so a frontend started by hand behaves as before.

// GRPCFDName is the name (FileDescriptorName= of quilt-runtime.socket) that
// marks a passed socket as a gRPC listener.
const GRPCFDName = "grpc"

// ErrActivation means the sockets systemd passed do not fit --grpc-addr.
var ErrActivation = errors.New("socket activation")

// passed is the listening sockets systemd handed over, by address.
type passed map[string]net.Listener

// passedListeners takes the sockets systemd passed to this process, if
// any, and unsets the variables so nothing this process starts inherits
// them. Each must be named GRPCFDName and be a listening stream socket.
func passedListeners() (passed, error) {
	files := activation.Files(true)
	p := passed{}
	var err error
	for i, f := range files {
		var l net.Listener
		switch {
		case err != nil:
		case f.Name() != GRPCFDName:
			err = fmt.Errorf("%w: descriptor %d is named %q (LISTEN_FDNAMES); this quilt-runtime takes only gRPC sockets, named %q (FileDescriptorName=%s in the socket unit)", ErrActivation, 3+i, f.Name(), GRPCFDName, GRPCFDName)
		default:
			l, err = fileListener(f)
			if err != nil {
				err = fmt.Errorf("%w: descriptor %d (%s): %w", ErrActivation, 3+i, f.Name(), err)
			}
		}
		f.Close()
		if l != nil {
			p[listenerKey(l.Addr())] = l
		}
	}
	if err != nil {
		p.close()
	}
	return p, err
}

// fileListener makes a listener of a passed descriptor: TCP and Unix
// stream sockets through the net package, vsock through mdlayher/vsock.
func fileListener(f *os.File) (net.Listener, error) {
	l, err := net.FileListener(f)
	if err == nil {
		return l, nil
	}
	if vl, verr := vsock.FileListener(f); verr == nil {
		return vl, nil
	}
	return nil, fmt.Errorf("not a listening stream socket: %w", err)
}

// listenerKey is how a passed socket and a --grpc-addr are matched: the
// network and the address as the kernel reports it.
func listenerKey(a net.Addr) string { return a.Network() + " " + a.String() }

// take returns the passed socket for l, if there is one, and removes it.
func (p passed) take(l Listener) net.Listener {
	key := ""
	switch l.Network {
	case "tcp":
		if a, err := net.ResolveTCPAddr("tcp", l.Addr); err == nil {
			key = listenerKey(a)
		}
	case "unix":
		key = listenerKey(&net.UnixAddr{Name: l.Addr, Net: "unix"})
	case "vsock":
		key = listenerKey(&vsock.Addr{ContextID: l.CID, Port: l.Port})
	}
	nl, ok := p[key]
	if !ok {
		return nil
	}
	delete(p, key)
	return nl
}

// leftover is an error naming the passed sockets no --grpc-addr took.
func (p passed) leftover() error {
	if len(p) == 0 {
		return nil
	}
	var addrs []string
	for key := range p {
		addrs = append(addrs, key)
	}
	p.close()
	return fmt.Errorf("%w: systemd passed a gRPC socket on %s that no --grpc-addr names: make the socket unit's Listen*= and --grpc-addr (QUILT_GRPC_ADDR) the same", ErrActivation, strings.Join(addrs, ", "))
}

// close closes every socket not taken and forgets them.
func (p passed) close() {
	for _, l := range p {
		l.Close()
	}
	clear(p)
}

// notifier tells systemd how the frontend is: READY=1 once every listener
// is open and the first resync has finished (well or not), a STATUS= line
// whenever what it says changes, WATCHDOG=1 when the resync loop says it
// is alive, STOPPING=1 at the end. Without NOTIFY_SOCKET it sends nothing.
type notifier struct {
	log      *slog.Logger
	watchdog time.Duration // WATCHDOG_USEC for this process; 0: none

	mu        sync.Mutex
	listening []string // addresses, once all are open
	resynced  bool     // the first resync has finished
	ready     bool     // READY=1 sent
	helperErr error    // the helper's health as last reported
	helperSet bool
	last      reconcile.ResyncResult
	desired   int
	sent      string // the last STATUS= text
}

// newNotifier reads NOTIFY_SOCKET and the watchdog's variables.
func newNotifier(log *slog.Logger) *notifier {
	n := &notifier{log: log}
	d, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		log.Warn("systemd watchdog: ignoring WATCHDOG_USEC", "err", err)
	}
	n.watchdog = d
	return n
}

// hooks are the resync loop's hooks: WATCHDOG=1 at half the watchdog
// period, as systemd advises, and readiness and status after each resync.
func (n *notifier) hooks(desired func() int) reconcile.LoopHooks {
	h := reconcile.LoopHooks{Done: func(r reconcile.ResyncResult) { n.resync(r, desired()) }}
	if n.watchdog > 0 {
		h.Every, h.Alive = n.watchdog/2, func() { n.send(daemon.SdNotifyWatchdog) }
	}
	return h
}

// listened records that every listener is open.
func (n *notifier) listened(addrs []string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.listening = addrs
	n.update()
}

// resync records a resync's result.
func (n *notifier) resync(r reconcile.ResyncResult, desired int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.resynced, n.last, n.desired = true, r, desired
	n.update()
}

// helper records a change of the helper's health (nil: up).
func (n *notifier) helper(err error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.helperErr, n.helperSet = err, true
	n.update()
}

// stopping says the frontend is stopping.
func (n *notifier) stopping() {
	n.send(daemon.SdNotifyStopping + "\nSTATUS=stopping; routes stay in the kernel")
}

// update sends READY=1 the first time both conditions hold, and STATUS=
// when its text changed. Called with mu held.
func (n *notifier) update() {
	msg := ""
	if !n.ready && n.listening != nil && n.resynced {
		n.ready = true
		msg = daemon.SdNotifyReady + "\n"
	}
	if st := n.status(); st != n.sent {
		n.sent = st
		msg += "STATUS=" + st
	}
	if msg != "" {
		n.send(strings.TrimSuffix(msg, "\n"))
	}
}

// status is the line an operator reads in `systemctl status`.
func (n *notifier) status() string {
	where := "starting"
	if n.listening != nil {
		where = "serving gRPC on " + strings.Join(n.listening, ", ")
	}
	parts := []string{where}
	if n.helperSet && n.helperErr != nil {
		parts = append(parts, "route helper unavailable ("+quote.Bound(n.helperErr.Error(), statusBound)+"); routes stay in the kernel")
	} else if n.helperSet {
		parts = append(parts, "route helper up")
	}
	r := n.last
	switch {
	case !n.resynced:
		parts = append(parts, "first resync running")
	case errors.Is(r.Err, helperclient.ErrUnavailable):
		parts = append(parts, "routes not compared with the kernel until the helper answers")
	case r.Err != nil:
		parts = append(parts, "last resync failed: "+quote.Bound(r.Err.Error(), statusBound))
	case r.Conflicts > 0 || r.Failed > 0:
		parts = append(parts, fmt.Sprintf("%d routes desired, %d installed; %d held by routes not quilt's, %d repairs failed (quiltctl routes)", n.desired, r.Installed, r.Conflicts, r.Failed))
	default:
		parts = append(parts, fmt.Sprintf("%d routes desired, %d installed, in sync", n.desired, r.Installed))
	}
	return strings.Join(parts, "; ")
}

// statusBound is the most bytes of an error the status line shows.
const statusBound = 160

// send sends one notification; a failure is logged, never fatal: systemd
// would then time the start out, which says the same.
func (n *notifier) send(state string) {
	if _, err := daemon.SdNotify(false, state); err != nil {
		n.log.Warn("systemd notification failed", "state", state, "err", err)
	}
}
