package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/quiltmesh/quilt-runtime/frontend"
	"github.com/quiltmesh/quilt-runtime/frontend/api"
	"github.com/quiltmesh/quilt-runtime/frontend/internal/testkit"
	"github.com/quiltmesh/quilt-runtime/frontend/internal/testnode"
)

// server runs the real services over TCP on loopback and returns the address.
func server(t *testing.T) string {
	t.Helper()
	pol := testkit.Policy
	pol.Interfaces = []string{"vxlan100", "vxlan101"}
	node := testnode.Open(t, api.NodeConfig{Policy: pol})
	node.Helper.Hello(context.Background())
	hs := health.NewServer()
	hs.SetServingStatus("quilt.QuiltRuntime", healthpb.HealthCheckResponse_SERVING)
	srv := frontend.NewGRPCServer(node, api.Info{Version: "v-test", StateDir: "/state"}, hs, nil)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	return l.Addr().String()
}

// run runs quiltctl and returns its exit code, stdout and stderr.
func run(addr string, args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := 0
	if err := newApp(&out, &errb).Run(append([]string{"quiltctl", "--addr", addr}, args...)); err != nil {
		code = exitCode(err, &errb)
	}
	return code, out.String(), errb.String()
}

func TestQuiltctl(t *testing.T) {
	addr := server(t)
	for _, tc := range []struct {
		args       []string
		code       int
		out, errs  string // substrings expected
		noOut, any bool
	}{
		{args: []string{"allocate", "web-1"}, code: 1, errs: "FailedPrecondition: this node has no subnet yet"},
		{args: []string{"configure-subnet", "10.42.1.0/24"}, out: "ok\n"},
		{args: []string{"configure-subnet", "10.43.1.0/24"}, code: 1, errs: "outside the cluster CIDR 10.42.0.0/16", noOut: true},
		{args: []string{"inject-route", "--via", "vxlan100", "10.42.2.0/24"}, out: "ok\n"},
		{args: []string{"inject-route", "--via", "eth0", "10.42.3.0/24"}, code: 1, errs: `interface "eth0" is not on the allow list`},
		{args: []string{"inject-route", "10.42.3.0/24"}, out: "ok\n"},
		{args: []string{"remove-route", "10.42.3.0/24"}, out: "ok\n"},
		{args: []string{"allocate", "web-1"}, out: "10.42.1.10/24 gateway 10.42.1.1\n"},
		{args: []string{"allocate", "bad id"}, code: 1, errs: "InvalidArgument: container_id"},
		{args: []string{"allocate", "--interface", "eth1", "web-1"}, out: "10.42.1.11/24 gateway 10.42.1.1\n"},
		{args: []string{"allocate", "-i", "a/b", "web-1"}, code: 1, errs: "InvalidArgument: interface_name"},
		{args: []string{"allocations"}, out: "IP          CONTAINER  INTERFACE  NETWORK\n10.42.1.10  web-1      -          -\n10.42.1.11  web-1      eth1       -\n"},
		{args: []string{"release", "-i", "eth1", "web-1"}, out: "released 10.42.1.11\n"},
		{args: []string{"routes"}, out: "10.42.2.0/24  vxlan100  vxlan100   in-sync"},
		{args: []string{"status"}, out: "allocations:      1 of 245"},
		// Right after an InjectRoute, before any resync: not missing.
		{args: []string{"status"}, out: "routes:           1 desired, 1 installed now, 1 of them in sync\n"},
		{args: []string{"status"}, out: "last resync:      none yet\n"},
		{args: []string{"health"}, out: "SERVING\n"},
		{args: []string{"release", "web-1"}, out: "released 10.42.1.10\n"},
		{args: []string{"release", "web-1"}, out: "nothing changed"},
		{args: []string{"apply-routes", "--via", "vxlan100", "+10.42.20.0/24", "+10.42.21.0/24", "-10.42.2.0/24"}, out: "3 routes: 2 created, 0 unchanged, 0 moved, 1 deleted, 0 failed"},
		{args: []string{"apply-routes", "10.42.22.0/24"}, code: 2, errs: "want +DESTINATION [INTERFACE] to add or -DESTINATION to remove"},
		{args: []string{"apply-routes", "+10.42.22.1/24"}, code: 1, errs: "InvalidArgument: changes[0].destination"},
		{args: []string{"sync-routes", "10.42.20.0/24", "10.42.23.0/24"}, out: "3 routes: 1 created, 1 unchanged, 0 moved, 1 deleted, 0 failed"},
		{args: []string{"routes"}, out: "10.42.23.0/24  vxlan100  vxlan100   in-sync"},
		{args: []string{"allocate"}, code: 2, errs: "takes exactly one argument"},
		{args: []string{"routes", "extra"}, code: 2, errs: "takes no arguments"},
		{args: []string{"-o", "xml", "status"}, code: 2, errs: "want text or json"},
	} {
		code, out, errs := run(addr, tc.args...)
		if code != tc.code || !strings.Contains(out, tc.out) || !strings.Contains(errs, tc.errs) || (tc.noOut && out != "") {
			t.Errorf("quiltctl %s: exit %d\nstdout: %s\nstderr: %s\nwant exit %d, stdout with %q, stderr with %q", strings.Join(tc.args, " "), code, out, errs, tc.code, tc.out, tc.errs)
		}
	}
}

