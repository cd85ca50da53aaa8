package bench

import (
	"github.com/quiltmesh/quilt-runtime/internal/netns"

	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// netnsDir is where `ip netns` keeps named namespaces.
const netnsDir = netns.Dir

// namePrefix starts every namespace of a run: qbench<pid>-<system><n>.
const namePrefix = "qbench"

// inNetns runs fn inside the named namespace (see internal/netns).
var inNetns = netns.Do

// dialIn opens a TCP connection from inside the namespace.
func dialIn(ctx context.Context, ns, addr string) (net.Conn, error) {
	return netns.Dial(ctx, ns, addr, 0)
}

// command runs a program to completion and returns its output; a failure
// carries what it printed.
func command(ctx context.Context, name string, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// ipBatch runs ip's commands, one a line, inside the namespace, in one
// process; it stops at the first that fails.
func ipBatch(ctx context.Context, ns, lines string) error {
	cmd := exec.CommandContext(ctx, "ip", "-n", ns, "-batch", "-")
	cmd.Stdin = strings.NewReader(lines)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("ip -n %s -batch: %w: %s", ns, err, clip(string(out), 200))
	}
	return nil
}

// createNetns makes a named namespace with lo up and, unless dev is
// empty, the overlay device dev, vxlan VNI 100 without a remote (it never
// sends a packet), up.
func createNetns(ctx context.Context, name, dev string) error {
	if _, err := command(ctx, "ip", "netns", "add", name); err != nil {
		return err
	}
	steps := [][]string{{"-n", name, "link", "set", "lo", "up"}}
	if dev != "" {
		steps = append(steps,
			[]string{"-n", name, "link", "add", dev, "type", "vxlan", "id", "100", "dstport", "4789"},
			[]string{"-n", name, "link", "set", dev, "up"})
	}
	for _, args := range steps {
		if _, err := command(ctx, "ip", args...); err != nil {
			return err
		}
	}
	return nil
}

// removeNetns kills whatever still runs in a namespace of ours, then
// deletes it; its interfaces and routes go with it. It uses a context of
// its own: it must work after the run's context was cancelled.
func removeNetns(name string) error {
	if _, err := os.Stat(filepath.Join(netnsDir, name)); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := command(ctx, "ip", "netns", "pids", name)
	var pids []int
	for _, f := range strings.Fields(out) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	for _, pid := range pids {
		unix.Kill(pid, unix.SIGKILL)
	}
	for _, pid := range pids {
		for i := 0; i < 200 && unix.Kill(pid, 0) == nil; i++ {
			time.Sleep(10 * time.Millisecond)
		}
	}
	if _, derr := command(ctx, "ip", "netns", "del", name); derr != nil {
		err = errors.Join(err, derr)
	}
	return err
}

// sweepStale removes the namespaces of runs that were killed before they
// could clean up (see netns.SweepStale).
func sweepStale() ([]string, error) { return netns.SweepStale(namePrefix, removeNetns) }

// ourNamespaces lists the namespaces this process made and has not removed.
func ourNamespaces() []string {
	entries, _ := os.ReadDir(netnsDir)
	var names []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), fmt.Sprintf("%s%d-", namePrefix, os.Getpid())) {
			names = append(names, e.Name())
		}
	}
	return names
}
