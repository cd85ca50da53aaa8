package testutil

import (
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
