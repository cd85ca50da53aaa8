// Command quilt-runtime is the unprivileged gRPC server the Quilt Mesh agent
// calls to program this node. It forwards route changes to
// quilt-route-helper. See package frontend.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/quiltmesh/quilt-runtime/frontend"
	"github.com/quiltmesh/quilt-runtime/frontend/api"
	"github.com/quiltmesh/quilt-runtime/frontend/ipam"
	"github.com/quiltmesh/quilt-runtime/frontend/reconcile"
	"github.com/quiltmesh/quilt-runtime/shared/policy"
)

// version is set at build time (make build: -X main.version=...).
var version = "dev"

// memoryLimit is the Go runtime's soft memory limit unless GOMEMLIMIT sets
// another: a batch of 65,536 route changes briefly holds about 15 MiB
// (most of it bbolt's transaction), and without a limit the collector
// lets the heap grow to twice that before it runs. Below the limit
// nothing changes; near it the collector runs sooner (never taking more
// than half the CPU, and never failing an allocation).
const memoryLimit = 20 << 20

func main() {
	if _, set := os.LookupEnv("GOMEMLIMIT"); !set {
		debug.SetMemoryLimit(memoryLimit)
	}
	app := &cli.App{
		Name:    "quilt-runtime",
		Version: version,
		Usage:   "serve the QuiltRuntime gRPC API; route changes go through quilt-route-helper",
		Flags: []cli.Flag{
			&cli.StringSliceFlag{Name: "grpc-addr", Value: cli.NewStringSlice("127.0.0.1:50051"), EnvVars: []string{"QUILT_GRPC_ADDR"}, Usage: "listen address, repeatable: host:port, unix:///path or vsock://CID:PORT"},
			&cli.StringFlag{Name: "grpc-socket-group", EnvVars: []string{"QUILT_GRPC_SOCKET_GROUP"}, Usage: "group (name or gid) of the unix:// listeners' sockets, mode 0660, for the container runtime's quilt-ipam; this user must be a member (default: its own group)"},
			&cli.StringFlag{Name: "tls-cert", EnvVars: []string{"QUILT_TLS_CERT"}, Usage: "serve TLS with this certificate (PEM)"},
			&cli.StringFlag{Name: "tls-key", EnvVars: []string{"QUILT_TLS_KEY"}, Usage: "the certificate's private key (PEM)"},
			&cli.StringFlag{Name: "tls-ca", EnvVars: []string{"QUILT_TLS_CA"}, Usage: "require client certificates signed by this CA (mTLS)"},
			&cli.BoolFlag{Name: "insecure", EnvVars: []string{"QUILT_INSECURE"}, Usage: "allow plaintext on non-loopback TCP and vsock addresses"},
			&cli.StringFlag{Name: "helper-socket", Value: "/run/quilt/route-helper.sock", EnvVars: []string{"QUILT_HELPER_SOCKET"}, Usage: "the route helper's Unix socket"},
			&cli.DurationFlag{Name: "helper-timeout", Value: 2e9, EnvVars: []string{"QUILT_HELPER_TIMEOUT"}, Usage: "deadline of each request to the helper"},
			&cli.StringFlag{Name: "cluster-cidr", Value: "10.42.0.0/16", EnvVars: []string{"QUILT_CLUSTER_CIDR"}, Usage: "node subnets lie inside this IPv4 CIDR"},
			&cli.IntFlag{Name: "node-prefix-len", Value: 24, EnvVars: []string{"QUILT_NODE_PREFIX_LEN"}, Usage: "prefix length of every node subnet"},
			&cli.StringSliceFlag{Name: "allowed-interface", Value: cli.NewStringSlice("vxlan100"), EnvVars: []string{"QUILT_ALLOWED_INTERFACE"}, Usage: "interfaces routes may use, repeatable"},
			&cli.StringFlag{Name: "state-dir", Value: "/var/lib/quilt-runtime", EnvVars: []string{"QUILT_STATE_DIR"}, Usage: "directory of the durable state (state.db): subnet, allocations, desired routes; 0700, owned by this user"},
			&cli.DurationFlag{Name: "resync-interval", Value: 10 * time.Second, EnvVars: []string{"QUILT_RESYNC_INTERVAL"}, Usage: "how often desired routes are compared with the kernel's and repaired"},
			&cli.StringFlag{Name: "resync-max-removals", Value: "10%", EnvVars: []string{"QUILT_RESYNC_MAX_REMOVALS"},
				Usage: "the most routes of ours a resync removes that nobody asked to remove: a number, or a percentage of those installed (at least 5); past it, it removes none"},
			&cli.DurationFlag{Name: "adopt-grace", Value: reconcile.DefaultAdoptGrace, EnvVars: []string{"QUILT_ADOPT_GRACE"},
				Usage: "when the state file was new, how long the agent may call without confirming a route found in the kernel before it is removed"},
			&cli.StringFlag{Name: "gateway", Value: "1", EnvVars: []string{"QUILT_GATEWAY"}, Usage: "the gateway's host number in the node subnet (the container bridge's address): 1 is .1"},
			&cli.StringFlag{Name: "ip-range", Value: "10-254", EnvVars: []string{"QUILT_IP_RANGE"}, Usage: "host numbers containers get addresses from, FIRST-LAST"},
			&cli.StringFlag{Name: "metrics-addr", EnvVars: []string{"QUILT_METRICS_ADDR"}, Usage: "serve Prometheus metrics on this loopback host:port at /metrics, such as " + frontend.SuggestedMetricsAddr + " (off when empty)"},
			&cli.IntFlag{Name: "max-connections", Value: frontend.DefaultMaxConns, EnvVars: []string{"QUILT_MAX_CONNECTIONS"}, Usage: "gRPC connections served at once per listen address; more wait until one closes"},
			&cli.StringFlag{Name: "log-level", Value: "info", EnvVars: []string{"QUILT_LOG_LEVEL"}, Usage: "debug, info, warn or error"},
			&cli.StringFlag{Name: "log-format", Value: "text", EnvVars: []string{"QUILT_LOG_FORMAT"}, Usage: "text (key=value) or json"},
			&cli.BoolFlag{Name: "allow-root", EnvVars: []string{"QUILT_ALLOW_ROOT"}, Usage: "run even as uid 0 or with capabilities (never needed)"},
			// For tests: a summary sooner than once a minute.
			&cli.DurationFlag{Name: "log-summary-interval", Value: api.DefaultSummaryInterval, Hidden: true, Usage: "how often, at most, the summary of route calls is logged"},
			&cli.BoolFlag{Name: "generate-man-page", Hidden: true, Usage: "print the man page, quilt-runtime(8), made from these flags, and exit"},
		},
		Action: run,
	}
	if err := app.Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "quilt-runtime:", err)
		os.Exit(1)
	}
}

