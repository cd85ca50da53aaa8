package testutil

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// ErrExited means a process ended while something waited on it.
var ErrExited = errors.New("process exited")

// ErrRunning means a process still ran when a wait for its end gave up.
var ErrRunning = errors.New("process still running")

// pollEvery is how often Until looks at its condition.
const pollEvery = 20 * time.Millisecond

// killWait bounds how long Kill waits for a SIGKILLed process: only one
// stuck in the kernel outlives it.
const killWait = 10 * time.Second

// Proc is a started process, reaped in the background as soon as it ends.
type Proc struct {
	Cmd  *exec.Cmd
	done chan struct{} // closed once the process has been reaped
	err  error         // what Cmd.Wait returned, once done
}

// Start starts cmd and reaps it when it ends. Unless the caller set
// cmd.Stdout or cmd.Stderr, both go to a new LogBuffer. Output reads the
// LogBuffer that cmd.Stdout is, if it is one.
func Start(cmd *exec.Cmd) (*Proc, error) {
	if cmd.Stdout == nil && cmd.Stderr == nil {
		out := &LogBuffer{}
		cmd.Stdout, cmd.Stderr = out, out
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &Proc{Cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// StartTest starts cmd for the test t, which fails if cmd cannot start.
// When the test ends the process is killed and reaped, and if the test
// failed, what it wrote is logged.
func StartTest(t testing.TB, cmd *exec.Cmd) *Proc {
	t.Helper()
	p, err := Start(cmd)
	if err != nil {
		t.Fatalf("start %q: %v", cmd.Args, err)
	}
	t.Cleanup(func() {
		if err := p.Kill(); err != nil {
			t.Error(err)
		}
		if t.Failed() {
			t.Logf("output of %q:\n%s", cmd.Args, p.Output())
		}
	})
	return p
}

// Pid is the process's id.
func (p *Proc) Pid() int { return p.Cmd.Process.Pid }

// Done is closed once the process has ended and been reaped.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Err is the process's exit status as Cmd.Wait reported it: nil while it
// runs, and for exit status 0.
func (p *Proc) Err() error {
	if !p.Exited() {
		return nil
	}
	return p.err
}

// Wait waits up to d for the process to end and returns its exit status
// as Cmd.Wait reported it (nil for exit status 0), or, if it still runs
// after d, an error wrapping ErrRunning.
func (p *Proc) Wait(d time.Duration) error {
	select {
	case <-p.done:
		return p.err
	case <-time.After(d):
		return fmt.Errorf("pid %d %q: %w after %v", p.Pid(), p.Cmd.Args, ErrRunning, d)
	}
}

// ExitStatus waits up to d for the process to end and returns its exit
// status as Cmd.Wait reported it (nil for exit status 0). If it still
// runs after d, the test t fails and stops.
func (p *Proc) ExitStatus(t testing.TB, d time.Duration) error {
	t.Helper()
	err := p.Wait(d)
	if errors.Is(err, ErrRunning) {
		t.Fatalf("%v; it wrote:\n%s", err, p.Output())
	}
	return err
}

// Stop sends sig, unless the process has ended, and waits up to d for it
// to end: nil once it has, whatever its exit status, or an error wrapping
// ErrRunning.
func (p *Proc) Stop(sig os.Signal, d time.Duration) error {
	if p.Exited() {
		return nil
	}
	if err := p.Cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("pid %d: signal %v: %w", p.Pid(), sig, err)
	}
	if err := p.Wait(d); errors.Is(err, ErrRunning) {
		return err
	}
	return nil
}

// Kill ends the process with SIGKILL, if it still runs, and waits until
// it has been reaped.
func (p *Proc) Kill() error { return p.Stop(syscall.SIGKILL, killWait) }

// KilledBy reports whether the process has ended by signal sig.
func (p *Proc) KilledBy(sig syscall.Signal) bool {
	if !p.Exited() {
		return false
	}
	ws, ok := p.Cmd.ProcessState.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == sig
}

// Output returns what the process has written so far to its LogBuffer,
// or "" if its output goes elsewhere.
func (p *Proc) Output() string {
	if out, ok := p.Cmd.Stdout.(*LogBuffer); ok {
		return out.String()
	}
	return ""
}

// Stacks makes a Go program print the stack of every goroutine and end,
// as SIGQUIT does, waits up to d for it, and returns what it wrote after
// the signal. A leak check reads the stacks of another process this way.
func (p *Proc) Stacks(d time.Duration) (string, error) {
	out, ok := p.Cmd.Stdout.(*LogBuffer)
	if !ok {
		return "", fmt.Errorf("pid %d: its output goes to no LogBuffer", p.Pid())
	}
	mark := out.Len()
	if p.Exited() {
		return "", fmt.Errorf("pid %d: %w before its stacks were asked for", p.Pid(), ErrExited)
	}
	err := p.Stop(syscall.SIGQUIT, d)
	return out.String()[mark:], err
}

// Until polls cond every 20 ms until it holds. It gives up with an error
// when p, unless nil, has ended (ErrExited, with what p wrote), when
// limit has passed (context.DeadlineExceeded), or when ctx ends.
func Until(ctx context.Context, limit time.Duration, p *Proc, cond func() bool) error {
	deadline := time.Now().Add(limit)
	for !cond() {
		if p != nil && p.Exited() {
			return fmt.Errorf("pid %d %q: %w (%v)%s", p.Pid(), p.Cmd.Args, ErrExited, p.err, p.said())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not so after %v%s: %w", limit, p.said(), context.DeadlineExceeded)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pollEvery):
		}
	}
	return nil
}

// said introduces what p wrote, for an error; nothing if p is nil or
// wrote nothing.
func (p *Proc) said() string {
	if p == nil {
		return ""
	}
	out := p.Output()
	if out == "" {
		return ""
	}
	return fmt.Sprintf("; pid %d wrote:\n%s", p.Pid(), out)
}
