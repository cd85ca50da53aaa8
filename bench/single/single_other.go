//go:build !linux

package single

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"time"

	"github.com/quiltmesh/quilt-runtime/frontend/ipam"
	"github.com/quiltmesh/quilt-runtime/shared/policy"
)

// Config is what the baseline server is started with.
type Config struct {
	Addr           string
	Policy         policy.Policy
	StateDir       string
	Offsets        ipam.Offsets
	ResyncInterval time.Duration
	Table          uint32
	Proto          uint8
	Netns          string
	AllowAnyNetns  bool
	Version        string
	Log            *slog.Logger
}

// Serve needs Linux rtnetlink.
func Serve(ctx context.Context, cfg Config) error {
	return fmt.Errorf("single: not implemented on %s: it needs Linux rtnetlink", runtime.GOOS)
}
