//go:build !linux

package netns

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"time"
)

// Dir is where `ip netns` keeps named namespaces.
const Dir = "/run/netns"

var errNotLinux = fmt.Errorf("network namespaces: not implemented on %s", runtime.GOOS)

// Do is not implemented beyond Linux.
func Do(string, func() error) error { return errNotLinux }

// Dial is not implemented beyond Linux.
func Dial(context.Context, string, string, time.Duration) (net.Conn, error) { return nil, errNotLinux }

// Listen is not implemented beyond Linux.
func Listen(string, string) (net.Listener, error) { return nil, errNotLinux }

// SweepStale is not implemented beyond Linux.
func SweepStale(string, func(string) error) ([]string, error) { return nil, errNotLinux }

// Remove is not implemented beyond Linux.
func Remove(string) (int, error) { return 0, errNotLinux }
