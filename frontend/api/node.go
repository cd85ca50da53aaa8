package api

import (
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"google.golang.org/grpc"

	"github.com/quiltmesh/quilt-runtime/frontend/helperclient"
	"github.com/quiltmesh/quilt-runtime/frontend/ipam"
	"github.com/quiltmesh/quilt-runtime/frontend/reconcile"
	"github.com/quiltmesh/quilt-runtime/frontend/state"
	"github.com/quiltmesh/quilt-runtime/proto/quiltpb"
	"github.com/quiltmesh/quilt-runtime/shared/policy"
)

// Node is what both services work on: the node's routes, its addresses,
// its route helper, and the log of the calls they answer.
type Node struct {
	Policy policy.Policy
	Routes *reconcile.Reconciler
	Helper *helperclient.Monitor
	IPAM   *ipam.Allocator
	Log    *slog.Logger

	store *state.Store
	calls callCounts // route calls since the last summary
}

// NodeConfig is what a Node is made of.
type NodeConfig struct {
	Policy   policy.Policy
	StateDir string       // holds state.db (package state)
	Offsets  ipam.Offsets // the gateway and allocation range in the node subnet
	// Helper is the route helper: a helperclient.Client in the product.
	Helper helperclient.RouteHelper
	// HelperSocket names it in log lines.
	HelperSocket string
	// OnHealth, if set, is called with each change of the helper's health
	// (nil: it answers again).
	OnHealth     func(err error)
	AdoptGrace   time.Duration           // 0: reconcile.DefaultAdoptGrace
	RemovalLimit *reconcile.RemovalLimit // nil: reconcile.DefaultRemovalLimit
	Log          *slog.Logger
	// Now is the clock of the adoption grace; nil: time.Now. Tests move it.
	Now func() time.Time
}

// OpenNode opens the state file in cfg.StateDir (or, on a first start,
// creates it), checks the state it holds, migrates an older schema, and
// makes the node of it: its allocator, its helper's monitor and its
// reconciler. Close closes the state file.
func OpenNode(cfg NodeConfig) (*Node, error) {
	store, snap, err := state.Open(cfg.StateDir, cfg.Log)
	if err != nil {
		return nil, err
	}
	alloc, err := ipam.NewAllocator(cfg.Offsets, store, snap.Subnet, snap.Allocations, snap.LastIP)
	if err == nil {
		err = store.Migrate(snap)
	} else {
		err = fmt.Errorf("state file %s: %w; it was left untouched", store.Path(), err)
	}
	if err != nil {
		store.Close()
		return nil, err
	}
	cfg.Log.Info("state loaded", "path", store.Path(), "subnet", snap.Subnet, "allocations", len(snap.Allocations), "routes", len(snap.Routes))
	mon := helperclient.NewMonitor(cfg.Helper, cfg.HelperSocket, cfg.Log, cfg.OnHealth)
	rec := reconcile.New(reconcile.Config{Policy: cfg.Policy, Helper: mon, Store: store, Saved: snap.Routes,
		Adopted: snap.Adopted, AdoptPending: snap.Created, AdoptGrace: cfg.AdoptGrace, RemovalLimit: cfg.RemovalLimit,
		Log: cfg.Log, Now: cfg.Now})
	return &Node{Policy: cfg.Policy, Routes: rec, Helper: mon, IPAM: alloc, Log: cfg.Log, store: store}, nil
}

// Close closes the node's state file.
func (n *Node) Close() error { return n.store.Close() }

// subnet returns the configured node subnet, if any.
func (n *Node) subnet() netip.Prefix {
	pool, _ := n.IPAM.Pool()
	return pool.Subnet
}

// Info is what the admin service says of the frontend itself.
type Info struct {
	Version        string
	StateDir       string
	ResyncInterval time.Duration
}

// Runtime answers the agent's service, quilt.QuiltRuntime.
type Runtime struct {
	quiltpb.UnimplementedQuiltRuntimeServer
	*Node
}

// Admin answers quilt.QuiltAdmin: container addresses for the runtime,
// and views of the node's state for operators. Failures are gRPC status
// errors (no deployed client expects {success, error} here).
type Admin struct {
	quiltpb.UnimplementedQuiltAdminServer
	*Node
	Info
}

// Register registers both services of the node on srv.
func Register(srv grpc.ServiceRegistrar, n *Node, info Info) {
	quiltpb.RegisterQuiltRuntimeServer(srv, &Runtime{Node: n})
	quiltpb.RegisterQuiltAdminServer(srv, &Admin{Node: n, Info: info})
}
