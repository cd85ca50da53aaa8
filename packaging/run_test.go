package packaging_test

import (
	"context"
	"fmt"
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

	"github.com/quiltmesh/quilt-runtime/internal/testutil"
)

var runPidRE = regexp.MustCompile(`make run: pid (\d+), namespace (\S+), files in (\S+)`)

// startRun starts argv in the top of the tree, in its own process group,
// serving gRPC and metrics on free loopback ports (make run binds
// 127.0.0.1:50051 and 127.0.0.1:9542 otherwise, which runs side by side
// would share), and waits until it serves. It returns the run and the
// script's pid, namespace and directory.
func startRun(t *testing.T, argv ...string) (*testutil.Proc, int, string, string) {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "ADDR="+testutil.FreeLoopback(t), "METRICS_ADDR="+testutil.FreeLoopback(t), "SANDBOX=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	r := testutil.StartTest(t, cmd) // kills the top process; this, its group:
	t.Cleanup(func() { syscall.Kill(-r.Pid(), syscall.SIGKILL) })
	// The first make run builds.
	serving := func() bool { return strings.Contains(r.Output(), "quilt-runtime is serving on") }
	if err := testutil.Until(context.Background(), 2*time.Minute, r, serving); err != nil {
		t.Fatalf("%s: %v", strings.Join(argv, " "), err)
	}
	m := runPidRE.FindStringSubmatch(r.Output())
	if m == nil {
		t.Fatalf("no pid line in:\n%s", r.Output())
	}
	pid, _ := strconv.Atoi(m[1])
	return r, pid, m[2], m[3]
}

// leftovers lists what a run of script pid left: the script itself, any
// process running from its directory or inside its namespace, the
// namespace, the directory.
func leftovers(t *testing.T, pid int, ns, dir string) []string {
	t.Helper()
	var left []string
	if syscall.Kill(pid, 0) == nil {
		left = append(left, fmt.Sprintf("script pid %d", pid))
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/exe")
	for _, p := range procs {
		if exe, err := os.Readlink(p); err == nil && strings.HasPrefix(exe, dir+"/") {
			left = append(left, fmt.Sprintf("process %s (%s)", filepath.Base(filepath.Dir(p)), exe))
		}
	}
	if _, err := os.Stat(filepath.Join("/run/netns", ns)); err == nil {
		left = append(left, "namespace "+ns)
	}
	if _, err := os.Stat(dir); err == nil {
		left = append(left, "directory "+dir)
	}
	return left
}

// awaitClean waits until the run left nothing, or fails naming what stays.
func awaitClean(t *testing.T, pid int, ns, dir string) {
	t.Helper()
	var left []string
	if err := testutil.Until(context.Background(), 15*time.Second, nil, func() bool { left = leftovers(t, pid, ns, dir); return len(left) == 0 }); err != nil {
		t.Fatalf("left behind: %s (%v)", strings.Join(left, ", "), err)
	}
}

// TestMakeRunCleansUp stops `make run` every way a person or a tool does
// and checks it leaves no process, namespace or directory: timeout(1);
// Ctrl-C (SIGINT to the process group); SIGTERM, SIGHUP or SIGINT to make
// alone; SIGTERM or SIGHUP to the script alone; the terminal closing (a
// pty whose other end goes away); and a SIGKILLed script, whose processes
// die with it and whose namespace and directory the next run sweeps.
func TestMakeRunCleansUp(t *testing.T) {
	requireRoot(t)
	requireTool(t, "make", "ip", "setpriv", "timeout", "script")
	// Signals reach the runs with their default actions, whatever this test
	// inherited: exec resets handled signals, not ignored ones.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGINT)
	defer signal.Stop(sigs)
	build := exec.Command("make", "build")
	build.Dir = repo
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("make build: %v\n%s", err, out)
	}
	makeRun := []string{"make", "-o", "build", "run"} // built above
	script := []string{"bash", "packaging/dev/run.sh"}
	t.Run("each way", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			argv []string
			stop func(top *exec.Cmd, script int) // nil: it stops by itself
		}{
			{"timeout 20 make run", append([]string{"timeout", "20"}, makeRun...), nil},
			{"Ctrl-C: SIGINT to the process group", makeRun, func(top *exec.Cmd, _ int) { syscall.Kill(-top.Process.Pid, syscall.SIGINT) }},
			{"SIGTERM to make", makeRun, func(top *exec.Cmd, _ int) { top.Process.Signal(syscall.SIGTERM) }},
			{"SIGHUP to make", makeRun, func(top *exec.Cmd, _ int) { top.Process.Signal(syscall.SIGHUP) }},
			{"SIGINT to make", makeRun, func(top *exec.Cmd, _ int) { top.Process.Signal(syscall.SIGINT) }},
			{"SIGTERM to the script", script, func(_ *exec.Cmd, pid int) { syscall.Kill(pid, syscall.SIGTERM) }},
			{"SIGHUP to the script", script, func(_ *exec.Cmd, pid int) { syscall.Kill(pid, syscall.SIGHUP) }},
			{"the terminal closes", []string{"script", "-qec", strings.Join(makeRun, " "), "/dev/null"}, func(top *exec.Cmd, _ int) { top.Process.Kill() }},
		} {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				r, pid, ns, dir := startRun(t, tc.argv...)
				if left := leftovers(t, pid, ns, dir); len(left) != 5 {
					t.Fatalf("a serving run should show its script, namespace and directory, and its processes: %q", left)
				}
				if tc.stop != nil {
					tc.stop(r.Cmd, pid)
				}
				r.ExitStatus(t, 30*time.Second)
				awaitClean(t, pid, ns, dir)
			})
		}
	})
	t.Run("SIGKILL, then the next run sweeps", func(t *testing.T) {
		r, pid, ns, dir := startRun(t, script...)
		syscall.Kill(pid, syscall.SIGKILL)
		r.ExitStatus(t, 10*time.Second)
		// Its processes die with it (--pdeathsig); nothing else is removed.
		var left []string
		onlyFiles := func() bool {
			left = leftovers(t, pid, ns, dir)
			return strings.Join(left, ", ") == "namespace "+ns+", directory "+dir
		}
		if err := testutil.Until(context.Background(), 15*time.Second, nil, onlyFiles); err != nil {
			t.Fatalf("after SIGKILL of the script, left: %q; want only its namespace and directory (%v)", left, err)
		}
		next, pid2, ns2, dir2 := startRun(t, script...)
		if !strings.Contains(next.Output(), "swept namespace "+ns) || !strings.Contains(next.Output(), "swept "+dir) {
			t.Errorf("the next run did not say it swept %s and %s:\n%s", ns, dir, next.Output())
		}
		awaitClean(t, pid, ns, dir)
		syscall.Kill(pid2, syscall.SIGTERM)
		next.ExitStatus(t, 30*time.Second)
		awaitClean(t, pid2, ns2, dir2)
	})
}
