// Package testnode opens nodes (package api) for the frontend's unit
// tests: real services on a real state file, with an in-memory route
// helper (testkit.Helper) unless the test gives another. Never shipped.
package testnode

import (
	"context"
	"log/slog"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	"github.com/quiltmesh/quilt-runtime/frontend/api"
	"github.com/quiltmesh/quilt-runtime/frontend/internal/testkit"
	"github.com/quiltmesh/quilt-runtime/frontend/ipam"
)

// Open opens a node as cfg says, closed when the test ends. Left unset:
// the policy is testkit.Policy, the state directory a testkit.StateDir
// with no routes, the offsets ipam.DefaultOffsets, the helper a new
// testkit.Helper, and the log discarded.
func Open(t testing.TB, cfg api.NodeConfig) *api.Node {
	t.Helper()
	if !cfg.Policy.Cluster.IsValid() {
		cfg.Policy = testkit.Policy
	}
	if cfg.StateDir == "" {
		cfg.StateDir = testkit.StateDir(t)
	}
	if cfg.Offsets == (ipam.Offsets{}) {
		cfg.Offsets = ipam.DefaultOffsets
	}
	if cfg.Helper == nil {
		cfg.Helper = testkit.New()
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	n, err := api.OpenNode(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// Serve serves the node's two services on an in-memory listener until the
// test ends, and returns a client connection to them.
func Serve(t testing.TB, n *api.Node, info api.Info) *grpc.ClientConn {
	t.Helper()
	srv := grpc.NewServer()
	api.Register(srv, n, info)
	return Dial(t, srv)
}

// Dial serves srv on an in-memory listener until the test ends, and
// returns a client connection to it.
func Dial(t testing.TB, srv *grpc.Server) *grpc.ClientConn {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient("passthrough:///bufconn", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}
