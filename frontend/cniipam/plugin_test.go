package cniipam_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/quiltmesh/quilt-runtime/frontend"
	"github.com/quiltmesh/quilt-runtime/frontend/helperclient"
	"github.com/quiltmesh/quilt-runtime/frontend/internal/testkit"
	"github.com/quiltmesh/quilt-runtime/frontend/ipam"
	"github.com/quiltmesh/quilt-runtime/proto/quiltpb"
)

// plugin is the quilt-ipam binary, built once for the tests: they run it
// as a runtime does, through the reference library's invoke package.
var plugin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "quilt-ipam-test-")
	if err == nil {
		plugin = filepath.Join(dir, "quilt-ipam")
		cmd := exec.Command("go", "build", "-o", plugin, "../cmd/quilt-ipam")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, berr := cmd.CombinedOutput(); berr != nil {
			err = fmt.Errorf("build quilt-ipam: %v\n%s", berr, out)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// runtime is a quilt-runtime (frontend.Run, its real gRPC server and
// state file) serving on a Unix socket.
type runtime struct {
	socket string
	admin  quiltpb.QuiltAdminClient
	rt     quiltpb.QuiltRuntimeClient
}

// startRuntime serves until the test ends, with an in-process route
// helper that answers or, down, refuses every call; subnet, if set, is
// configured.
func startRuntime(t *testing.T, o ipam.Offsets, down bool, subnet string) *runtime {
	t.Helper()
	dir := t.TempDir()
	r := &runtime{socket: filepath.Join(dir, "runtime.sock")}
	h := testkit.New()
	if down {
		h.Fail(helperclient.ErrUnavailable)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- frontend.Run(ctx, frontend.Config{
			Addrs:          []string{"unix://" + r.socket},
			Policy:         testkit.Policy,
			StateDir:       filepath.Join(dir, "state"),
			Offsets:        o,
			ResyncInterval: time.Hour,
			HelperTimeout:  time.Second,
			Helper:         h,
			Log:            slog.New(slog.NewTextHandler(io.Discard, nil)),
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("frontend.Run: %v", err)
		}
	})
	conn, err := grpc.NewClient("unix://"+r.socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	r.admin, r.rt = quiltpb.NewQuiltAdminClient(conn), quiltpb.NewQuiltRuntimeClient(conn)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		st, err := r.admin.GetStatus(context.Background(), &quiltpb.GetStatusRequest{}, grpc.WaitForReady(true))
		if err == nil && (st.HelperAvailable || down) && (down || st.HelperError == "") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the runtime did not become ready: %v %v", st, err)
		}
	}
	if subnet != "" {
		if a, err := r.rt.ConfigureNodeSubnet(context.Background(), &quiltpb.ConfigureNodeSubnetRequest{Subnet: subnet}); err != nil || !a.Success {
			t.Fatal(a, err)
		}
	}
	return r
}

// conf is a network configuration for the plugin: the bridge plugin
// passes its own whole, with "ipam" holding ours.
func conf(version, ipamJSON string) []byte {
	return []byte(fmt.Sprintf(`{"cniVersion":%q,"name":"quilt","type":"bridge","ipam":%s}`, version, ipamJSON))
}

func ipamConf(socket string, extra ...string) string {
	return fmt.Sprintf(`{"type":"quilt-ipam","socket":%q%s}`, socket, strings.Join(extra, ""))
}

// env is a command's environment, as a runtime sets it.
type env struct {
	command, containerID, ifname string
}

// exec runs the plugin with exactly this environment and stdin, and
// returns stdout or the plugin's error (a *types.Error when it printed
// one, as the specification asks).
func (e env) exec(t *testing.T, stdin []byte) ([]byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	environ := []string{"CNI_COMMAND=" + e.command, "CNI_PATH=" + filepath.Dir(plugin), "CNI_NETNS=/run/netns/quilt-ipam-test-none"}
	if e.containerID != "" {
		environ = append(environ, "CNI_CONTAINERID="+e.containerID)
	}
	if e.ifname != "" {
		environ = append(environ, "CNI_IFNAME="+e.ifname)
	}
	return (&invoke.RawExec{Stderr: io.Discard}).ExecPlugin(ctx, plugin, stdin, environ)
}

// add runs ADD and returns the result.
func add(t *testing.T, id, ifname string, stdin []byte) *current.Result {
	t.Helper()
	out, err := env{"ADD", id, ifname}.exec(t, stdin)
	if err != nil {
		t.Fatalf("ADD %s %s: %v", id, ifname, err)
	}
	res, err := current.NewResult(out)
	if err != nil {
		t.Fatalf("ADD %s %s: %v\n%s", id, ifname, err, out)
	}
	r, err := current.GetResult(res)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// code returns the CNI error code of err, or 0 for none.
func code(err error) uint {
	var te *types.Error
	if errors.As(err, &te) {
		return te.Code
	}
	if err != nil {
		return 9999 // not a CNI error at all
	}
	return 0
}

// withPrev adds a prevResult to a configuration, as a runtime does for
// CHECK.
func withPrev(t *testing.T, stdin []byte, prev *current.Result) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(stdin, &m); err != nil {
		t.Fatal(err)
	}
	m["prevResult"] = prev
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestCommands: ADD, CHECK, DEL, GC, STATUS and VERSION of the real binary
// against a real quilt-runtime.
func TestCommands(t *testing.T) {
	r := startRuntime(t, ipam.DefaultOffsets, false, "10.42.1.0/24")
	cfg := conf("1.1.0", ipamConf(r.socket, `,"gcGracePeriod":"0s"`))

	eth0 := add(t, "c1", "eth0", cfg)
	if len(eth0.IPs) != 1 || eth0.IPs[0].Address.String() != "10.42.1.10/24" || eth0.IPs[0].Gateway.String() != "10.42.1.1" ||
		len(eth0.Routes) != 1 || eth0.Routes[0].Dst.String() != "10.42.0.0/16" || eth0.Routes[0].GW.String() != "10.42.1.1" ||
		eth0.CNIVersion != "1.1.0" {
		t.Fatalf("ADD c1 eth0: %+v", eth0)
	}
	if again := add(t, "c1", "eth0", cfg); again.IPs[0].Address.String() != "10.42.1.10/24" {
		t.Fatalf("a repeated ADD gave %v", again.IPs[0].Address)
	}
	eth1 := add(t, "c1", "eth1", cfg)
	if eth1.IPs[0].Address.String() != "10.42.1.11/24" {
		t.Fatalf("c1's second interface: %v", eth1.IPs[0].Address)
	}
	// An older runtime gets the result in its version.
	out, err := env{"ADD", "c2", "eth0"}.exec(t, conf("0.4.0", ipamConf(r.socket)))
	if err != nil || !strings.Contains(string(out), `"cniVersion": "0.4.0"`) || !strings.Contains(string(out), "10.42.1.12/24") {
		t.Fatalf("ADD as 0.4.0: %s %v", out, err)
	}

	if _, err := (env{"CHECK", "c1", "eth0"}).exec(t, withPrev(t, cfg, eth0)); err != nil {
		t.Fatalf("CHECK c1 eth0: %v", err)
	}
	if _, err := (env{"CHECK", "c1", "eth0"}).exec(t, withPrev(t, cfg, eth1)); code(err) != types.ErrInternal || !strings.Contains(err.Error(), "10.42.1.10") {
		t.Fatalf("CHECK with another address's prevResult: %v", err)
	}
	if _, err := (env{"CHECK", "c9", "eth0"}).exec(t, withPrev(t, cfg, eth0)); code(err) != types.ErrUnknownContainer {
		t.Fatalf("CHECK of a container without an address: %v", err)
	}

	for i := range 2 {
		if _, err := (env{"DEL", "c1", "eth0"}).exec(t, cfg); err != nil {
			t.Fatalf("DEL #%d: %v", i+1, err)
		}
	}
	if _, err := (env{"DEL", "never", "eth0"}).exec(t, cfg); err != nil {
		t.Fatalf("DEL of an unknown allocation: %v", err)
	}
	if _, err := (env{"CHECK", "c1", "eth0"}).exec(t, withPrev(t, cfg, eth0)); code(err) != types.ErrUnknownContainer {
		t.Fatalf("CHECK after DEL: %v", err)
	}

	// GC: the runtime still knows c1 eth1; c2 eth0 is stale. An allocation
	// made through QuiltAdmin without a network is never collected.
	if _, err := r.admin.AllocateIP(context.Background(), &quiltpb.AllocateIPRequest{ContainerId: "admin"}); err != nil {
		t.Fatal(err)
	}
	gc := []byte(strings.Replace(string(cfg), `"name":"quilt"`, `"name":"quilt","cni.dev/valid-attachments":[{"containerID":"c1","ifname":"eth1"}]`, 1))
	if _, err := (env{command: "GC"}).exec(t, gc); err != nil {
		t.Fatalf("GC: %v", err)
	}
	list, err := r.admin.ListAllocations(context.Background(), &quiltpb.ListAllocationsRequest{})
	if err != nil || len(list.Allocations) != 2 || list.Allocations[0].ContainerId != "c1" || list.Allocations[0].InterfaceName != "eth1" ||
		list.Allocations[1].ContainerId != "admin" {
		t.Fatalf("after GC: %v %v", list, err)
	}
	// With the default grace period, a fresh allocation survives a GC
	// that does not list it.
	add(t, "c3", "eth0", conf("1.1.0", ipamConf(r.socket)))
	if _, err := (env{command: "GC"}).exec(t, conf("1.1.0", ipamConf(r.socket))); err != nil {
		t.Fatalf("GC: %v", err)
	}
	if list, _ := r.admin.ListAllocations(context.Background(), &quiltpb.ListAllocationsRequest{ContainerId: "c3"}); len(list.Allocations) != 1 {
		t.Fatalf("GC released an allocation within its grace period: %v", list)
	}

	if _, err := (env{command: "STATUS"}).exec(t, cfg); err != nil {
		t.Fatalf("STATUS: %v", err)
	}
	out, err = env{command: "VERSION"}.exec(t, nil)
	if err != nil || !strings.Contains(string(out), `"1.1.0"`) || !strings.Contains(string(out), `"0.3.0"`) {
		t.Fatalf("VERSION: %s %v", out, err)
	}
}

// TestBadInput: the specification's error codes for bad input, and
// nothing allocated by any of them.
func TestBadInput(t *testing.T) {
	r := startRuntime(t, ipam.DefaultOffsets, false, "10.42.1.0/24")
	good := ipamConf(r.socket)
	for _, tc := range []struct {
		name  string
		env   env
		stdin []byte
		code  uint
		says  string
	}{
		{"unknown version", env{"ADD", "c1", "eth0"}, conf("9.9.9", good), types.ErrIncompatibleCNIVersion, "incompatible"},
		{"GC of version 1.0.0", env{command: "GC"}, conf("1.0.0", good), types.ErrIncompatibleCNIVersion, "GC"},
		{"no container ID", env{"ADD", "", "eth0"}, conf("1.1.0", good), types.ErrInvalidEnvironmentVariables, "CNI_CONTAINERID"},
		{"no interface", env{"ADD", "c1", ""}, conf("1.1.0", good), types.ErrInvalidEnvironmentVariables, "CNI_IFNAME"},
		{"no interface on DEL", env{"DEL", "c1", ""}, conf("1.1.0", good), types.ErrInvalidEnvironmentVariables, "CNI_IFNAME"},
		{"container ID too long", env{"ADD", strings.Repeat("c", 129), "eth0"}, conf("1.1.0", good), types.ErrInvalidEnvironmentVariables, "container_id"},
		{"interface not ASCII", env{"ADD", "c1", "é0"}, conf("1.1.0", good), types.ErrInvalidEnvironmentVariables, "interface_name"},
		{"not JSON", env{"ADD", "c1", "eth0"}, []byte(`{"cniVersion":"1.1.0","name":`), types.ErrDecodingFailure, ""},
		{"ipam not an object", env{"ADD", "c1", "eth0"}, conf("1.1.0", `"quilt-ipam"`), types.ErrDecodingFailure, "ipam"},
		{"no ipam", env{"ADD", "c1", "eth0"}, []byte(`{"cniVersion":"1.1.0","name":"quilt"}`), types.ErrInvalidNetworkConfig, "ipam"},
		{"unknown ipam key", env{"ADD", "c1", "eth0"}, conf("1.1.0", ipamConf(r.socket, `,"subnet":"10.0.0.0/8"`)), types.ErrUnsupportedField, `"subnet" = "10.0.0.0/8"`},
		{"timeout not a duration", env{"ADD", "c1", "eth0"}, conf("1.1.0", ipamConf(r.socket, `,"timeout":"soon"`)), types.ErrInvalidNetworkConfig, "timeout"},
		{"timeout zero", env{"ADD", "c1", "eth0"}, conf("1.1.0", ipamConf(r.socket, `,"timeout":"0s"`)), types.ErrInvalidNetworkConfig, "timeout"},
		{"grace negative", env{command: "GC"}, conf("1.1.0", ipamConf(r.socket, `,"gcGracePeriod":"-1s"`)), types.ErrInvalidNetworkConfig, "gcGracePeriod"},
		{"socket relative", env{"ADD", "c1", "eth0"}, conf("1.1.0", `{"type":"quilt-ipam","socket":"runtime.sock"}`), types.ErrInvalidNetworkConfig, "absolute"},
		{"socket not a string", env{"ADD", "c1", "eth0"}, conf("1.1.0", `{"type":"quilt-ipam","socket":7}`), types.ErrInvalidNetworkConfig, "socket"},
		{"bad network name", env{"ADD", "c1", "eth0"}, []byte(`{"cniVersion":"1.1.0","name":"a b","ipam":` + good + `}`), types.ErrInvalidNetworkConfig, "network"},
	} {
		_, err := tc.env.exec(t, tc.stdin)
		if code(err) != tc.code || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("%s: %v (code %d), want code %d saying %q", tc.name, err, code(err), tc.code, tc.says)
		}
	}
	if list, err := r.admin.ListAllocations(context.Background(), &quiltpb.ListAllocationsRequest{}); err != nil || len(list.Allocations) != 0 {
		t.Fatalf("bad input allocated: %v %v", list, err)
	}
}

// TestUnavailable: a quilt-runtime that is not running, or does not
// answer, is "try again later" (11) for every command and a STATUS error
// (50), within the configured deadline; never a hang.
func TestUnavailable(t *testing.T) {
	dir := t.TempDir()
	silent := filepath.Join(dir, "silent.sock")
	l, err := net.Listen("unix", silent) // accepts into its backlog, never answers
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for _, socket := range []string{filepath.Join(dir, "absent.sock"), silent} {
		cfg := conf("1.1.0", ipamConf(socket, `,"timeout":"300ms"`))
		for _, e := range []env{{"ADD", "c1", "eth0"}, {"DEL", "c1", "eth0"}, {"CHECK", "c1", "eth0"}, {command: "GC"}} {
			if _, err := e.exec(t, cfg); code(err) != types.ErrTryAgainLater || !strings.Contains(err.Error(), socket) {
				t.Errorf("%s on %s: %v", e.command, filepath.Base(socket), err)
			}
		}
		if _, err := (env{command: "STATUS"}).exec(t, cfg); code(err) != types.ErrPluginNotAvailable || !strings.Contains(err.Error(), socket) {
			t.Errorf("STATUS on %s: %v", filepath.Base(socket), err)
		}
	}
}

// TestNotReady: STATUS fails (50) while the route helper is down, before
// the node has a subnet, and when the range is exhausted, when ADD
// fails too: "try again later" (11) without a subnet, ours (100) when full.
func TestNotReady(t *testing.T) {
	down := startRuntime(t, ipam.DefaultOffsets, true, "10.42.1.0/24")
	if _, err := (env{command: "STATUS"}).exec(t, conf("1.1.0", ipamConf(down.socket))); code(err) != types.ErrPluginNotAvailable || !strings.Contains(err.Error(), "route helper") {
		t.Errorf("STATUS with the helper down: %v", err)
	}

	r := startRuntime(t, ipam.Offsets{Gateway: 1, First: 10, Last: 11}, false, "")
	cfg := conf("1.1.0", ipamConf(r.socket))
	if _, err := (env{command: "STATUS"}).exec(t, cfg); code(err) != types.ErrPluginNotAvailable || !strings.Contains(err.Error(), "no subnet") {
		t.Errorf("STATUS without a subnet: %v", err)
	}
	if _, err := (env{"ADD", "c1", "eth0"}).exec(t, cfg); code(err) != types.ErrTryAgainLater || !strings.Contains(err.Error(), "ConfigureNodeSubnet") {
		t.Errorf("ADD without a subnet: %v", err)
	}
	if a, err := r.rt.ConfigureNodeSubnet(context.Background(), &quiltpb.ConfigureNodeSubnetRequest{Subnet: "10.42.1.0/24"}); err != nil || !a.Success {
		t.Fatal(a, err)
	}
	add(t, "c1", "eth0", cfg)
	if _, err := (env{command: "STATUS"}).exec(t, cfg); err != nil {
		t.Errorf("STATUS with one address left: %v", err)
	}
	add(t, "c2", "eth0", cfg)
	if _, err := (env{"ADD", "c3", "eth0"}).exec(t, cfg); code(err) != 100 || !strings.Contains(err.Error(), "exhausted") {
		t.Errorf("ADD when full: %v", err)
	}
	if _, err := (env{command: "STATUS"}).exec(t, cfg); code(err) != types.ErrPluginNotAvailable || !strings.Contains(err.Error(), "exhausted") {
		t.Errorf("STATUS when full: %v", err)
	}
	if again := add(t, "c2", "eth0", cfg); again.IPs[0].Address.String() != "10.42.1.11/24" {
		t.Errorf("a repeated ADD when full: %v", again.IPs[0].Address)
	}
}
