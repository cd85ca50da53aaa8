package frontend

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/user"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mdlayher/vsock"
	"golang.org/x/net/netutil"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/admin"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"

	"github.com/quiltmesh/quilt-runtime/frontend/api"
	"github.com/quiltmesh/quilt-runtime/frontend/helperclient"
	"github.com/quiltmesh/quilt-runtime/frontend/internal/quote"
	"github.com/quiltmesh/quilt-runtime/frontend/ipam"
	"github.com/quiltmesh/quilt-runtime/frontend/reconcile"
	"github.com/quiltmesh/quilt-runtime/proto/quiltpb"
	"github.com/quiltmesh/quilt-runtime/shared/policy"
)

// Config is everything quilt-runtime is started with.
type Config struct {
	Addrs                  []string // host:port, unix:///path, vsock://CID:PORT
	TLSCert, TLSKey, TLSCA string
	Insecure               bool // allow plaintext beyond loopback
	HelperSocket           string
	HelperTimeout          time.Duration
	Policy                 policy.Policy
	StateDir               string                  // holds state.db
	Offsets                ipam.Offsets            // gateway and allocation range in the node subnet
	ResyncInterval         time.Duration           // between comparisons of desired and installed routes
	MetricsAddr            string                  // host:port for Prometheus text; empty: off
	MaxConns               int                     // connections served at once per listener
	SummaryInterval        time.Duration           // between summaries of the route calls; 0: api.DefaultSummaryInterval
	AdoptGrace             time.Duration           // how long an adopted route may go unconfirmed by a calling agent; 0: reconcile.DefaultAdoptGrace
	ResyncMaxRemovals      *reconcile.RemovalLimit // routes a resync removes unasked; nil: reconcile.DefaultRemovalLimit
	SocketGroup            string                  // group (name or gid) of unix:// listeners' sockets; empty: the process's own
	// Helper, if set, is used instead of a helperclient.Client on
	// HelperSocket: for a benchmark's single-process baseline, never in
	// the product.
	Helper  helperclient.RouteHelper
	Version string
	Log     *slog.Logger
}

// Listener is a parsed --grpc-addr.
type Listener struct {
	Network string // tcp, unix or vsock
	Addr    string // host:port, a path, or CID:PORT
	CID     uint32
	Port    uint32
}

// ParseAddr parses one --grpc-addr value.
func ParseAddr(s string) (Listener, error) {
	switch {
	case strings.HasPrefix(s, "unix://"):
		path := strings.TrimPrefix(s, "unix://")
		if !strings.HasPrefix(path, "/") {
			return Listener{}, fmt.Errorf("address %s: a unix address needs an absolute path, as in unix:///run/quilt/runtime.sock", quote.Value(s))
		}
		return Listener{Network: "unix", Addr: path}, nil
	case strings.HasPrefix(s, "vsock://"):
		cid, port, ok := strings.Cut(strings.TrimPrefix(s, "vsock://"), ":")
		c, cerr := strconv.ParseUint(cid, 10, 32)
		p, perr := strconv.ParseUint(port, 10, 32)
		if !ok || cerr != nil || perr != nil {
			return Listener{}, fmt.Errorf("address %s: want vsock://CID:PORT with decimal numbers", quote.Value(s))
		}
		return Listener{Network: "vsock", Addr: cid + ":" + port, CID: uint32(c), Port: uint32(p)}, nil
	case strings.Contains(s, "://"):
		return Listener{}, fmt.Errorf("address %s: unknown scheme; use host:port, unix:///path or vsock://CID:PORT", quote.Value(s))
	}
	host, port, err := net.SplitHostPort(s)
	if err == nil {
		_, err = net.LookupPort("tcp", port)
	}
	if err != nil {
		return Listener{}, fmt.Errorf("address %s: want host:port: %w", quote.Value(s), err)
	}
	return Listener{Network: "tcp", Addr: net.JoinHostPort(host, port)}, nil
}

