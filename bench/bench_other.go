//go:build !linux

package bench

import (
	"context"
	"fmt"
	"runtime"
)

// Run needs Linux network namespaces, vxlan and rtnetlink.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	return &Report{}, fmt.Errorf("bench: not implemented on %s: it needs Linux network namespaces and rtnetlink", runtime.GOOS)
}
