package testutil

import (
	"bytes"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// leakWait is how long CheckGoroutines gives the goroutines a test
// started to end: teardown is asynchronous (a closed gRPC connection
// stops its goroutines after Close returns).
const leakWait = 10 * time.Second

// lifelong are goroutines the standard library starts once and keeps for
// the life of the process: never a leak of the test that started them.
var lifelong = []string{
	"os/signal.loop(", // the first signal.Notify's
}

// CheckGoroutines fails the test t if goroutines started during it still
// run when it ends. It notes the goroutines running now; when the test
// ends, unless it has failed already (a failure may strand goroutines),
// it waits up to 10 s for every goroutine started since to end, and
// reports the stack of each one still running. Call it first in the
// test, so that it looks after the test's other cleanups have run, and
// not in a test that runs in parallel with others, whose goroutines it
// would count as leaks.
func CheckGoroutines(t testing.TB) {
	t.Helper()
	checkGoroutines(t, leakWait)
}

// checkGoroutines is CheckGoroutines with a wait of d.
func checkGoroutines(t testing.TB, d time.Duration) {
	t.Helper()
	before := Goroutines()
	t.Cleanup(func() {
		t.Helper()
		if t.Failed() {
			return
		}
		if leaked := before.Leaked(d); len(leaked) > 0 {
			t.Errorf("leak: goroutines the test started still run %v after it: %d\n\n%s", d, len(leaked), strings.Join(leaked, "\n\n"))
		}
	})
}

// Snapshot is the goroutines running at one moment, by id.
type Snapshot map[int]bool

// Goroutines returns the goroutines running now.
func Goroutines() Snapshot {
	s := Snapshot{}
	for id := range stacks() {
		s[id] = true
	}
	return s
}

// Leaked waits up to d for the goroutines started since s to end, and
// returns the stacks of those still running then, oldest first.
func (s Snapshot) Leaked(d time.Duration) []string {
	deadline := time.Now().Add(d)
	for {
		var ids []int
		now := stacks()
		for id, stack := range now {
			if !s[id] && !isLifelong(stack) {
				ids = append(ids, id)
			}
		}
		if len(ids) == 0 || time.Now().After(deadline) {
			slices.Sort(ids)
			leaked := make([]string, len(ids))
			for i, id := range ids {
				leaked[i] = now[id]
			}
			return leaked
		}
		time.Sleep(pollEvery)
	}
}

func isLifelong(stack string) bool {
	return slices.ContainsFunc(lifelong, func(fn string) bool { return strings.Contains(stack, fn) })
}

// stacks returns every goroutine's stack, as runtime.Stack prints it
// ("goroutine 7 [chan receive]:\n..."), by goroutine id.
func stacks() map[int]string {
	buf := make([]byte, 64<<10)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	all := map[int]string{}
	for _, stack := range bytes.Split(buf, []byte("\n\n")) {
		header, _, _ := bytes.Cut(stack, []byte(" ["))
		id, err := strconv.Atoi(string(bytes.TrimPrefix(header, []byte("goroutine "))))
		if err == nil {
			all[id] = string(stack)
		}
	}
	return all
}
