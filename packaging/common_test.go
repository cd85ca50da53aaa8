package packaging_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/quiltmesh/quilt-runtime/internal/testutil"
)

// repo is the top of the source tree, relative to this package.
const repo = ".."

// Names of the shipped units, relative to packaging/systemd.
const (
	frontendUnit = "quilt-runtime.service"
	helperUnit   = "quilt-route-helper.service"
	socketUnit   = "quilt-route-helper.socket"
	grpcUnit     = "quilt-runtime.socket"
)

// allUnits are every unit the package ships.
var allUnits = []string{frontendUnit, helperUnit, socketUnit, grpcUnit}

// binDir holds quilt-route-helper, quilt-runtime and quilt-ipam built for this test run,
// in a directory every uid can read.
var binDir string

func TestMain(m *testing.M) {
	if mode := os.Getenv("QUILT_PACKAGING_CHILD"); mode != "" {
		os.Exit(child(mode))
	}
	if kind := os.Getenv("QUILT_PACKAGING_PROBE"); kind != "" {
		os.Exit(probe(kind))
	}
	dir, err := os.MkdirTemp("", "quilt-packaging-bin-")
	if err == nil {
		err = os.Chmod(dir, 0o755)
	}
	for _, pkg := range []string{"./helper/cmd/quilt-route-helper", "./frontend/cmd/quilt-runtime", "./frontend/cmd/quilt-ipam"} {
		if err != nil {
			break
		}
		cmd := exec.Command("go", "build", "-trimpath", "-o", dir, pkg)
		cmd.Dir, cmd.Env = repo, append(os.Environ(), "CGO_ENABLED=0")
		if out, berr := cmd.CombinedOutput(); berr != nil {
			err = fmt.Errorf("build %s: %v\n%s", pkg, berr, out)
		}
	}
	// The test binary also runs as an unprivileged child (see child).
	if err == nil {
		err = copyFile(os.Args[0], filepath.Join(dir, "packaging.test"), 0o755)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "packaging test setup:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	if debDir != "" {
		os.RemoveAll(debDir)
	}
	os.Exit(code)
}

// requireRoot skips the test without root, or fails it when CI=true.
func requireRoot(t *testing.T) {
	t.Helper()
	testutil.RequireRoot(t, "namespaces, other uids, dpkg in a chroot")
}

// requireTool skips the test when a program is missing, or fails it when
// CI=true (make deps installs them all: packaging/dev/deps.txt).
func requireTool(t *testing.T, names ...string) {
	t.Helper()
	for _, name := range names {
		if _, err := exec.LookPath(name); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is missing and CI=true forbids skipping: make deps installs it (packaging/dev/deps.txt)", name)
			}
			t.Skipf("%s is missing (apt-get install %s)", name, map[string]string{
				"systemd-analyze": "systemd", "lintian": "lintian", "setpriv": "util-linux",
				"unshare": "util-linux", "nsenter": "util-linux", "ip": "iproute2", "dpkg": "dpkg",
				"script": "bsdutils", "timeout": "coreutils", "make": "make",
			}[name])
		}
	}
}

// runSplit runs a command and returns its stdout and stderr apart.
func runSplit(name string, args ...string) (stdout, stderr string, err error) {
	var o, e bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

func copyFile(src, dst string, mode os.FileMode) error {
	b, err := os.ReadFile(src)
	if err == nil {
		err = os.WriteFile(dst, b, mode)
	}
	return err
}