// Loopback reports whether only this host can reach the listener over TCP.
func (l Listener) Loopback() bool {
	host, _, _ := net.SplitHostPort(l.Addr)
	ip := net.ParseIP(host)
	return l.Network == "unix" || host == "localhost" || (ip != nil && ip.IsLoopback())
}

// Listen opens the listener. A unix socket gets mode 0660 through the
// umask; a stale socket file at the path is removed first.
func (l Listener) Listen() (net.Listener, error) {
	switch l.Network {
	case "unix":
		if fi, err := os.Lstat(l.Addr); err == nil && fi.Mode()&os.ModeSocket != 0 {
			os.Remove(l.Addr)
		}
		defer unix.Umask(unix.Umask(0o117))
		return net.Listen("unix", l.Addr)
	case "vsock":
		return vsock.ListenContextID(l.CID, l.Port, nil)
	}
	return net.Listen("tcp", l.Addr)
}

// lookupGroup resolves a group name or a numeric gid.
func lookupGroup(s string) (int, error) {
	if gid, err := strconv.Atoi(s); err == nil && gid >= 0 {
		return gid, nil
	}
	g, err := user.LookupGroup(s)
	if err != nil {
		return 0, fmt.Errorf("--grpc-socket-group %s: %w", quote.Value(s), err)
	}
	return strconv.Atoi(g.Gid)
}

// hasGroup reports whether the file already has the group (a setgid
// directory gave it): then no chown is needed.
func hasGroup(path string, gid int) bool {
	fi, err := os.Stat(path)
	if err != nil {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && int(st.Gid) == gid
}

// serverTLS builds the TLS config: a certificate, and with a CA, mTLS.
func serverTLS(cfg Config) (*tls.Config, error) {
	if (cfg.TLSCert == "") != (cfg.TLSKey == "") {
		return nil, errors.New("--tls-cert and --tls-key go together")
	}
	if cfg.TLSCert == "" {
		if cfg.TLSCA != "" {
			return nil, errors.New("--tls-ca needs --tls-cert and --tls-key")
		}
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("TLS certificate: %w", err)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if cfg.TLSCA != "" {
		pem, err := os.ReadFile(cfg.TLSCA)
		if err != nil {
			return nil, fmt.Errorf("--tls-ca: %w", err)
		}
		tc.ClientCAs = x509.NewCertPool()
		if !tc.ClientCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--tls-ca %s: no PEM certificates in it", cfg.TLSCA)
		}
		tc.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return tc, nil
}

// Limits of the gRPC server. A request of the agent's is under 100
// bytes; MaxRecvMsgSize leaves room for anything legitimate and refuses
// the rest before it is decoded. MaxConns bounds connections per listener:
// more wait in the kernel's backlog until one closes.
const (
	MaxRecvMsgSize       = 16 << 10
	MaxConcurrentStreams = 64
	DefaultMaxConns      = 128
)

// NewGRPCServer returns a server with our limits, the node's QuiltRuntime
// and QuiltAdmin services, health, reflection and the gRPC admin services
// (channelz, for grpcurl and grpcdebug), and extra options (the metrics'
// interceptors).
func NewGRPCServer(node *api.Node, info api.Info, hs *health.Server, tc *tls.Config, extra ...grpc.ServerOption) *grpc.Server {
	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(MaxRecvMsgSize),
		grpc.MaxConcurrentStreams(MaxConcurrentStreams),
		grpc.ConnectionTimeout(10 * time.Second),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionIdle: 10 * time.Minute, Time: 2 * time.Minute, Timeout: 20 * time.Second}),
	}
	if tc != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(tc)))
	}
	srv := grpc.NewServer(append(opts, extra...)...)
	api.Register(srv, node, info)
	healthpb.RegisterHealthServer(srv, hs)
	// Only channelz: CSDS, the other admin service, registers itself only
	// in binaries that link the xDS packages, which this one does not.
	if _, err := admin.Register(srv); err != nil {
		panic(fmt.Sprintf("register gRPC admin services: %v", err)) // channelz's registration returns no error
	}
	reflection.Register(srv)
	return srv
}

