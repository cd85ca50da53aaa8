package e2e

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/quiltmesh/quilt-runtime/proto/quiltpb"
)

// TestGRPCEcosystemClients runs the gRPC ecosystem's own clients, as the
// README shows them, against the real pair: grpcurl reads channelz (served
// through google.golang.org/grpc/admin) by reflection alone, and ghz
// load-tests an RPC. Both are built at the Makefile's pinned versions.
func TestGRPCEcosystemClients(t *testing.T) {
	requireRoot(t)
	cmd := exec.Command("make", "grpc-tools", "BIN="+binDir)
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make grpc-tools: %v\n%s", err, out)
	}
	tools := filepath.Join(binDir, "tools")
	n := newNode(t)
	n.startFrontend(t)
	n.configure(t, "10.42.1.0/24")
	inNode := func(name string, args ...string) string {
		t.Helper()
		out, err := exec.Command("ip", append([]string{"netns", "exec", n.ns, filepath.Join(tools, name)}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
		return string(out)
	}

	// README: ghz --insecure --call quilt.QuiltAdmin/GetStatus -n 2000 -c 8 127.0.0.1:50051
	out := inNode("ghz", "--insecure", "--call", "quilt.QuiltAdmin/GetStatus", "-n", "2000", "-c", "8", n.addr)
	if !strings.Contains(out, "[OK]   2000 responses") {
		t.Errorf("ghz: want 2000 OK responses:\n%s", out)
	}
	out = inNode("ghz", "--insecure", "--call", "quilt.QuiltRuntime/InjectRoute", "-d", `{"destination":"10.42.2.0/24","via_interface":"vxlan100"}`,
		"-n", "500", "-c", "8", n.addr)
	if !strings.Contains(out, "[OK]   500 responses") || ours(t, n.ns) != "10.42.2.0/24 dev vxlan100 scope link \n" {
		t.Errorf("ghz InjectRoute: want 500 OK and the one route:\n%s\n%s", out, ours(t, n.ns))
	}

	// README: grpcurl -plaintext 127.0.0.1:50051 grpc.channelz.v1.Channelz/GetServers
	var servers struct {
		Server []struct {
			Ref struct {
				ServerID string `json:"serverId"`
			} `json:"ref"`
			Data struct {
				CallsStarted   string `json:"callsStarted"`
				CallsSucceeded string `json:"callsSucceeded"`
			} `json:"data"`
			ListenSocket []struct{ Name string } `json:"listenSocket"`
		} `json:"server"`
	}
	out = inNode("grpcurl", "-plaintext", n.addr, "grpc.channelz.v1.Channelz/GetServers")
	if err := json.Unmarshal([]byte(out), &servers); err != nil {
		t.Fatalf("channelz GetServers: %v\n%s", err, out)
	}
	var listening [][]string // each server's sockets
	for _, s := range servers.Server {
		var names []string
		for _, l := range s.ListenSocket {
			names = append(names, l.Name)
		}
		listening = append(listening, names)
	}
	if diff := cmp.Diff([][]string{{n.addr}}, listening); diff != "" {
		t.Fatalf("channelz GetServers: want one server on %s (-want +got):\n%s\n%s", n.addr, diff, out)
	}
	// Every call ghz made, and the agent's ConfigureNodeSubnet, succeeded.
	if ok, _ := strconv.Atoi(servers.Server[0].Data.CallsSucceeded); ok < 2501 {
		t.Errorf("channelz counts %d calls succeeded, want at least 2501:\n%s", ok, out)
	}
	// README: ... Channelz/GetServerSockets, then GetSocket: the calls of
	// grpcurl's own connection.
	out = inNode("grpcurl", "-plaintext", "-d", `{"server_id":"`+servers.Server[0].Ref.ServerID+`"}`, n.addr, "grpc.channelz.v1.Channelz/GetServerSockets")
	if !strings.Contains(out, "socketId") {
		t.Errorf("channelz GetServerSockets:\n%s", out)
	}
	// And an RPC of ours by reflection alone, as the README shows.
	out = inNode("grpcurl", "-plaintext", "-d", `{"container_id":"web-1","interface_name":"eth0"}`, n.addr, "quilt.QuiltAdmin/AllocateIP")
	var a quiltpb.AllocateIPResponse
	if err := protojson.Unmarshal([]byte(out), &a); err != nil || a.Ip != "10.42.1.10" || a.Gateway != "10.42.1.1" {
		t.Errorf("grpcurl AllocateIP: %v\n%s", err, out)
	}
}