func run(c *cli.Context) error {
	if c.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", c.Args().Slice())
	}
	if c.Bool("generate-man-page") {
		page, err := c.App.ToManWithSection(8)
		if err == nil {
			_, err = fmt.Print(page)
		}
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.String("log-level"))); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler
	switch c.String("log-format") {
	case "text":
		h = slog.NewTextHandler(os.Stderr, opts)
	case "json":
		h = slog.NewJSONHandler(os.Stderr, opts)
	default:
		return fmt.Errorf("--log-format %q: want text or json", c.String("log-format"))
	}
	if !c.Bool("allow-root") {
		if err := frontend.CheckPrivileges(); err != nil {
			return err
		}
	}
	cluster, err := netip.ParsePrefix(c.String("cluster-cidr"))
	if err != nil {
		return fmt.Errorf("--cluster-cidr: %w", err)
	}
	if c.Duration("helper-timeout") <= 0 {
		return fmt.Errorf("--helper-timeout must be positive")
	}
	var offsets ipam.Offsets
	if offsets.Gateway, err = ipam.ParseGateway(c.String("gateway")); err != nil {
		return fmt.Errorf("--gateway: %w", err)
	}
	if offsets.First, offsets.Last, err = ipam.ParseRange(c.String("ip-range")); err != nil {
		return fmt.Errorf("--ip-range: %w", err)
	}
	if c.Int("max-connections") < 1 {
		return fmt.Errorf("--max-connections must be at least 1")
	}
	if c.Duration("log-summary-interval") <= 0 {
		return fmt.Errorf("--log-summary-interval must be positive")
	}
	removals, err := reconcile.ParseRemovalLimit(c.String("resync-max-removals"))
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return frontend.Run(ctx, frontend.Config{
		Addrs:   c.StringSlice("grpc-addr"),
		TLSCert: c.String("tls-cert"), TLSKey: c.String("tls-key"), TLSCA: c.String("tls-ca"),
		Insecure:          c.Bool("insecure"),
		HelperSocket:      c.String("helper-socket"),
		HelperTimeout:     c.Duration("helper-timeout"),
		Policy:            policy.Policy{Cluster: cluster, PrefixLen: c.Int("node-prefix-len"), Interfaces: c.StringSlice("allowed-interface")},
		StateDir:          c.String("state-dir"),
		Offsets:           offsets,
		ResyncInterval:    c.Duration("resync-interval"),
		MetricsAddr:       c.String("metrics-addr"),
		MaxConns:          c.Int("max-connections"),
		SummaryInterval:   c.Duration("log-summary-interval"),
		AdoptGrace:        c.Duration("adopt-grace"),
		ResyncMaxRemovals: &removals,
		SocketGroup:       c.String("grpc-socket-group"),
		Version:           version,
		Log:               slog.New(h),
	})
}
