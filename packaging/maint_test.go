package packaging_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestPostinstKeepsGRPCSocket runs the shipped postinst against stand-ins
// for systemctl and debhelper's tools that record their arguments, in a
// private mount namespace whose /run looks like a running systemd's (the
// host's /run is untouched). An upgrade restarts the frontend but never
// quilt-runtime.socket, which keeps the gRPC port open meanwhile; an
// upgrade from a release without the socket unit stops the frontend that
// held the port before it starts the socket; a first install starts all.
func TestPostinstKeepsGRPCSocket(t *testing.T) {
	requireRoot(t)
	requireTool(t, "unshare")
	for _, tc := range []struct {
		name, version, socketActive string
		want, never                 []string
	}{
		{"first install", "", "no",
			[]string{"deb-systemd-invoke start quilt-route-helper.socket quilt-runtime.socket quilt-runtime.service"},
			[]string{"deb-systemd-invoke restart"}},
		{"upgrade", "0.1.0", "yes",
			[]string{"deb-systemd-invoke restart quilt-route-helper.socket", "deb-systemd-invoke restart quilt-runtime.service"},
			[]string{"quilt-runtime.socket", "deb-systemd-invoke stop"}},
		{"upgrade from a release without the socket", "0.1.0", "no",
			[]string{"deb-systemd-invoke restart quilt-route-helper.socket", "deb-systemd-invoke stop quilt-runtime.service",
				"deb-systemd-invoke start quilt-runtime.socket", "deb-systemd-invoke restart quilt-runtime.service"},
			[]string{"restart quilt-runtime.socket"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			log := filepath.Join(dir, "calls")
			stub := `#!/bin/sh
echo "$(basename "$0") $*" >>` + log + `
case "$(basename "$0") $*" in
"systemctl --quiet is-active quilt-runtime.socket") [ "` + tc.socketActive + `" = yes ] ;;
"deb-systemd-helper --quiet was-enabled "*) exit 0 ;;
esac
`
			for _, name := range []string{"systemctl", "deb-systemd-helper", "deb-systemd-invoke", "systemd-sysusers", "systemd-tmpfiles"} {
				if err := os.WriteFile(filepath.Join(dir, name), []byte(stub), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			postinst, _ := filepath.Abs("deb/postinst")
			script := `mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/system && exec sh "$0" configure "$1"`
			cmd := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", script, postinst, tc.version)
			cmd.Env = []string{"PATH=" + dir + ":/usr/sbin:/usr/bin:/sbin:/bin"}
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("postinst: %v\n%s", err, out)
			}
			b, _ := os.ReadFile(log)
			calls := strings.Split(strings.TrimSpace(string(b)), "\n")
			t.Logf("calls:\n  %s", strings.Join(calls, "\n  "))
			at := -1
			for _, w := range tc.want {
				i := slices.Index(calls, w)
				if i <= at {
					t.Errorf("want %q after the calls before it, in order", w)
				}
				at = max(at, i)
			}
			for _, c := range calls {
				for _, n := range tc.never {
					if strings.HasPrefix(c, "deb-systemd-invoke") && strings.Contains(c, n) && !slices.Contains(tc.want, c) {
						t.Errorf("unexpected %q", c)
					}
				}
			}
			for _, unit := range []string{"quilt-route-helper.socket", "quilt-runtime.socket", "quilt-runtime.service"} {
				if !slices.Contains(calls, "deb-systemd-helper enable "+unit) {
					t.Errorf("postinst does not enable %s", unit)
				}
			}
		})
	}
}
