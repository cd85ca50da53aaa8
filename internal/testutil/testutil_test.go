package testutil

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestProc: a process's exit status, output and end are seen as they
// happen; a wait that gives up says the process still runs; Until gives
// up as soon as the process it waits on has died.
func TestProc(t *testing.T) {
	p, err := Start(exec.Command("sh", "-c", "echo out; echo err >&2; exit 3"))
	if err != nil {
		t.Fatal(err)
	}
	var exit *exec.ExitError
	if err := p.Wait(10 * time.Second); !errors.As(err, &exit) || exit.ExitCode() != 3 {
		t.Fatalf("Wait: %v, want exit status 3", err)
	}
	if !p.Exited() || !errors.As(p.Err(), &exit) || p.Output() != "out\nerr\n" {
		t.Fatalf("after exit: exited %v, err %v, output %q", p.Exited(), p.Err(), p.Output())
	}

	sleeper := StartTest(t, exec.Command("sleep", "60"))
	if err := sleeper.Wait(10 * time.Millisecond); !errors.Is(err, ErrRunning) || sleeper.Exited() || sleeper.Err() != nil {
		t.Fatalf("Wait on a running process: %v (exited %v, err %v), want ErrRunning", err, sleeper.Exited(), sleeper.Err())
	}
	ctx := context.Background()
	err = Until(ctx, time.Minute, sleeper, func() bool { sleeper.Stop(syscall.SIGTERM, 10*time.Second); return false })
	if !errors.Is(err, ErrExited) || !sleeper.KilledBy(syscall.SIGTERM) || sleeper.KilledBy(syscall.SIGKILL) {
		t.Fatalf("Until on a process that died: %v, killed by SIGTERM %v; want ErrExited", err, sleeper.KilledBy(syscall.SIGTERM))
	}
	if err := Until(ctx, 50*time.Millisecond, nil, func() bool { return false }); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Until past its limit: %v", err)
	}
	n := 0
	if err := Until(ctx, time.Minute, nil, func() bool { n++; return n == 3 }); err != nil || n != 3 {
		t.Fatalf("Until: %v after %d looks, want nil after 3", err, n)
	}
}

// TestLogBufferTee: what a process writes reaches both the buffer and
// the file it tees to, and Output reads a buffer the caller set up.
func TestLogBufferTee(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := &LogBuffer{Tee: f}
	cmd := exec.Command("echo", "hello")
	cmd.Stdout, cmd.Stderr = out, out
	p, err := Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); p.Output() != "hello\n" || string(b) != "hello\n" || out.Len() != 6 {
		t.Fatalf("output %q, file %q, len %d; want hello in both", p.Output(), b, out.Len())
	}
}

// TestStacks: a Go program asked for its stacks prints every goroutine's
// and ends.
func TestStacks(t *testing.T) {
	if os.Getenv("TESTUTIL_CHILD") == "block" {
		block := make(chan struct{})
		go func() { <-block }()
		os.Stdout.WriteString("ready\n")
		<-block
	}
	// The child's own test timeout is a timer, which keeps the runtime
	// from reporting its blocked goroutines as a deadlock.
	cmd := exec.Command(os.Args[0], "-test.run=^TestStacks$", "-test.timeout=1m")
	cmd.Env = append(os.Environ(), "TESTUTIL_CHILD=block")
	p := StartTest(t, cmd)
	if err := Until(context.Background(), time.Minute, p, func() bool { return strings.Contains(p.Output(), "ready") }); err != nil {
		t.Fatal(err)
	}
	stacks, err := p.Stacks(10 * time.Second)
	if err != nil || !p.Exited() || !strings.Contains(stacks, "testutil.TestStacks.func1") {
		t.Fatalf("stacks: %v\n%s", err, stacks)
	}
}

// TestLeaked: a goroutine started after the snapshot and still blocked is
// reported with its stack; one that ends within the wait is not; nor is
// one that ran before the snapshot.
func TestLeaked(t *testing.T) {
	old := make(chan struct{})
	defer close(old)
	go parkOld(old)
	s := Goroutines()

	stuck, brief := make(chan struct{}), make(chan struct{})
	go parkLeaked(stuck)
	go parkBriefly(brief)
	time.AfterFunc(50*time.Millisecond, func() { close(brief) })
	leaked := s.Leaked(300 * time.Millisecond)
	if len(leaked) != 1 || !strings.Contains(leaked[0], "testutil.parkLeaked") {
		t.Fatalf("leaked: %d stacks, want parkLeaked's alone:\n%s", len(leaked), strings.Join(leaked, "\n\n"))
	}
	close(stuck)
	if leaked := s.Leaked(10 * time.Second); len(leaked) != 0 {
		t.Fatalf("after the goroutine ended, still leaked:\n%s", strings.Join(leaked, "\n\n"))
	}
}

func parkOld(c chan struct{})     { <-c }
func parkLeaked(c chan struct{})  { <-c }
func parkBriefly(c chan struct{}) { <-c }

// TestCheckGoroutines: the check fails a test that leaves a goroutine
// running, and passes one whose goroutines have ended.
func TestCheckGoroutines(t *testing.T) {
	stuck := make(chan struct{})
	defer close(stuck)
	leaky := &recorder{TB: t}
	checkGoroutines(leaky, 300*time.Millisecond)
	go parkLeaked(stuck)
	leaky.cleanup()
	if len(leaky.errors) != 1 || !strings.Contains(leaky.errors[0], "testutil.parkLeaked") {
		t.Fatalf("a test that leaked a goroutine: errors %q", leaky.errors)
	}

	clean := &recorder{TB: t}
	checkGoroutines(clean, 10*time.Second)
	done := make(chan struct{})
	go parkBriefly(done)
	close(done)
	clean.cleanup()
	if len(clean.errors) != 0 {
		t.Fatalf("a test that leaked nothing: errors %q", clean.errors)
	}
}

// recorder is a test that keeps its cleanups and errors to itself.
type recorder struct {
	testing.TB
	cleanups []func()
	errors   []string
}

func (r *recorder) Helper()          {}
func (r *recorder) Failed() bool     { return len(r.errors) > 0 }
func (r *recorder) Cleanup(f func()) { r.cleanups = append(r.cleanups, f) }
func (r *recorder) Errorf(f string, args ...any) {
	r.errors = append(r.errors, fmt.Sprintf(f, args...))
}

func (r *recorder) cleanup() {
	for _, f := range slices.Backward(r.cleanups) {
		f()
	}
}
