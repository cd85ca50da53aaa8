//go:build !linux

package single

import (
	"context"
	"fmt"
	"runtime"

	"github.com/quiltmesh/quilt-runtime/frontend"
)

// Config is what the baseline server is started with.
type Config struct {
	frontend.Config
	Netns         string
	AllowAnyNetns bool
}

// Serve needs Linux rtnetlink.
func Serve(ctx context.Context, cfg Config) error {
	return fmt.Errorf("single: not implemented on %s: it needs Linux rtnetlink", runtime.GOOS)
}
