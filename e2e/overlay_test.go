package e2e

import (
	"bufio"
	"context"
	"errors"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"golang.org/x/sys/unix"

	"github.com/quiltmesh/quilt-runtime/e2e/overlay"
	"github.com/quiltmesh/quilt-runtime/internal/netns"
	"github.com/quiltmesh/quilt-runtime/internal/testutil"
)

// TestOverlayThreeNodes is the product's end-to-end proof: three nodes on a
// VXLAN overlay, each with the real helper and frontend, containers
// addressed by the nodes' IPAM, and the agent's calls over gRPC. Containers
// on different nodes reach each other only once the routes are injected,
// stop when a node leaves, keep reaching each other while a node's helper
// and frontend are killed and restarted, and reach each other again after
// the routes are flushed, with no agent call. Run it alone, narrated:
// `sudo go test -v -run OverlayThreeNodes ./e2e`. The scenario runs in
// this process: it must end every goroutine it started.
func TestOverlayThreeNodes(t *testing.T) {
	requireRoot(t)
	testutil.CheckGoroutines(t)
	// Ctrl-C or SIGTERM stops the scenario; Run removes what it made first.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	const interval = time.Second
	rep, err := overlay.Run(ctx, overlay.Config{
		HelperBin:      filepath.Join(binDir, "quilt-route-helper"),
		FrontendBin:    filepath.Join(binDir, "quilt-runtime"),
		IPAMBin:        filepath.Join(binDir, "quilt-ipam"),
		CNIBin:         filepath.Join(binDir, "cni"),
		ResyncInterval: interval,
		OnStep: func(s *overlay.Step) {
			var b strings.Builder
			s.WriteText(&b)
			t.Log(b.String())
		},
	})
	if rep != nil && rep.Prefix != "" {
		assertGone(t, rep.Prefix)
	}
	if err != nil {
		t.Fatal(err)
	}

	want := []string{"nodes", "start", "configure", "containers", "isolated", "inject", "cni", "leave", "restart", "heal"}
	var got []string
	for _, s := range rep.Steps {
		got = append(got, s.Name)
		if !s.OK() || len(s.Checks) == 0 {
			t.Errorf("step %s: ok=%v with %d checks", s.Name, s.OK(), len(s.Checks))
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("steps (-want +got):\n%s", diff)
	}
	// The heal step checks the routes came back within one resync
	// interval plus HealSlack; here, only that it was measured.
	m := rep.Measurements
	if m.HealSeconds <= 0 {
		t.Errorf("heal: %.3fs measured", m.HealSeconds)
	}
	if m.RestartFailures != 0 || m.RestartProbes < 10 {
		t.Errorf("restart: %d of %d probes failed", m.RestartFailures, m.RestartProbes)
	}
	// Every namespace the run made (13) removed, and nothing left behind.
	if diff := cmp.Diff(overlay.Cleanup{Namespaces: 13}, rep.Cleanup, cmpopts.IgnoreFields(overlay.Cleanup{}, "Processes")); diff != "" {
		t.Errorf("cleanup (-want +got):\n%s", diff)
	}
	t.Logf("measured: heal %.3fs (routes back %.3fs); restart: %d probes, %d failed, longest gap %.0fms; control plane down %.2fs",
		m.HealSeconds, m.RoutesBackSeconds, m.RestartProbes, m.RestartFailures, m.RestartMaxGapMs, m.ControlPlaneDownSeconds)
}

// TestOverlayDemoInterrupted: Ctrl-C in the middle of `make demo` leaves
// no namespace and no process behind.
func TestOverlayDemoInterrupted(t *testing.T) {
	requireRoot(t)
	cmd := exec.Command(filepath.Join(binDir, "quilt-demo"), "-bin", binDir, "-v")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr testutil.LogBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var waitErr error
	exited := make(chan struct{}) // closed once cmd.Wait has returned waitErr
	t.Cleanup(func() {
		// On an early failure, ask the demo to clean up as Ctrl-C would;
		// kill it only if it will not, then remove what it left.
		select {
		case <-exited:
			return
		default:
		}
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(time.Minute):
			cmd.Process.Kill()
		}
		removeNamespaces(t, "qov"+strconv.Itoa(cmd.Process.Pid)+"-")
	})

	// Interrupt once the routes are injected: processes, containers and
	// routes all exist then.
	var out strings.Builder
	reached := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		signalled := false
		for sc.Scan() {
			out.WriteString(sc.Text() + "\n")
			if !signalled && strings.HasPrefix(sc.Text(), "== 6.") {
				signalled = true
				close(reached)
			}
		}
		waitErr = cmd.Wait()
		close(exited)
	}()
	select {
	case <-reached:
	case <-exited:
		t.Fatalf("demo ended before step 6: %v\n%s\n%s", waitErr, out.String(), stderr.String())
	case <-time.After(2 * time.Minute):
		t.Fatalf("demo did not reach step 6:\n%s", stderr.String())
	}
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
		err = waitErr
	case <-time.After(time.Minute):
		t.Fatalf("demo still running a minute after SIGINT:\n%s", stderr.String())
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(stderr.String(), "interrupted") {
		t.Fatalf("demo after SIGINT: %v, want exit status 1 and \"interrupted\":\n%s", err, stderr.String())
	}

	// Every process it started is gone, and so is every namespace.
	pids := regexp.MustCompile(`msg=started process="[^"]+" pid=(\d+)`).FindAllStringSubmatch(stderr.String(), -1)
	if len(pids) < 6 {
		t.Fatalf("want the demo to log at least 6 process starts, found %d:\n%s", len(pids), stderr.String())
	}
	for _, m := range pids {
		pid, _ := strconv.Atoi(m[1])
		if err := unix.Kill(pid, 0); !errors.Is(err, unix.ESRCH) {
			t.Errorf("process %d still exists after the demo ended (kill 0: %v)", pid, err)
		}
	}
	assertGone(t, "qov"+strconv.Itoa(cmd.Process.Pid)+"-")
}

// assertGone fails the test if any network namespace's name starts with
// prefix.
func assertGone(t *testing.T, prefix string) {
	t.Helper()
	entries, err := os.ReadDir("/run/netns")
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			t.Errorf("namespace %s is still there", e.Name())
		}
	}
}

// removeNamespaces deletes the namespaces whose names start with prefix,
// with what runs in them (processes this test started).
func removeNamespaces(t *testing.T, prefix string) {
	t.Helper()
	entries, _ := os.ReadDir(netns.Dir)
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), prefix) {
			continue
		}
		if _, err := netns.Remove(e.Name()); err != nil {
			t.Errorf("remove namespace %s: %v", e.Name(), err)
		}
	}
}
