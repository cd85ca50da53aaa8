package bench

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"

	"github.com/quiltmesh/quilt-runtime/internal/netns"
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
// deletes it; its interfaces and routes go with it (see netns.Remove).
func removeNetns(name string) error {
	_, err := netns.Remove(name)
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
