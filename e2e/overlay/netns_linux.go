package overlay

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"

	"github.com/quiltmesh/quilt-runtime/internal/netns"
)

// netnsDir is where `ip netns` keeps named namespaces.
const netnsDir = netns.Dir

// inNetns, dialIn and listenIn run fn, dial and listen inside the named
// namespace (see internal/netns).
var inNetns, dialIn, listenIn = netns.Do, netns.Dial, netns.Listen

// setSysctls writes /proc/sys/net values inside the namespace: that part
// of /proc/sys belongs to the network namespace of the thread that opens
// it. keys are dotted, like "net.ipv4.conf.vxlan100.proxy_arp".
func setSysctls(ns string, kv ...string) error {
	return inNetns(ns, func() error {
		for i := 0; i+1 < len(kv); i += 2 {
			path := "/proc/sys/" + strings.ReplaceAll(kv[i], ".", "/")
			if err := os.WriteFile(path, []byte(kv[i+1]+"\n"), 0); err != nil {
				return fmt.Errorf("sysctl %s=%s in %s: %w", kv[i], kv[i+1], ns, err)
			}
		}
		return nil
	})
}

// readSysctl reads one /proc/sys/net value inside the namespace.
func readSysctl(ns, key string) (string, error) {
	var v string
	err := inNetns(ns, func() error {
		b, err := os.ReadFile("/proc/sys/" + strings.ReplaceAll(key, ".", "/"))
		v = strings.TrimSpace(string(b))
		return err
	})
	return v, err
}

// CommandError is a command that failed, with what it printed.
type CommandError struct {
	Args   []string
	Output string
	Err    error
}

func (e *CommandError) Error() string {
	return fmt.Sprintf("%s: %v: %s", strings.Join(e.Args, " "), e.Err, strings.TrimSpace(e.Output))
}

func (e *CommandError) Unwrap() error { return e.Err }

// command runs a program (ip, bridge) to completion and returns its
// output, or a *CommandError.
func command(ctx context.Context, name string, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return "", &CommandError{Args: append([]string{name}, args...), Output: string(out), Err: err}
	}
	return string(out), nil
}

// createNetns makes a named namespace with its loopback up.
func createNetns(ctx context.Context, name string) error {
	if _, err := command(ctx, "ip", "netns", "add", name); err != nil {
		return err
	}
	_, err := command(ctx, "ip", "-n", name, "link", "set", "lo", "up")
	return err
}

// namePrefix is the start of every namespace name of a run; the run's pid
// follows it, then a dash.
const namePrefix = "qov"

// sweepStale removes namespaces a run of this package left behind when it
// was killed before it could clean up (see netns.SweepStale).
func sweepStale() ([]string, error) {
	return netns.SweepStale(namePrefix, func(name string) error { _, err := netns.Remove(name); return err })
}
