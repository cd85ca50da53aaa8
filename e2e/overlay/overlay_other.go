//go:build !linux

package overlay

import (
	"context"
	"fmt"
	"runtime"
)

// Run needs Linux network namespaces, veth, bridge and vxlan devices.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	return nil, fmt.Errorf("overlay: not implemented on %s: it needs Linux network namespaces", runtime.GOOS)
}
