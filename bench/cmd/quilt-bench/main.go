// Command quilt-bench measures route changes three ways, each in a
// throwaway network namespace with a vxlan100 device: (a) raw rtnetlink
// from this process, the kernel floor; (b) the gRPC service in one root
// process (quilt-bench-single); (c) the privilege-separated pair,
// quilt-runtime and quilt-route-helper, as deployed, including how fast
// (c) repairs routes deleted by hand or flushed by a device bounce. It
// prints one table per N, or with -o json one report. See package bench.
//
// It needs root, iproute2 and util-linux's setpriv, and the binaries
// (make bench builds them). It changes nothing outside the namespaces it
// makes and removes them, and every process it started, before it exits,
// also on Ctrl-C or SIGTERM.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/quiltmesh/quilt-runtime/bench"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "quilt-bench:", err)
		os.Exit(1)
	}
}

func run() error {
	var cfg bench.Config
	flag.StringVar(&cfg.BinDir, "bin", "bin", "directory holding quilt-route-helper, quilt-runtime and quilt-bench-single")
	ns := flag.String("n", "255", "numbers of peer routes, comma-separated, one run each (10.0.0.0/8 holds at most 65,535 peers)")
	systems := flag.String("systems", "a,b,c", "systems to measure: a (kernel floor), b (one process), c (privilege-separated)")
	format := flag.String("o", "text", "output: text (tables) or json (one report)")
	flag.IntVar(&cfg.Clients, "clients", 16, "clients of the concurrent workloads")
	flag.DurationVar(&cfg.PhaseLimit, "phase-limit", 2*time.Minute, "stop a workload after this long and report it as partial")
	flag.IntVar(&cfg.KernelBatch, "kernel-batch", 1024, "route messages per sendmsg in (a)'s pipelined workloads")
	flag.DurationVar(&cfg.ResyncInterval, "resync-interval", 10*time.Second, "(b)'s and (c)'s --resync-interval")
	flag.IntVar(&cfg.Deletions, "deletions", 100, "routes the drift repair row deletes by hand, one at a time (at most N)")
	flag.IntVar(&cfg.Veths, "veths", 1000, "extra veth interfaces in the namespace in the last row")
	flag.BoolVar(&cfg.KeepDir, "keep", false, "keep the run's directory (process logs, state files) and print its path")
	quiet := flag.Bool("q", false, "no progress lines on stderr")
	flag.Parse()
	if flag.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", flag.Args())
	}
	if *format != "text" && *format != "json" {
		return fmt.Errorf("-o %q: want text or json", *format)
	}
	for _, f := range strings.Split(*ns, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return fmt.Errorf("-n %q: want positive numbers separated by commas, such as 255,65536", *ns)
		}
		cfg.Ns = append(cfg.Ns, n)
	}
	for _, s := range strings.Split(*systems, ",") {
		cfg.Systems = append(cfg.Systems, strings.TrimSpace(s))
	}
	level := slog.LevelInfo
	if *quiet {
		level = slog.LevelWarn
	}
	cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	// Ctrl-C and SIGTERM stop the workloads; Run then removes everything
	// it made and returns what it measured so far. The handler stays in
	// place until then, so a second signal cannot cut the cleanup short.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := bench.Run(ctx, cfg)
	if errors.Is(err, bench.ErrNotRoot) {
		return fmt.Errorf("%w (try: sudo make bench)", err)
	}
	var werr error
	switch {
	case len(rep.Runs) == 0:
	case *format == "json":
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		werr = enc.Encode(rep)
	default:
		werr = rep.WriteText(os.Stdout)
	}
	if ctx.Err() != nil {
		return errors.Join(errors.New("interrupted; every namespace and process it made is removed"), werr)
	}
	return errors.Join(err, werr)
}
