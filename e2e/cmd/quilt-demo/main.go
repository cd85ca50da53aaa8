// Command quilt-demo runs the three-node overlay scenario of package
// e2e/overlay on this machine and narrates it: what the agent asked each
// node, each node's routing table, the container connectivity matrix, the
// restart and the heal. With -o json it prints one JSON report instead.
//
// It needs root and the built quilt-route-helper and quilt-runtime (make
// demo builds them). Everything it makes lives in network namespaces it
// removes before it exits, also on Ctrl-C or SIGTERM. Exit status: 0 when
// every check held, 1 when one failed or the run could not finish.
package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/quiltmesh/quilt-runtime/e2e/overlay"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "quilt-demo:", err)
		os.Exit(1)
	}
}

func run() error {
	bin := flag.String("bin", "bin", "directory holding quilt-route-helper, quilt-runtime and quilt-ipam")
	cniBin := flag.String("cni-bin", "", "directory holding the reference bridge plugin and cnitool (default: the -bin directory's cni/, where make cni-tools puts them)")
	format := flag.String("o", "text", "output: text (narrated) or json (one report)")
	interval := flag.Duration("resync-interval", time.Second, "each frontend's --resync-interval")
	verbose := flag.Bool("v", false, "log every command and process start to stderr")
	flag.Parse()
	if flag.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", flag.Args())
	}
	if *format != "text" && *format != "json" {
		return fmt.Errorf("-o %q: want text or json", *format)
	}
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelDebug
	}
	cfg := overlay.Config{
		HelperBin:      filepath.Join(*bin, "quilt-route-helper"),
		FrontendBin:    filepath.Join(*bin, "quilt-runtime"),
		IPAMBin:        filepath.Join(*bin, "quilt-ipam"),
		CNIBin:         cmp.Or(*cniBin, filepath.Join(*bin, "cni")),
		ResyncInterval: *interval,
		Log:            slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})),
	}
	if *format == "text" {
		cfg.OnStart = func(r *overlay.Report) { r.WriteHeader(os.Stdout) }
		cfg.OnStep = func(s *overlay.Step) { s.WriteText(os.Stdout) }
	}
	// Ctrl-C and SIGTERM stop the scenario; Run then removes everything it
	// made before it returns. The handler stays in place until then, so a
	// second signal cannot cut the cleanup short.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := overlay.Run(ctx, cfg)
	if errors.Is(err, overlay.ErrNotRoot) {
		return fmt.Errorf("%w (try: sudo make demo)", err)
	}
	switch *format {
	case "json":
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		if jerr := enc.Encode(rep); jerr != nil {
			return errors.Join(err, jerr)
		}
	default:
		if rep.Prefix != "" {
			rep.WriteSummary(os.Stdout)
		}
	}
	if ctx.Err() != nil {
		return fmt.Errorf("interrupted; everything it made is removed: %w", err)
	}
	return err
}
