package bench

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"time"
)

// Cluster is what every run routes: the cluster CIDR the issue names,
// 65,536 node subnets of NodePrefixLen, through Device.
var Cluster = netip.MustParsePrefix("10.0.0.0/8")

const (
	NodePrefixLen = 24
	Device        = "vxlan100"
)

// Binaries the systems run, by file name in Config.BinDir.
const (
	HelperBin   = "quilt-route-helper"
	FrontendBin = "quilt-runtime"
	SingleBin   = "quilt-bench-single"
)

// maxVeths bounds Config.Veths: the names qv0 to qv9999 fit an interface
// name, and more would only measure the time to make them.
const maxVeths = 10000

// Config says what to measure and where the binaries are.
type Config struct {
	// BinDir holds quilt-route-helper, quilt-runtime and
	// quilt-bench-single. They are copied to a directory every uid can
	// read, so it may be anywhere root can read.
	BinDir string
	// Ns are the numbers of peer routes, one run each (default 255).
	Ns []int
	// Systems to measure, of "a", "b" and "c" (default all three).
	Systems []string
	// Clients of the concurrent workloads (default 16).
	Clients int
	// PhaseLimit stops a workload that runs longer: it reports what it
	// did by then, as partial (default 2m).
	PhaseLimit time.Duration
	// KernelBatch is the route messages per sendmsg of (a)'s pipelined
	// workloads (default 1024).
	KernelBatch int
	// ResyncInterval is (b)'s and (c)'s --resync-interval (default 10s,
	// the product's default).
	ResyncInterval time.Duration
	// Deletions is how many routes of ours the drift repair row deletes
	// by hand, one at a time, each a different prefix (default 100; at
	// most N).
	Deletions int
	// Veths is how many extra veth interfaces the last row puts in the
	// namespace before it injects every route again (default 1000).
	Veths int
	// KeepDir keeps the run's directory (process logs, state files).
	KeepDir bool
	// Log gets progress lines; nil discards them.
	Log *slog.Logger
}

// ErrNotRoot means Run was started without root.
var ErrNotRoot = errors.New("needs root: it creates network namespaces, starts processes under other uids and, for the kernel floor, sends rtnetlink messages inside them")

func (c *Config) defaults() error {
	if len(c.Ns) == 0 {
		c.Ns = []int{255}
	}
	if len(c.Systems) == 0 {
		c.Systems = []string{"a", "b", "c"}
	}
	if c.Clients <= 0 {
		c.Clients = 16
	}
	if c.PhaseLimit <= 0 {
		c.PhaseLimit = 2 * time.Minute
	}
	if c.KernelBatch <= 0 {
		c.KernelBatch = 1024
	}
	if c.ResyncInterval <= 0 {
		c.ResyncInterval = 10 * time.Second
	}
	if c.Deletions <= 0 {
		c.Deletions = 100
	}
	if c.Veths <= 0 {
		c.Veths = 1000
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	for _, n := range c.Ns {
		if n < 1 {
			return fmt.Errorf("N=%d: want at least 1 peer route", n)
		}
	}
	for _, s := range c.Systems {
		if !slices.Contains([]string{"a", "b", "c"}, s) {
			return fmt.Errorf("system %q: want a, b or c", s)
		}
	}
	if c.Veths > maxVeths {
		return fmt.Errorf("%d veths: at most %d", c.Veths, maxVeths)
	}
	if c.KernelBatch > 8192 {
		return fmt.Errorf("kernel batch %d: at most 8192 messages per sendmsg (their acks must fit the receive buffer)", c.KernelBatch)
	}
	return nil
}
