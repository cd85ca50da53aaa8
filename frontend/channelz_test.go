package frontend

import (
	"context"
	"slices"
	"testing"

	channelzpb "google.golang.org/grpc/channelz/grpc_channelz_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"

	"github.com/quiltmesh/quilt-runtime/frontend/api"
	"github.com/quiltmesh/quilt-runtime/frontend/internal/testnode"
	"github.com/quiltmesh/quilt-runtime/proto/quiltpb"
)

// TestChannelz: the server answers channelz (google.golang.org/grpc/admin),
// which counts the calls it served and shows the connection's socket, and
// lists it through reflection, as grpcurl and grpcdebug need.
func TestChannelz(t *testing.T) {
	conn := serveConn(t, testnode.Open(t, api.NodeConfig{}), nil)
	ctx := context.Background()
	for range 3 {
		if _, err := quiltpb.NewQuiltAdminClient(conn).GetStatus(ctx, &quiltpb.GetStatusRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	cz := channelzpb.NewChannelzClient(conn)
	servers, err := cz.GetServers(ctx, &channelzpb.GetServersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	// Other tests' servers live in this process too: find ours by its socket.
	var found bool
	for _, s := range servers.Server {
		if s.Data.CallsStarted < 3 {
			continue
		}
		socks, err := cz.GetServerSockets(ctx, &channelzpb.GetServerSocketsRequest{ServerId: s.Ref.ServerId})
		if err != nil {
			t.Fatal(err)
		}
		for _, ref := range socks.SocketRef {
			sock, err := cz.GetSocket(ctx, &channelzpb.GetSocketRequest{SocketId: ref.SocketId})
			if err != nil {
				t.Fatal(err)
			}
			found = found || sock.Socket.Data.StreamsStarted >= 3
		}
	}
	if !found {
		t.Fatalf("channelz shows no server that served these calls: %v", servers)
	}
	rc, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rc.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}})
	resp, err := rc.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.Name)
	}
	for _, want := range []string{"grpc.channelz.v1.Channelz", "quilt.QuiltAdmin", "quilt.QuiltRuntime", "grpc.health.v1.Health"} {
		if !slices.Contains(names, want) {
			t.Errorf("reflection lists %q, not %s", names, want)
		}
	}
}
