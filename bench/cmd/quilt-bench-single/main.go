// Command quilt-bench-single is the benchmark's single-process baseline: the
// QuiltRuntime and QuiltAdmin gRPC services of quilt-runtime, with the route
// helper's netlink code linked in, run as root. quilt-bench starts it in a
// throwaway network namespace to measure what the privilege separation
// costs. It is not shipped. See package bench/single.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/quiltmesh/quilt-runtime/bench/single"
	"github.com/quiltmesh/quilt-runtime/frontend/ipam"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "quilt-bench-single:", err)
		os.Exit(1)
	}
}

// run takes quilt-runtime's flags that shape the work (policy, state,
// IPAM, resync, logging).
func run(args []string) error {
	fs := flag.NewFlagSet("quilt-bench-single", flag.ContinueOnError)
	var cfg single.Config
	addr := fs.String("grpc-addr", "127.0.0.1:50051", "listen address: loopback host:port or unix:///path")
	fs.TextVar(&cfg.Policy.Cluster, "cluster-cidr", netip.MustParsePrefix("10.42.0.0/16"), "node subnets lie inside this IPv4 CIDR")
	fs.IntVar(&cfg.Policy.PrefixLen, "node-prefix-len", 24, "prefix length of every node subnet")
	fs.Func("allowed-interface", "interface routes may use; repeatable (default vxlan100)", func(s string) error {
		cfg.Policy.Interfaces = append(cfg.Policy.Interfaces, s)
		return nil
	})
	fs.StringVar(&cfg.StateDir, "state-dir", "", "directory of the state file (required; 0700, owned by this user)")
	fs.DurationVar(&cfg.ResyncInterval, "resync-interval", 10*time.Second, "how often desired routes are compared with the kernel's and repaired")
	gateway := fs.String("gateway", "1", "the gateway's host number in the node subnet")
	ipRange := fs.String("ip-range", "10-254", "host numbers containers get addresses from, FIRST-LAST")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	fs.StringVar(&cfg.Netns, "netns", "", "the named network namespace (ip netns) this process must be in; it refuses to start elsewhere (required)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if len(cfg.Policy.Interfaces) == 0 {
		cfg.Policy.Interfaces = []string{"vxlan100"}
	}
	var err error
	if cfg.Offsets.Gateway, err = ipam.ParseGateway(*gateway); err != nil {
		return fmt.Errorf("--gateway: %w", err)
	}
	if cfg.Offsets.First, cfg.Offsets.Last, err = ipam.ParseRange(*ipRange); err != nil {
		return fmt.Errorf("--ip-range: %w", err)
	}
	if cfg.StateDir == "" {
		return fmt.Errorf("--state-dir is required")
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(strings.TrimSpace(*level))); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lv}))
	cfg.Addrs, cfg.Version, cfg.HelperTimeout, cfg.MaxConns = []string{*addr}, "bench", 2*time.Second, 128
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return single.Serve(ctx, cfg)
}