// Run serves until ctx ends, then stops gracefully. Routes stay in the
// kernel: stopping never removes them.
func Run(ctx context.Context, cfg Config) error {
	if err := cfg.Policy.Validate(); err != nil {
		return err
	}
	if err := cfg.Offsets.Check(cfg.Policy.PrefixLen); err != nil {
		return fmt.Errorf("--gateway/--ip-range: %w", err)
	}
	if cfg.ResyncInterval <= 0 {
		return errors.New("--resync-interval must be positive")
	}
	if cfg.AdoptGrace < 0 {
		return errors.New("--adopt-grace must not be negative")
	}
	tc, err := serverTLS(cfg)
	if err != nil {
		return err
	}
	var lns []Listener
	for _, a := range cfg.Addrs {
		l, err := ParseAddr(a)
		if err != nil {
			return err
		}
		if tc == nil && !cfg.Insecure && (l.Network == "vsock" || !l.Loopback()) {
			return fmt.Errorf("refusing plaintext gRPC on %s, which is reachable beyond this host: give --tls-cert and --tls-key, or --insecure", a)
		}
		lns = append(lns, l)
	}
	socketGID := -1
	if cfg.SocketGroup != "" {
		if !slices.ContainsFunc(lns, func(l Listener) bool { return l.Network == "unix" }) {
			return fmt.Errorf("--grpc-socket-group %s needs a unix:///path --grpc-addr", quote.Value(cfg.SocketGroup))
		}
		if socketGID, err = lookupGroup(cfg.SocketGroup); err != nil {
			return err
		}
	}
	if cfg.MetricsAddr != "" {
		if l, err := ParseAddr(cfg.MetricsAddr); err != nil || l.Network != "tcp" || (!l.Loopback() && !cfg.Insecure) {
			return fmt.Errorf("--metrics-addr %s: want a loopback host:port (or --insecure for any)", quote.Value(cfg.MetricsAddr))
		}
	}
	// Sockets systemd passed stand in for the --grpc-addr they match; the
	// rest are listened on here.
	inherited, err := passedListeners()
	if err != nil {
		return err
	}
	fromSystemd := make([]net.Listener, len(lns))
	for i, l := range lns {
		fromSystemd[i] = inherited.take(l)
	}
	if err := inherited.leftover(); err != nil {
		return err
	}
	defer func() {
		for _, l := range fromSystemd {
			if l != nil {
				l.Close()
			}
		}
	}()
	notify := newNotifier(cfg.Log)
	if w := notify.watchdog; w > 0 && cfg.HelperTimeout >= w/2 {
		cfg.Log.Warn("--helper-timeout is not under half the systemd watchdog period: a helper that stops answering holds a resync past the watchdog, and systemd restarts this frontend",
			"helper_timeout", cfg.HelperTimeout, "watchdog", w)
	}
	client := &helperclient.Client{Path: cfg.HelperSocket, Timeout: cfg.HelperTimeout}
	defer client.Close()
	metrics := NewMetrics()
	hs := health.NewServer()
	servingStatus(hs, false)
	hs.SetServingStatus(quiltpb.QuiltAdmin_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	kick := make(chan struct{}, 1)
	node, err := api.OpenNode(api.NodeConfig{Policy: cfg.Policy, StateDir: cfg.StateDir, Offsets: cfg.Offsets, Log: cfg.Log,
		AdoptGrace: cfg.AdoptGrace, RemovalLimit: cfg.ResyncMaxRemovals,
		// Every request is timed (metrics) and tells health what it learnt.
		Helper: metrics.Helper(cmp.Or[helperclient.RouteHelper](cfg.Helper, client)), HelperSocket: cfg.HelperSocket,
		OnHealth: func(err error) {
			servingStatus(hs, err == nil)
			notify.helper(err)
			if err == nil {
				select { // the helper is back: compare routes now
				case kick <- struct{}{}:
				default:
				}
			}
		}})
	if err != nil {
		return err
	}
	defer node.Close()
	saved := node.Routes.DesiredLen()
	metrics.Observe(node, cfg.Version)
	srv := NewGRPCServer(node, api.Info{Version: cfg.Version, StateDir: cfg.StateDir, ResyncInterval: cfg.ResyncInterval}, hs, tc, metrics.ServerOptions()...)
	metrics.Registered(srv)
	bg, stopBg := context.WithCancel(ctx)
	defer stopBg()
	go node.Helper.Poll(bg, 5*time.Second)
	select { // the first resync runs at once (unless the helper's hello already asked); readiness waits for it
	case kick <- struct{}{}:
	default:
	}
	// The watch's resync events (its first, and any later) kick the same
	// channel: they only ask ResyncLoop for a resync, dropped if one is
	// pending already. Readiness (after ResyncLoop's first resync) and the
	// watchdog (while ResyncLoop waits) stay ResyncLoop's alone; the
	// watch's own repairs (RepairChanged) report to neither.
	go node.Routes.ResyncLoop(bg, cfg.ResyncInterval, kick, notify.hooks(node.Routes.DesiredLen))
	go helperclient.WatchLoop(bg, node.Helper, cfg.Log, func(resync bool, changed []netip.Prefix) {
		node.Routes.WatchReport(resync, changed)
		if resync {
			select {
			case kick <- struct{}{}:
			default:
			}
		}
		if len(changed) > 0 {
			node.RepairChanged(bg, changed)
		}
	}, node.Routes.WatchEnded)
	go node.SummaryLoop(bg, cmp.Or(cfg.SummaryInterval, api.DefaultSummaryInterval))
	if cfg.MetricsAddr != "" {
		ms := &http.Server{Addr: cfg.MetricsAddr, Handler: metrics.Handler(), ReadHeaderTimeout: 5 * time.Second}
		ml, err := net.Listen("tcp", cfg.MetricsAddr)
		if err != nil {
			return fmt.Errorf("listen on --metrics-addr %s: %w", cfg.MetricsAddr, err)
		}
		go ms.Serve(ml)
		defer ms.Close()
		cfg.Log.Info("serving metrics on http://"+cfg.MetricsAddr+"/metrics", "addr", cfg.MetricsAddr)
	}
	errc := make(chan error, len(lns))
	var addrs []string
	for i, l := range lns {
		nl, from := fromSystemd[i], "systemd"
		if nl == nil {
			if nl, err = l.Listen(); err != nil {
				srv.Stop()
				return fmt.Errorf("listen on %s %s: %w", l.Network, l.Addr, err)
			}
			from = "own"
		}
		fromSystemd[i] = nil // srv closes it from here on
		// The socket was made 0660 with this process's group; give it the
		// group of the clients it serves (the container runtime's, for
		// quilt-ipam). A process may only give its files a group it is in.
		if l.Network == "unix" && socketGID >= 0 && !hasGroup(l.Addr, socketGID) {
			if err := os.Chown(l.Addr, -1, socketGID); err != nil {
				nl.Close()
				srv.Stop()
				return fmt.Errorf("--grpc-socket-group %s: %w (the frontend must be a member of the group)", cfg.SocketGroup, err)
			}
		}
		cfg.Log.Info("Starting gRPC server on "+l.Addr, "network", l.Network, "addr", l.Addr, "socket", from, "tls", tc != nil, "mtls", cfg.TLSCA != "",
			"gomaxprocs", runtime.GOMAXPROCS(0), "pid", os.Getpid(), "routes", saved)
		addrs = append(addrs, l.Addr)
		go func() { errc <- srv.Serve(netutil.LimitListener(nl, cmp.Or(cfg.MaxConns, DefaultMaxConns))) }()
	}
	notify.listened(addrs)
	select {
	case <-ctx.Done():
		cfg.Log.Info("stopping gRPC server; routes stay in the kernel")
	case err = <-errc:
		cfg.Log.Error("gRPC server failed", "err", err)
	}
	notify.stopping()
	done := make(chan struct{})
	go func() { srv.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		srv.Stop()
	}
	return err
}
