package netns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Dir is where `ip netns` keeps named namespaces.
const Dir = "/run/netns"

// Do runs fn on an OS thread that has entered the named namespace.
func Do(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		self, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer self.Close()
		target, err := os.Open(filepath.Join(Dir, ns))
		if err == nil {
			err = unix.Setns(int(target.Fd()), unix.CLONE_NEWNET)
			target.Close()
		}
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter namespace %s: %w", ns, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("return from namespace %s: %w", ns, err))
			return // still locked: the thread ends with this goroutine
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// Dial opens a TCP connection from inside the namespace; a timeout of 0
// leaves the deadline to ctx.
func Dial(ctx context.Context, ns, addr string, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := Do(ns, func() error {
		var err error
		c, err = (&net.Dialer{Timeout: timeout}).DialContext(ctx, "tcp", addr)
		return err
	})
	return c, err
}

// Listen opens a TCP listener inside the namespace.
func Listen(ns, addr string) (net.Listener, error) {
	var l net.Listener
	err := Do(ns, func() error {
		var err error
		l, err = net.Listen("tcp", addr)
		return err
	})
	return l, err
}

// SweepStale removes the named namespaces a killed run left behind: those
// named prefix, then a pid, then a dash, whose pid is gone (never this
// process's, never a live one's). remove deletes one; the names removed
// are returned.
func SweepStale(prefix string, remove func(name string) error) ([]string, error) {
	entries, err := os.ReadDir(Dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var swept []string
	var errs []error
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), prefix)
		pidText, _, dash := strings.Cut(rest, "-")
		pid, perr := strconv.Atoi(pidText)
		if !ok || !dash || perr != nil || pid <= 0 || pid == os.Getpid() {
			continue
		}
		if err := unix.Kill(pid, 0); err == nil || errors.Is(err, unix.EPERM) {
			continue // that run is still going
		}
		if err := remove(e.Name()); err != nil {
			errs = append(errs, err)
			continue
		}
		swept = append(swept, e.Name())
	}
	return swept, errors.Join(errs...)
}

// Remove kills whatever still runs in the named namespace, waits until
// each of those processes has ended, then deletes the namespace, so its
// interfaces (and a veth's peer in another namespace) are gone when it
// returns. A namespace that does not exist is no error. It returns how
// many processes it killed. It takes at most 30 s, on a context of its
// own: it must work while a run is being torn down.
func Remove(name string) (int, error) {
	if _, err := os.Stat(filepath.Join(Dir, name)); errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pids, err := pidsIn(ctx, name)
	var pidfds []int
	for _, pid := range pids {
		// A pidfd names the process itself, not whatever may reuse its
		// pid, and reads as ready once the process has ended, reaped or
		// not (kill(pid, 0) still finds a zombie).
		fd, perr := unix.PidfdOpen(pid, 0)
		if perr != nil {
			continue // gone already
		}
		defer unix.Close(fd)
		if perr := unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0); perr == nil {
			pidfds = append(pidfds, fd)
		}
	}
	for _, fd := range pidfds {
		if werr := waitReadable(ctx, fd); werr != nil {
			err = errors.Join(err, fmt.Errorf("namespace %s: a killed process did not end: %w", name, werr))
		}
	}
	if out, derr := exec.CommandContext(ctx, "ip", "netns", "del", name).CombinedOutput(); derr != nil {
		err = errors.Join(err, fmt.Errorf("ip netns del %s: %w: %s", name, derr, strings.TrimSpace(string(out))))
	}
	return len(pidfds), err
}

// pidsIn returns the processes running in the named namespace.
func pidsIn(ctx context.Context, name string) ([]int, error) {
	out, err := exec.CommandContext(ctx, "ip", "netns", "pids", name).Output()
	if err != nil {
		return nil, fmt.Errorf("ip netns pids %s: %w", name, err)
	}
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// waitReadable waits until fd is readable or ctx, which has a deadline,
// ends.
func waitReadable(ctx context.Context, fd int) error {
	deadline, _ := ctx.Deadline()
	for ctx.Err() == nil {
		ms := max(1, int(time.Until(deadline).Milliseconds()))
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, ms)
		switch {
		case errors.Is(err, unix.EINTR):
		case err != nil:
			return err
		case n > 0:
			return nil
		}
	}
	return ctx.Err()
}
