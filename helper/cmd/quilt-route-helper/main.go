// Command quilt-route-helper is the privileged half of quilt-runtime: it
// holds only CAP_NET_ADMIN and manages the cluster's overlay routes for the
// frontend over a Unix socket. See package helper.
package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/user"
	"strconv"

	"github.com/quiltmesh/quilt-runtime/helper"
	"github.com/quiltmesh/quilt-runtime/shared/policy"
)

func main() {
	err := run(os.Args[1:])
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "quilt-route-helper:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("quilt-route-helper", flag.ContinueOnError)
	var pol policy.Policy
	socket := fs.String("socket", "/run/quilt/route-helper.sock", "Unix socket to listen on, unless systemd passes one")
	allow := fs.String("allow-uid", "", "the user (name or uid) allowed to connect: the frontend's; required")
	fs.TextVar(&pol.Cluster, "cluster-cidr", netip.MustParsePrefix("10.42.0.0/16"), "only routes inside this IPv4 CIDR")
	fs.IntVar(&pol.PrefixLen, "node-prefix-len", 24, "only routes of this prefix length")
	fs.Func("allowed-interface", "interface routes may use; repeatable (default vxlan100)", func(s string) error {
		pol.Interfaces = append(pol.Interfaces, s)
		return nil
	})
	if err := fs.Parse(args); err != nil {
		return err
	}
	uid, err := lookupUID(*allow)
	if err != nil {
		return err
	}
	if len(pol.Interfaces) == 0 {
		pol.Interfaces = []string{"vxlan100"}
	}
	if err := errors.Join(pol.Validate(), helper.CheckPrivileges()); err != nil {
		return err
	}
	routes, err := helper.OpenRoutes(pol)
	if err != nil {
		return err
	}
	l, err := helper.Listen(*socket)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	log.Info("route helper serving", "socket", l.Addr(), "allow_uid", uid, "policy", pol)
	// No signal handling: SIGTERM ends the process, its routes stay in the
	// kernel, and the next start removes the socket file left behind.
	// Serve returns only when the socket fails: let the supervisor restart us.
	server := &helper.Server{Routes: routes, AllowUID: uid, Log: log}
	return server.Serve(l)
}

// lookupUID resolves a user name, once at start (never per connection),
// or takes a number as it is.
func lookupUID(name string) (uint32, error) {
	if u, err := user.Lookup(name); err == nil {
		name = u.Uid
	}
	uid, err := strconv.ParseUint(name, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("--allow-uid %q: name the frontend's user, by name or uid", name)
	}
	return uint32(uid), nil
}
