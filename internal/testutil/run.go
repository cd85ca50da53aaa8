package testutil

import (
	"net"
	"os/exec"
	"strings"
	"testing"
)

// Run runs a command to its end and returns what it wrote, stdout and
// stderr together; if it fails, so does the test t, showing that.
func Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// FreeLoopback returns a loopback address, 127.0.0.1:PORT, that nobody
// listens on right now, for a server the test starts (in this network
// namespace or another).
func FreeLoopback(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
