package packaging_test

import (
	"encoding/json"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/quiltmesh/quilt-runtime/frontend"
	"github.com/quiltmesh/quilt-runtime/frontend/cniipam"
	"github.com/quiltmesh/quilt-runtime/internal/testutil"
)

// maxExposure is the highest `systemd-analyze security` exposure a service
// unit may have, in tenths (1.1).
const maxExposure = 11

// unitRoot makes a root directory holding the shipped units, the default
// configuration and the real binaries at the paths the units name, plus
// systemd's own targets from the host, for systemd-analyze --root.
func unitRoot(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	unitDir := filepath.Join(root, "usr/lib/systemd/system")
	for _, d := range []string{unitDir, filepath.Join(root, "etc/default")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range allUnits {
		if err := copyFile(filepath.Join("systemd", name), filepath.Join(unitDir, name), 0o644); err != nil {
			t.Fatal(err)
		}
		u := loadUnit(t, name)
		for _, line := range u.values("Service", "ExecStart") {
			argv, err := execArgv(line, nil)
			if err != nil {
				t.Fatal(err)
			}
			dst := filepath.Join(root, argv[0])
			os.MkdirAll(filepath.Dir(dst), 0o755)
			if err := copyFile(filepath.Join(binDir, filepath.Base(argv[0])), dst, 0o755); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
		}
	}
	if err := copyFile("default/quilt-runtime", filepath.Join(root, "etc/default/quilt-runtime"), 0o644); err != nil {
		t.Fatal(err)
	}
	targets, _ := filepath.Glob("/lib/systemd/system/*.target")
	if len(targets) == 0 {
		t.Fatal("no systemd targets in /lib/systemd/system: is systemd installed?")
	}
	for _, f := range targets {
		if err := copyFile(f, filepath.Join(unitDir, filepath.Base(f)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// verify runs `systemd-analyze verify` on units in root and returns what
// it printed: systemd reports unknown keys and bad values there while
// still exiting 0.
func verify(t *testing.T, root string, units ...string) (string, error) {
	t.Helper()
	stdout, stderr, err := runSplit("systemd-analyze", append([]string{"verify", "--man=no", "--root=" + root}, units...)...)
	return strings.TrimSpace(stdout + stderr), err
}

// TestUnitsVerify: systemd's own checker accepts the shipped units without
// a single warning.
func TestUnitsVerify(t *testing.T) {
	requireTool(t, "systemd-analyze")
	root := unitRoot(t)
	if out, err := verify(t, root, allUnits...); err != nil || out != "" {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	// The check itself can fail: a unit with an unknown key is reported.
	broken := filepath.Join(root, "usr/lib/systemd/system", frontendUnit)
	b, _ := os.ReadFile(broken)
	os.WriteFile(broken, append(b, "\n[Service]\nNoSuchSetting=1\n"...), 0o644)
	if out, _ := verify(t, root, frontendUnit); !strings.Contains(out, "NoSuchSetting") {
		t.Fatalf("verify did not report an unknown key; it printed %q", out)
	}
}

var exposureRE = regexp.MustCompile(`Overall exposure level for (\S+): (\d+)\.(\d)\b`)

// securityScore runs `systemd-analyze security --offline=true` on a unit in
// root and returns its overall exposure in tenths, and the full report.
func securityScore(t *testing.T, root, unit string) (int, string) {
	t.Helper()
	out, err := exec.Command("systemd-analyze", "security", "--offline=true", "--no-pager", "--root="+root, unit).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze security %s: %v\n%s", unit, err, out)
	}
	m := exposureRE.FindStringSubmatch(string(out))
	if m == nil || m[1] != unit+":" && m[1] != unit {
		t.Fatalf("no overall exposure for %s in:\n%s", unit, out)
	}
	whole, _ := strconv.Atoi(m[2])
	tenth, _ := strconv.Atoi(m[3])
	return whole*10 + tenth, string(out)
}

// TestUnitsSecurityScore: each service scores at most 1.1 with systemd's
// own scorer (Debian 12's systemd-networkd.service scores 2.8).
func TestUnitsSecurityScore(t *testing.T) {
	requireTool(t, "systemd-analyze")
	root := unitRoot(t)
	for _, unit := range []string{helperUnit, frontendUnit} {
		score, report := securityScore(t, root, unit)
		var open []string
		for _, line := range strings.Split(report, "\n") {
			if strings.HasPrefix(line, "✗") {
				open = append(open, strings.Join(strings.Fields(line), " "))
			}
		}
		t.Logf("%s: overall exposure %d.%d; settings the scorer counts against it:\n  %s", unit, score/10, score%10, strings.Join(open, "\n  "))
		if score > maxExposure {
			t.Errorf("%s: exposure %d.%d, want at most %d.%d:\n%s", unit, score/10, score%10, maxExposure/10, maxExposure%10, report)
		}
	}
	// The scorer rates the sandbox of a unit's own processes. A socket unit
	// runs none unless it has Exec*= commands, so ours must have none.
	for _, name := range []string{socketUnit, grpcUnit} {
		for _, kv := range loadUnit(t, name).sections["Socket"] {
			if strings.HasPrefix(kv[0], "Exec") {
				t.Errorf("%s runs %s=%s: give it the services' sandbox or drop it", name, kv[0], kv[1])
			}
		}
	}
}

// writablePathKeys are the settings that give a unit write access under
// ProtectSystem=strict.
var writablePathKeys = []string{"ReadWritePaths", "StateDirectory", "RuntimeDirectory", "CacheDirectory", "LogsDirectory", "ConfigurationDirectory", "TemporaryFileSystem", "BindPaths"}

// TestUnitsHardening checks the settings SECURITY.md names, one by one.
func TestUnitsHardening(t *testing.T) {
	h, f, s := loadUnit(t, helperUnit), loadUnit(t, frontendUnit), loadUnit(t, socketUnit)
	eq := func(u *unitFile, key string, want ...string) {
		t.Helper()
		if got := u.list("Service", key); !slices.Equal(got, want) {
			t.Errorf("%s: %s=%q, want %q", u.name, key, got, want)
		}
	}
	for _, u := range []*unitFile{h, f} {
		for key, want := range map[string]string{
			"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
			"PrivateDevices": "yes", "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes",
			"ProtectControlGroups": "yes", "RestrictNamespaces": "yes", "RestrictSUIDSGID": "yes",
			"MemoryDenyWriteExecute": "yes", "LockPersonality": "yes", "SystemCallArchitectures": "native",
			"IPAddressDeny": "any", "UMask": "0077",
		} {
			if got := u.value("Service", key); got != want {
				t.Errorf("%s: %s=%q, want %q", u.name, key, got, want)
			}
		}
		if u.value("Service", "User") == "" || u.value("Service", "User") == "root" || u.has("Service", "PermissionsStartOnly") {
			t.Errorf("%s: must run as its own non-root user", u.name)
		}
		if len(u.values("Service", "SystemCallFilter")) == 0 || strings.HasPrefix(u.values("Service", "SystemCallFilter")[0], "~") {
			t.Errorf("%s: want a SystemCallFilter= allow list", u.name)
		}
	}

	// Helper: CAP_NET_ADMIN alone, host network, no writable path at all.
	eq(h, "CapabilityBoundingSet", "CAP_NET_ADMIN")
	eq(h, "AmbientCapabilities", "CAP_NET_ADMIN")
	eq(h, "RestrictAddressFamilies", "AF_NETLINK") // the socket comes from systemd
	if h.value("Service", "User") != "quilt-route-helper" {
		t.Errorf("%s: User=%q, want quilt-route-helper", h.name, h.value("Service", "User"))
	}
	for _, key := range append(writablePathKeys, "PrivateNetwork", "PrivateUsers", "NetworkNamespacePath") {
		if h.has("Service", key) {
			t.Errorf("%s: %s= is set: the helper writes nowhere and must keep the host's network namespace", h.name, key)
		}
	}
	if slices.Contains(h.list("Service", "SystemCallFilter"), "capset") {
		t.Errorf("%s: the filter must not allow capset: the helper never changes its capabilities", h.name)
	}
	if h.value("Unit", "Requires") != socketUnit {
		t.Errorf("%s: Requires=%q, want %s", h.name, h.value("Unit", "Requires"), socketUnit)
	}

	// Frontend: no capabilities, loopback only, writes its state dir alone.
	if !f.has("Service", "CapabilityBoundingSet") || len(f.list("Service", "CapabilityBoundingSet")) != 0 {
		t.Errorf("%s: want CapabilityBoundingSet= (empty: no capabilities)", f.name)
	}
	eq(f, "AmbientCapabilities")
	eq(f, "IPAddressAllow", "localhost")
	eq(f, "StateDirectory", "quilt-runtime")
	eq(f, "StateDirectoryMode", "0700")
	eq(f, "ReadWritePaths", "/run/quilt-runtime") // its Unix socket's directory
	for _, key := range writablePathKeys {
		if key != "StateDirectory" && key != "ReadWritePaths" && f.has("Service", key) {
			t.Errorf("%s: %s= is set: the state directory and the socket's directory must be the only writable paths", f.name, key)
		}
	}

	// Socket: systemd makes it; only root and the socket group may connect.
	for key, want := range map[string]string{
		"ListenSequentialPacket": "/run/quilt/route-helper.sock", "SocketUser": "root",
		"SocketGroup": "quilt-route", "SocketMode": "0660",
	} {
		if got := s.value("Socket", key); got != want {
			t.Errorf("%s: %s=%q, want %q", s.name, key, got, want)
		}
	}
	eq(f, "SupplementaryGroups", s.value("Socket", "SocketGroup"))

	// The frontend's readiness and watchdog, and its gRPC socket: held by
	// quilt-runtime.socket, named as the frontend looks for it, its own
	// traffic loopback only (the service's IP filter does not cover a
	// passed socket), one listening socket for all connections.
	g := loadUnit(t, grpcUnit)
	eq(f, "Type", "notify")
	eq(f, "NotifyAccess", "main")
	if !slices.Contains(f.list("Unit", "Requires"), grpcUnit) || !slices.Contains(f.list("Unit", "After"), grpcUnit) {
		t.Errorf("%s: want Requires= and After= %s", f.name, grpcUnit)
	}
	if !slices.Contains(f.list("Install", "Also"), grpcUnit) {
		t.Errorf("%s: want Also=%s, so enabling the service enables its socket", f.name, grpcUnit)
	}
	watchdog, err := time.ParseDuration(f.value("Service", "WatchdogSec"))
	if err != nil {
		t.Errorf("%s: WatchdogSec=%q: %v", f.name, f.value("Service", "WatchdogSec"), err)
	}
	// The resync loop feeds the watchdog every half period and a resync
	// waits on the helper at most --helper-timeout per message: keep two
	// such waits inside half a period.
	if helperTimeout := 2 * time.Second; watchdog < 4*helperTimeout {
		t.Errorf("%s: WatchdogSec=%v leaves a resync blocked on the helper for --helper-timeout %v no room: want at least %v", f.name, watchdog, helperTimeout, 4*helperTimeout)
	}
	for key, want := range map[string]string{
		"FileDescriptorName": frontend.GRPCFDName, "IPAddressDeny": "any", "IPAddressAllow": "localhost", "Accept": "",
	} {
		if got := g.value("Socket", key); got != want {
			t.Errorf("%s: %s=%q, want %q", g.name, key, got, want)
		}
	}
	if g.value("Install", "WantedBy") != "sockets.target" {
		t.Errorf("%s: want WantedBy=sockets.target", g.name)
	}
}

// TestPackagingConsistency: the units, the default configuration,
// sysusers.d and tmpfiles.d name the same users, paths and addresses.
func TestPackagingConsistency(t *testing.T) {
	h, f, s := loadUnit(t, helperUnit), loadUnit(t, frontendUnit), loadUnit(t, socketUnit)
	env, err := parseEnvFile("default/quilt-runtime")
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []*unitFile{h, f} {
		if got := u.value("Service", "EnvironmentFile"); got != "-/etc/default/quilt-runtime" {
			t.Errorf("%s: EnvironmentFile=%q, want -/etc/default/quilt-runtime", u.name, got)
		}
	}
	if got, want := env["QUILT_HELPER_SOCKET"], s.value("Socket", "ListenSequentialPacket"); got != want {
		t.Errorf("QUILT_HELPER_SOCKET=%q but the socket unit listens on %q", got, want)
	}
	if got, want := env["QUILT_STATE_DIR"], "/var/lib/"+f.value("Service", "StateDirectory"); got != want {
		t.Errorf("QUILT_STATE_DIR=%q but the frontend may write only %q", got, want)
	}
	var unixSocket string
	var tcpAddrs []string
	for _, addr := range strings.Split(env["QUILT_GRPC_ADDR"], ",") {
		if path, ok := strings.CutPrefix(addr, "unix://"); ok {
			unixSocket = path
			continue
		}
		tcpAddrs = append(tcpAddrs, addr)
		ap, err := netip.ParseAddrPort(addr)
		if err != nil || !ap.Addr().IsLoopback() {
			t.Errorf("QUILT_GRPC_ADDR %q: want a loopback host:port, as IPAddressAllow=localhost allows no other", addr)
		}
	}
	// systemd holds every TCP address (the agent's); the frontend makes its
	// Unix socket itself, in its setgid directory.
	if got := loadUnit(t, grpcUnit).values("Socket", "ListenStream"); !slices.Equal(got, tcpAddrs) {
		t.Errorf("%s listens on %q but QUILT_GRPC_ADDR's TCP addresses are %q: the frontend refuses a passed socket no --grpc-addr names", grpcUnit, got, tcpAddrs)
	}
	// The Unix socket: where quilt-ipam looks by default and the example
	// conflist says, in the one directory the unit may write besides its
	// state, which tmpfiles.d makes setgid quilt-cni.
	if unixSocket != cniipam.DefaultSocket || filepath.Dir(unixSocket) != f.value("Service", "ReadWritePaths") {
		t.Errorf("QUILT_GRPC_ADDR's Unix socket %q: want quilt-ipam's default %s, in the unit's ReadWritePaths=%s", unixSocket, cniipam.DefaultSocket, f.value("Service", "ReadWritePaths"))
	}
	type ipam struct{ Type, Socket string }
	var example struct {
		Plugins []struct {
			IPAM ipam `json:"ipam"`
		} `json:"plugins"`
	}
	b, err := os.ReadFile("cni/10-quilt.conflist")
	if err == nil {
		err = json.Unmarshal(b, &example)
	}
	if err != nil {
		t.Fatalf("cni/10-quilt.conflist: %v", err)
	}
	var got []ipam
	for _, p := range example.Plugins {
		got = append(got, p.IPAM)
	}
	if diff := cmp.Diff([]ipam{{Type: "quilt-ipam", Socket: unixSocket}}, got); diff != "" {
		t.Errorf("cni/10-quilt.conflist: want one plugin, its IPAM quilt-ipam on %s (-want +got):\n%s", unixSocket, diff)
	}
	argv, err := execArgv(h.value("Service", "ExecStart"), env)
	if err != nil {
		t.Fatal(err)
	}
	if i := slices.Index(argv, "--allow-uid"); i < 0 || i+1 >= len(argv) || argv[i+1] != f.value("Service", "User") {
		t.Errorf("helper command %q must admit the frontend's user %q", argv, f.value("Service", "User"))
	}
	// The helper's policy flags in the configuration match the frontend's.
	for flag, key := range map[string]string{"--cluster-cidr": "QUILT_CLUSTER_CIDR", "--node-prefix-len": "QUILT_NODE_PREFIX_LEN"} {
		if i := slices.Index(argv, flag); i < 0 || argv[i+1] != env[key] {
			t.Errorf("helper %s and %s=%q differ (helper command %q)", flag, key, env[key], argv)
		}
	}
	var helperIfaces []string
	for i, a := range argv {
		if a == "--allowed-interface" && i+1 < len(argv) {
			helperIfaces = append(helperIfaces, argv[i+1])
		}
	}
	if got := strings.Join(helperIfaces, ","); got != env["QUILT_ALLOWED_INTERFACE"] {
		t.Errorf("helper --allowed-interface %q and QUILT_ALLOWED_INTERFACE=%q differ", got, env["QUILT_ALLOWED_INTERFACE"])
	}

	// One metrics address everywhere: the configuration's suggestion (a
	// commented line), the flag's help and every --metrics-addr in README.md.
	conf, _ := os.ReadFile("default/quilt-runtime")
	if m := regexp.MustCompile(`(?m)^#QUILT_METRICS_ADDR=(\S+)$`).FindSubmatch(conf); m == nil || string(m[1]) != frontend.SuggestedMetricsAddr {
		t.Errorf("default/quilt-runtime: want the line #QUILT_METRICS_ADDR=%s, found %q", frontend.SuggestedMetricsAddr, m)
	}
	readme, _ := os.ReadFile(filepath.Join(repo, "README.md"))
	for _, m := range regexp.MustCompile(`metrics-addr\b[^|\n]*?(\d+\.\d+\.\d+\.\d+:\d+)`).FindAllSubmatch(readme, -1) {
		if string(m[1]) != frontend.SuggestedMetricsAddr {
			t.Errorf("README.md names metrics address %s, want %s: %q", m[1], frontend.SuggestedMetricsAddr, m[0])
		}
	}

	sysusers, _ := os.ReadFile("sysusers.d/quilt-runtime.conf")
	tmpfiles, _ := os.ReadFile("tmpfiles.d/quilt-runtime.conf")
	has := func(file []byte, fields ...string) bool {
		for _, line := range strings.Split(string(file), "\n") {
			if w := strings.Fields(line); len(w) >= len(fields) && slices.Equal(w[:len(fields)], fields) {
				return true
			}
		}
		return false
	}
	for _, u := range []*unitFile{h, f} {
		if !has(sysusers, "u", u.value("Service", "User")) || u.value("Service", "Group") != u.value("Service", "User") {
			t.Errorf("%s: User=%s Group=%s: want a sysusers.d user of that name and its own group", u.name, u.value("Service", "User"), u.value("Service", "Group"))
		}
	}
	group := s.value("Socket", "SocketGroup")
	if !has(sysusers, "g", group) || !has(sysusers, "m", f.value("Service", "User"), group) {
		t.Errorf("sysusers.d must create group %s and make %s a member", group, f.value("Service", "User"))
	}
	if !has(tmpfiles, "d", filepath.Dir(s.value("Socket", "ListenSequentialPacket")), "0755", "root", "root") {
		t.Errorf("tmpfiles.d must create the socket's directory")
	}
	fu := f.value("Service", "User")
	if !has(tmpfiles, "d", filepath.Dir(unixSocket), "2750", fu, "quilt-cni") || !has(sysusers, "g", "quilt-cni") {
		t.Errorf("tmpfiles.d must create %s 2750 %s quilt-cni, and sysusers.d the group", filepath.Dir(unixSocket), fu)
	}
	if !has(tmpfiles, "d", env["QUILT_STATE_DIR"], "0700", fu, fu) {
		t.Errorf("tmpfiles.d must create %s 0700 %s %s", env["QUILT_STATE_DIR"], fu, fu)
	}
}

// TestCopyrightCoversModules: every Go module linked into the binaries has
// a stanza in the package's copyright file.
func TestCopyrightCoversModules(t *testing.T) {
	copyright, err := os.ReadFile("deb/copyright")
	if err != nil {
		t.Fatal(err)
	}
	out := testutil.Run(t, "go", "version", "-m", filepath.Join(binDir, "quilt-route-helper"), filepath.Join(binDir, "quilt-runtime"), filepath.Join(binDir, "quilt-ipam"))
	seen := 0
	for _, line := range strings.Split(out, "\n") {
		w := strings.Fields(line)
		if len(w) < 2 || w[0] != "dep" {
			continue
		}
		seen++
		if !regexp.MustCompile(`(?m)^(Files:| ).*(^|\s)` + regexp.QuoteMeta(w[1]) + `(\s|$)`).Match(copyright) {
			t.Errorf("module %s is linked in but packaging/deb/copyright has no Files: stanza naming it", w[1])
		}
	}
	if seen == 0 {
		t.Fatalf("no dependencies found in:\n%s", out)
	}
}
