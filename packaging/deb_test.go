package packaging_test

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/quiltmesh/quilt-runtime/internal/testutil"
)

var (
	debOnce sync.Once
	debDir  string // made by buildDeb, removed by TestMain
	debPath string
	debErr  error
)

// buildDeb runs `make package` into a temporary directory, once per test
// run, and returns the .deb.
func buildDeb(t *testing.T) string {
	t.Helper()
	requireTool(t, "make")
	debOnce.Do(func() {
		dist, err := os.MkdirTemp("", "quilt-packaging-dist-")
		if err != nil {
			debErr = err
			return
		}
		debDir = dist
		start := time.Now()
		cmd := exec.Command("make", "package", "DIST="+dist)
		cmd.Dir = repo
		if out, err := cmd.CombinedOutput(); err != nil {
			debErr = fmt.Errorf("make package: %v\n%s", err, out)
			return
		}
		debs, _ := filepath.Glob(filepath.Join(dist, "quilt-runtime_*_amd64.deb"))
		if len(debs) != 1 {
			debErr = fmt.Errorf("make package made %q, want one quilt-runtime_*_amd64.deb", debs)
			return
		}
		debPath = debs[0]
		t.Logf("built %s in %v", filepath.Base(debPath), time.Since(start).Round(time.Second))
	})
	if debErr != nil {
		t.Fatal(debErr)
	}
	return debPath
}

// lintianAllowed are the lintian tags the package may still carry, each
// explained in README.md ("## Install").
var lintianAllowed = []string{"initial-upload-closes-no-bugs", "package-supports-alternative-init-but-no-init.d-script"}

// TestDebLintian: lintian finds no error, and no other tag than the
// documented ones.
func TestDebLintian(t *testing.T) {
	requireTool(t, "lintian")
	deb := buildDeb(t)
	stdout, stderr, err := runSplit("lintian", "--display-info", "--pedantic", "--fail-on", "error", deb)
	t.Logf("lintian:\n%s", stdout)
	if err != nil {
		t.Fatalf("lintian: %v\n%s%s", err, stdout, stderr)
	}
	for _, line := range strings.Split(stdout, "\n") {
		w := strings.Fields(line)
		if len(w) < 3 || len(w[0]) != 2 || w[0][1] != ':' || w[0] == "N:" {
			continue
		}
		if w[0] == "E:" || !slices.Contains(lintianAllowed, w[2]) {
			t.Errorf("lintian: %s", line)
		}
	}
}

// chroot is a private overlay of the host's / (writes go to a temporary
// upper directory), with its own /run and /tmp, held by a process in its
// own mount namespace. The host's files and dpkg database are untouched.
type chroot struct {
	pid  int    // holds the mount namespace; chrooted into the overlay
	root string // /proc/PID/root: the overlay, seen from the host
}

