package overlay

import (
	"errors"
	"log/slog"
	"time"
)

// Config says which binaries to run and how to report progress.
type Config struct {
	// HelperBin and FrontendBin are the built quilt-route-helper and
	// quilt-runtime. They are copied to a directory every uid can read, so
	// they may live anywhere root can read.
	HelperBin, FrontendBin string
	// IPAMBin is the built quilt-ipam; CNIBin the directory holding the
	// reference bridge plugin and cnitool (make cni-tools puts them in
	// bin/cni). They are copied as the other binaries are.
	IPAMBin, CNIBin string
	// ResyncInterval is each frontend's --resync-interval; the heal check
	// allows one interval plus HealSlack. Default 1s.
	ResyncInterval time.Duration
	// HealSlack is what the heal deadline allows beyond one resync
	// interval: process scheduling on a busy machine, the probe's own
	// timeout. Default 3s.
	HealSlack time.Duration
	// Log gets progress lines (commands, processes); nil discards them.
	Log *slog.Logger
	// OnStart is called once the nodes exist, with the report so far;
	// OnStep as each step ends. Either may be nil.
	OnStart func(*Report)
	OnStep  func(*Step)
}

// ErrCheckFailed is returned (wrapped) by Run when a step's check did not
// hold; the report says which.
var ErrCheckFailed = errors.New("check failed")

func (c *Config) defaults() {
	if c.ResyncInterval <= 0 {
		c.ResyncInterval = time.Second
	}
	if c.HealSlack <= 0 {
		c.HealSlack = 3 * time.Second
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
}