// TestArgumentForms: an interface follows its destination, as in the
// RPC, or comes from --via; both, and different, is a usage error naming
// both.
func TestArgumentForms(t *testing.T) {
	addr := server(t)
	peers := filepath.Join(t.TempDir(), "peers.txt")
	if err := os.WriteFile(peers, []byte("10.42.30.0/24 vxlan101\n10.42.31.0/24\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args      []string
		code      int
		out, errs string // substrings expected
	}{
		{args: []string{"configure-subnet", "10.42.1.0/24"}, out: "ok\n"},
		{args: []string{"inject-route", "10.42.4.0/24", "vxlan101"}, out: "ok\n"},
		{args: []string{"routes"}, out: "10.42.4.0/24  vxlan101  vxlan101   in-sync"},
		{args: []string{"inject-route", "--via", "vxlan101", "10.42.4.0/24", "vxlan101"}, out: "ok\n"},
		{args: []string{"inject-route", "--via", "vxlan100", "10.42.4.0/24", "vxlan101"}, code: 2, errs: "two interfaces for one route: --via vxlan100 and vxlan101; give one"},
		{args: []string{"inject-route", "10.42.4.0/24", "vxlan101", "extra"}, code: 2, errs: "inject-route takes one or two arguments, DESTINATION [INTERFACE]"},
		{args: []string{"inject-route"}, code: 2, errs: "inject-route takes one or two arguments"},
		{args: []string{"inject-route", "10.42.5.0/24", "eth0"}, code: 1, errs: `interface "eth0" is not on the allow list`},
		{args: []string{"inject-route", "10.42.5.0/24"}, out: "ok\n"},
		{args: []string{"routes"}, out: "10.42.5.0/24  vxlan100  vxlan100   in-sync"},
		{args: []string{"apply-routes", "+10.42.30.0/24", "vxlan101", "+10.42.31.0/24", "-10.42.4.0/24"}, out: "3 routes: 2 created, 0 unchanged, 0 moved, 1 deleted, 0 failed"},
		{args: []string{"routes"}, out: "10.42.30.0/24  vxlan101  vxlan101   in-sync"},
		{args: []string{"routes"}, out: "10.42.31.0/24  vxlan100  vxlan100   in-sync"},
		{args: []string{"apply-routes", "+10.42.32.0/24", "-10.42.30.0/24", "vxlan101"}, code: 2, errs: `interface "vxlan101" follows no route to add; give it after its destination: +DESTINATION INTERFACE (a removal takes none)`},
		{args: []string{"apply-routes", "vxlan101", "+10.42.32.0/24"}, code: 2, errs: `interface "vxlan101" follows no route to add`},
		{args: []string{"apply-routes", "+10.42.32.0/24", "vxlan101", "vxlan100"}, code: 2, errs: `interface "vxlan100" follows no route to add`},
		{args: []string{"apply-routes", "--via", "vxlan100", "+10.42.32.0/24", "vxlan101"}, code: 2, errs: "two interfaces for one route: --via vxlan100 and vxlan101"},
		{args: []string{"apply-routes", "+10.42.32.0/24", "10.42.33.0"}, code: 2, errs: `"10.42.33.0" is an address; a destination needs its prefix length`},
		{args: []string{"sync-routes", "-f", peers, "10.42.5.0/24"}, out: "3 routes: 0 created, 3 unchanged, 0 moved, 0 deleted, 0 failed"},
		{args: []string{"sync-routes", "10.42.30.0/24", "10.42.31.0/24", "vxlan101", "10.42.5.0/24"}, out: "3 routes: 0 created, 1 unchanged, 2 moved, 0 deleted, 0 failed"},
		{args: []string{"routes"}, out: "10.42.30.0/24  vxlan100  vxlan100   in-sync"},
		{args: []string{"routes"}, out: "10.42.31.0/24  vxlan101  vxlan101   in-sync"},
		{args: []string{"sync-routes", "vxlan101"}, code: 2, errs: `interface "vxlan101" follows no route to add; give it after its destination: DESTINATION INTERFACE`},
	} {
		code, out, errs := run(addr, tc.args...)
		if code != tc.code || !strings.Contains(out, tc.out) || !strings.Contains(errs, tc.errs) || tc.code == 2 && out != "" {
			t.Errorf("quiltctl %s: exit %d\nstdout: %s\nstderr: %s\nwant exit %d, stdout with %q, stderr with %q", strings.Join(tc.args, " "), code, out, errs, tc.code, tc.out, tc.errs)
		}
	}
}

func TestQuiltctlJSON(t *testing.T) {
	addr := server(t)
	run(addr, "configure-subnet", "10.42.1.0/24")
	code, out, _ := run(addr, "-o", "json", "allocate", "c1")
	var a struct {
		IP           string `json:"ip"`
		PrefixLength int    `json:"prefixLength"`
		Gateway      string `json:"gateway"`
	}
	if err := json.Unmarshal([]byte(out), &a); code != 0 || err != nil || a.IP != "10.42.1.10" || a.PrefixLength != 24 || a.Gateway != "10.42.1.1" {
		t.Fatalf("allocate -o json: exit %d, %q, %v", code, out, err)
	}
	// success=false: the answer as JSON on stdout, the error on stderr, exit 1.
	code, out, errs := run(addr, "-o", "json", "inject-route", "10.42.1.0/24")
	var r struct {
		Success bool   `json:"success"`
		Error   string `json:"error"`
	}
	if err := json.Unmarshal([]byte(out), &r); code != 1 || err != nil || r.Success || !strings.Contains(r.Error, "own subnet") || !strings.Contains(errs, "own subnet") {
		t.Fatalf("refused inject -o json: exit %d, %q, %q, %v", code, out, errs, err)
	}
	code, out, _ = run(addr, "-o", "json", "status")
	var st map[string]any
	if err := json.Unmarshal([]byte(out), &st); code != 0 || err != nil || st["subnet"] != "10.42.1.0/24" || st["version"] != "v-test" {
		t.Fatalf("status -o json: exit %d, %q, %v", code, out, err)
	}
}

func TestCompletion(t *testing.T) {
	for _, sh := range []string{"bash", "zsh"} {
		code, out, _ := run("127.0.0.1:1", "completion", sh)
		if code != 0 || !strings.Contains(out, "complete -o default -F _quiltctl quiltctl") {
			t.Errorf("completion %s: %d %q", sh, code, out)
		}
	}
	// The candidates come from the binary itself.
	// (urfave/cli reads the last word from os.Args, so set it as a shell would.)
	args := []string{"quiltctl", "--generate-bash-completion"}
	defer func(saved []string) { os.Args = saved }(os.Args)
	os.Args = args
	var out bytes.Buffer
	newApp(&out, io.Discard).Run(args)
	for _, cmd := range []string{"configure-subnet", "inject-route", "remove-route", "routes", "allocate", "release", "allocations", "status", "health"} {
		if !strings.Contains(out.String(), cmd+"\n") {
			t.Errorf("completion candidates lack %s: %q", cmd, out.String())
		}
	}
}