func newChroot(t *testing.T) *chroot {
	t.Helper()
	requireTool(t, "unshare", "nsenter", "chroot")
	dir, err := os.MkdirTemp("", "quilt-packaging-root-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	script := `set -e
d=$1
mkdir "$d/upper" "$d/work" "$d/merged"
mount -t overlay overlay -o "lowerdir=/,upperdir=$d/upper,workdir=$d/work" "$d/merged"
mount -t proc proc "$d/merged/proc"
mount --rbind /dev "$d/merged/dev"
mount -t tmpfs -o mode=755 tmpfs "$d/merged/run"
mount -t tmpfs -o mode=1777 tmpfs "$d/merged/tmp"
echo ready
exec chroot "$d/merged" sleep 3600`
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", dir)
	p := testutil.StartTest(t, cmd)
	c := &chroot{pid: p.Pid(), root: fmt.Sprintf("/proc/%d/root", p.Pid())}
	ready := func() bool { link, _ := os.Readlink(c.root); return strings.HasSuffix(link, "/merged") }
	if err := testutil.Until(context.Background(), 10*time.Second, p, ready); err != nil {
		t.Fatalf("overlay root: %v", err)
	}
	return c
}

// exec runs a command inside the chroot (its mount namespace and root),
// optionally in network namespace netns too.
func (c *chroot) exec(netns string, name string, args ...string) (string, error) {
	argv := []string{"--target", strconv.Itoa(c.pid), "--mount", "--root", "--wd"}
	if netns != "" {
		argv = append(argv, "--net=/run/netns/"+netns)
	}
	cmd := exec.Command("nsenter", append(append(argv, "--", name), args...)...)
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C", "DEBIAN_FRONTEND=noninteractive"}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (c *chroot) must(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := c.exec("", name, args...)
	if err != nil {
		t.Fatalf("in the chroot: %s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// lookupID reads a name's id from the chroot's /etc/passwd or /etc/group,
// with the group's members.
func (c *chroot) lookupID(t *testing.T, db, name string) (id int, members []string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(c.root, "etc", db))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Split(line, ":")
		if len(f) >= 4 && f[0] == name {
			id, _ = strconv.Atoi(f[2])
			if db == "group" && f[3] != "" {
				members = strings.Split(f[3], ",")
			}
			return id, members
		}
	}
	return -1, nil
}

// fileState is what the test checks of an installed path.
type fileState struct {
	mode     uint32 // permission bits and type
	uid, gid int
}

func (c *chroot) stat(path string) (fileState, error) {
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(c.root, path), &st); err != nil {
		return fileState{}, err
	}
	return fileState{st.Mode, int(st.Uid), int(st.Gid)}, nil
}

// TestDebInstall installs the .deb with dpkg in a private overlay of this
// host and checks what it put there; then removes and purges it.
func TestDebInstall(t *testing.T) {
	requireRoot(t)
	requireTool(t, "ip", "dpkg")
	deb := buildDeb(t)
	c := newChroot(t)
	if err := copyFile(deb, filepath.Join(c.root, "tmp/quilt-runtime.deb"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := c.exec("", "dpkg-query", "-W", "quilt-runtime"); err == nil {
		t.Fatalf("quilt-runtime is already installed on this host; the test needs a host without it: %s", out)
	}
	t.Log(c.must(t, "dpkg", "-i", "/tmp/quilt-runtime.deb"))

	// Files, owners, modes; shipped files are the tree's own.
	const reg, dir, link = unix.S_IFREG, unix.S_IFDIR, unix.S_IFLNK
	files := map[string]struct {
		src  string
		mode uint32
	}{
		"/usr/sbin/quilt-route-helper":                            {"", reg | 0o755},
		"/usr/sbin/quilt-runtime":                                 {"", reg | 0o755},
		"/usr/bin/quiltctl":                                       {"", reg | 0o755},
		"/usr/lib/cni/quilt-ipam":                                 {"", reg | 0o755},
		"/usr/share/man/man8/quilt-runtime.8.gz":                  {"", reg | 0o644},
		"/usr/share/man/man8/quilt-route-helper.8.gz":             {"", reg | 0o644},
		"/usr/share/man/man8/quilt-ipam.8.gz":                     {"", reg | 0o644},
		"/usr/share/man/man1/quiltctl.1.gz":                       {"", reg | 0o644},
		"/usr/share/doc/quilt-runtime/examples/10-quilt.conflist": {"cni/10-quilt.conflist", reg | 0o644},
		"/lib/systemd/system/quilt-runtime.service":               {"systemd/quilt-runtime.service", reg | 0o644},
		"/lib/systemd/system/quilt-route-helper.service":          {"systemd/quilt-route-helper.service", reg | 0o644},
		"/lib/systemd/system/quilt-route-helper.socket":           {"systemd/quilt-route-helper.socket", reg | 0o644},
		"/lib/systemd/system/quilt-runtime.socket":                {"systemd/quilt-runtime.socket", reg | 0o644},
		"/usr/lib/sysusers.d/quilt-runtime.conf":                  {"sysusers.d/quilt-runtime.conf", reg | 0o644},
		"/usr/lib/tmpfiles.d/quilt-runtime.conf":                  {"tmpfiles.d/quilt-runtime.conf", reg | 0o644},
		"/etc/default/quilt-runtime":                              {"default/quilt-runtime", reg | 0o644},
		"/etc/iproute2/rt_protos.d/quilt.conf":                    {"rt_protos.d/quilt.conf", reg | 0o644},
		"/usr/share/doc/quilt-runtime/README.md":                  {"../README.md", reg | 0o644},
		"/usr/share/doc/quilt-runtime/SECURITY.md":                {"../SECURITY.md", reg | 0o644},
		"/usr/share/doc/quilt-runtime/copyright":                  {"deb/copyright", reg | 0o644},
		"/usr/share/doc/quilt-runtime/changelog.Debian.gz":        {"", reg | 0o644},
		"/usr/share/lintian/overrides/quilt-runtime":              {"deb/lintian-overrides", reg | 0o644},
	}
	// One line a file: its path, type and mode, owner.
	var wantFiles, gotFiles []string
	for _, path := range slices.Sorted(maps.Keys(files)) {
		wantFiles = append(wantFiles, fmt.Sprintf("%s %o 0:0", path, files[path].mode))
		if st, err := c.stat(path); err != nil {
			gotFiles = append(gotFiles, fmt.Sprintf("%s: %v", path, err))
		} else {
			gotFiles = append(gotFiles, fmt.Sprintf("%s %o %d:%d", path, st.mode, st.uid, st.gid))
		}
	}
	if diff := cmp.Diff(wantFiles, gotFiles); diff != "" {
		t.Errorf("installed files (-want +got):\n%s", diff)
	}
	for path, want := range files {
		if want.src != "" {
			got, _ := os.ReadFile(filepath.Join(c.root, path))
			src, _ := os.ReadFile(want.src)
			if !bytes.Equal(got, src) {
				t.Errorf("%s differs from packaging/%s", path, want.src)
			}
		}
	}
	conffiles := c.must(t, "dpkg-query", "-W", "-f=${Conffiles}", "quilt-runtime")
	for _, cf := range []string{"/etc/default/quilt-runtime", "/etc/iproute2/rt_protos.d/quilt.conf"} {
		if !strings.Contains(conffiles, cf+" ") {
			t.Errorf("%s is not a conffile: %q", cf, conffiles)
		}
	}

	// sysusers.d applied: both users, their groups, the socket group.
	feUID, _ := c.lookupID(t, "passwd", "quilt-runtime")
	helperUID, _ := c.lookupID(t, "passwd", "quilt-route-helper")
	feGID, _ := c.lookupID(t, "group", "quilt-runtime")
	routeGID, members := c.lookupID(t, "group", "quilt-route")
	if feUID <= 0 || helperUID <= 0 || feUID == helperUID || feGID <= 0 || routeGID <= 0 {
		t.Fatalf("users: quilt-runtime %d quilt-route-helper %d, groups quilt-runtime %d quilt-route %d", feUID, helperUID, feGID, routeGID)
	}
	if feUID >= 1000 || helperUID >= 1000 {
		t.Errorf("uids %d, %d: want system users (below 1000)", feUID, helperUID)
	}
	if !slices.Equal(members, []string{"quilt-runtime"}) {
		t.Errorf("members of quilt-route: %q, want only quilt-runtime", members)
	}
	cniGID, cniMembers := c.lookupID(t, "group", "quilt-cni")
	if cniGID <= 0 || len(cniMembers) != 0 {
		t.Errorf("group quilt-cni: gid %d, members %q; want a system group with no member (root needs none)", cniGID, cniMembers)
	}
	if out := c.must(t, "getent", "passwd", "quilt-route-helper"); !strings.HasSuffix(strings.TrimSpace(out), ":/usr/sbin/nologin") {
		t.Errorf("quilt-route-helper: %q, want shell /usr/sbin/nologin", out)
	}

	// tmpfiles.d applied; the units enabled as deb-systemd-helper does.
	for path, want := range map[string]fileState{
		"/var/lib/quilt-runtime": {dir | 0o700, feUID, feGID},
		"/run/quilt":             {dir | 0o755, 0, 0},
		"/run/quilt-runtime":     {dir | unix.S_ISGID | 0o750, feUID, cniGID},
		"/etc/systemd/system/sockets.target.wants/quilt-route-helper.socket": {link | 0o777, 0, 0},
		"/etc/systemd/system/sockets.target.wants/quilt-runtime.socket":      {link | 0o777, 0, 0},
		"/etc/systemd/system/multi-user.target.wants/quilt-runtime.service":  {link | 0o777, 0, 0},
	} {
		if st, err := c.stat(path); err != nil || st != want {
			t.Errorf("%s: %+v %v; want %+v", path, st, err, want)
		}
	}

	// The programs run from their installed paths.
	if out, err := c.exec("", "quilt-runtime", "--help"); err != nil || !strings.Contains(out, "QUILT_HELPER_SOCKET") {
		t.Errorf("quilt-runtime --help: %v\n%s", err, out)
	}
	if out, err := c.exec("", "quilt-route-helper", "--help"); err != nil || !strings.Contains(out, "-allow-uid") {
		t.Errorf("quilt-route-helper --help: %v\n%s", err, out)
	}
	if out, err := c.exec("", "quiltctl", "--help"); err != nil || !strings.Contains(out, "configure-subnet") {
		t.Errorf("quiltctl --help: %v\n%s", err, out)
	}
	if out, err := c.exec("", "env", "CNI_COMMAND=VERSION", "/usr/lib/cni/quilt-ipam"); err != nil || !strings.Contains(out, `"1.1.0"`) {
		t.Errorf("CNI_COMMAND=VERSION quilt-ipam: %v\n%s", err, out)
	}

	// systemd accepts the units as installed, with their scores.
	if out, err := c.exec("", "systemd-analyze", append([]string{"verify", "--man=no"}, allUnits...)...); err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("systemd-analyze verify in the installed system: %v\n%s", err, out)
	}
	for _, unit := range []string{helperUnit, frontendUnit} {
		out, _ := c.exec("", "systemd-analyze", "security", "--offline=true", "--no-pager", unit)
		m := exposureRE.FindStringSubmatch(out)
		if m == nil {
			t.Errorf("no score for the installed %s:\n%s", unit, out)
			continue
		}
		if score, _ := strconv.Atoi(m[2] + m[3]); score > maxExposure {
			t.Errorf("installed %s: exposure %s.%s", unit, m[2], m[3])
		}
		t.Logf("installed %s: exposure %s.%s", unit, m[2], m[3])
	}

	// iproute2 names our route protocol: in a throwaway network namespace,
	// a route of protocol 81 shows as "proto quilt".
	ns := newNetns(t)
	testutil.Run(t, "ip", "-n", ns, "route", "add", "10.42.9.0/24", "dev", "vxlan100", "proto", "81")
	if out, err := c.exec(ns, "ip", "-4", "route", "show", "proto", "quilt"); err != nil || !strings.Contains(out, "10.42.9.0/24 dev vxlan100") {
		t.Errorf("ip route show proto quilt: %v %q", err, out)
	}
	if out, _ := c.exec(ns, "ip", "-4", "route", "show"); !strings.Contains(out, "proto quilt") {
		t.Errorf("ip route show does not name protocol 81 quilt: %q", out)
	}

	// Remove: programs and units go; configuration, state and users stay.
	state := filepath.Join(c.root, "var/lib/quilt-runtime/state.db")
	if err := os.WriteFile(state, []byte("state"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Reinstall over itself: the upgrade path of the maintainer scripts
	// keeps users, state and enablement.
	t.Log(c.must(t, "dpkg", "-i", "/tmp/quilt-runtime.deb"))
	if id, _ := c.lookupID(t, "passwd", "quilt-runtime"); id != feUID {
		t.Errorf("uid of quilt-runtime after reinstall: %d, want %d", id, feUID)
	}
	for _, kept := range []string{"/var/lib/quilt-runtime/state.db", "/etc/systemd/system/multi-user.target.wants/quilt-runtime.service", "/etc/systemd/system/sockets.target.wants/quilt-runtime.socket"} {
		if _, err := c.stat(kept); err != nil {
			t.Errorf("%s gone after reinstall: %v", kept, err)
		}
	}

	t.Log(c.must(t, "dpkg", "-r", "quilt-runtime"))
	for _, gone := range []string{"/usr/sbin/quilt-route-helper", "/usr/sbin/quilt-runtime", "/usr/bin/quiltctl", "/usr/lib/cni/quilt-ipam", "/lib/systemd/system/quilt-runtime.service", "/lib/systemd/system/quilt-runtime.socket"} {
		if _, err := c.stat(gone); err == nil {
			t.Errorf("%s still there after dpkg -r", gone)
		}
	}
	for _, kept := range []string{"/etc/default/quilt-runtime", "/var/lib/quilt-runtime/state.db"} {
		if _, err := c.stat(kept); err != nil {
			t.Errorf("%s gone after dpkg -r (only purge removes it): %v", kept, err)
		}
	}
	if out := c.must(t, "dpkg-query", "-W", "-f=${db:Status-Abbrev}", "quilt-runtime"); strings.TrimSpace(out) != "rc" {
		t.Errorf("status after remove: %q, want rc", out)
	}

	// Purge: configuration, state, enablement links gone; users stay.
	t.Log(c.must(t, "dpkg", "-P", "quilt-runtime"))
	for _, gone := range []string{"/etc/default/quilt-runtime", "/etc/iproute2/rt_protos.d/quilt.conf", "/var/lib/quilt-runtime",
		"/etc/systemd/system/sockets.target.wants/quilt-route-helper.socket", "/etc/systemd/system/sockets.target.wants/quilt-runtime.socket",
		"/etc/systemd/system/multi-user.target.wants/quilt-runtime.service"} {
		if _, err := c.stat(gone); err == nil {
			t.Errorf("%s still there after dpkg -P", gone)
		}
	}
	if out, err := c.exec("", "dpkg-query", "-W", "quilt-runtime"); err == nil {
		t.Errorf("dpkg still knows the package after purge: %s", out)
	}
	if out, err := c.exec(ns, "ip", "-4", "route", "show", "proto", "quilt"); err == nil {
		t.Errorf("ip still knows protocol name quilt after purge: %s", out)
	}
	if id, _ := c.lookupID(t, "passwd", "quilt-runtime"); id != feUID {
		t.Errorf("user quilt-runtime after purge: %d, want it kept (%d) as Debian policy asks", id, feUID)
	}
}

// TestManPages: the .deb holds a man page for each program, made from
// the program's own flags, and man-db renders each without a warning.
func TestManPages(t *testing.T) {
	requireTool(t, "man", "dpkg-deb")
	deb := buildDeb(t)
	root := t.TempDir()
	testutil.Run(t, "dpkg-deb", "-x", deb, root)
	for page, want := range map[string][]string{
		"usr/share/man/man8/quilt-runtime.8.gz": {"--grpc-addr", "--grpc-socket-group", "--metrics-addr", "--helper-socket"},
		"usr/share/man/man8/quilt-route-helper.8.gz": {"--socket", "--allow-uid", "--cluster-cidr", "--node-prefix-len", "--allowed-interface",
			"/run/quilt/route-helper.sock"},
		"usr/share/man/man1/quiltctl.1.gz":   {"configure-subnet", "allocations", "--interface", "--addr"},
		"usr/share/man/man8/quilt-ipam.8.gz": {"CNI_COMMAND", "gcGracePeriod", "socket", "/run/quilt-runtime/runtime.sock", "100"},
	} {
		cmd := exec.Command("man", "-l", "--warnings", "-E", "UTF-8", filepath.Join(root, page))
		cmd.Env = append(os.Environ(), "LC_ALL=C.UTF-8", "MANWIDTH=100", "MAN_KEEP_FORMATTING=", "MANPAGER=cat", "PAGER=cat")
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil || stderr.Len() > 0 {
			t.Errorf("man -l %s: %v\n%s", page, err, stderr.String())
			continue
		}
		text := strings.ReplaceAll(stdout.String(), "‐\n", "") // words hyphenated across lines
		for _, w := range append(want, "NAME", "SYNOPSIS") {
			if !strings.Contains(text, w) {
				t.Errorf("%s does not say %q:\n%s", page, w, text)
			}
		}
	}
}
