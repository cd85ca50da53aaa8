// Command quilt-route-helper is the privileged half of quilt-runtime: it
// holds only CAP_NET_ADMIN and manages the cluster's overlay routes for the
// frontend over a Unix socket. See package helper.
package main

import (
	"cmp"
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
	"github.com/quiltmesh/quilt-runtime/shared/wire"
)

func main() {
	if err := run(os.Args[1:]); err != nil && !errors.Is(err, flag.ErrHelp) { // --help exits 0
		fmt.Fprintln(os.Stderr, "quilt-route-helper:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("quilt-route-helper", flag.ContinueOnError)
	var pol policy.Policy
	var uids []uint32
	socket := fs.String("socket", "/run/quilt/route-helper.sock", "Unix socket to listen on, unless systemd passes one")
	fs.TextVar(&pol.Cluster, "cluster-cidr", netip.MustParsePrefix("10.42.0.0/16"), "only routes inside this IPv4 CIDR")
	fs.IntVar(&pol.PrefixLen, "node-prefix-len", 24, "only routes of this prefix length")
	fs.Func("allow-uid", "user (name or uid) allowed to connect; repeatable, required", func(s string) error {
		if u, err := user.Lookup(s); err == nil { // a name: resolved at start, never per connection
			s = u.Uid
		}
		uid, err := strconv.ParseUint(s, 10, 32)
		uids = append(uids, uint32(uid))
		return err
	})
	fs.Func("allowed-interface", "interface routes may use; repeatable (default vxlan100)", func(s string) error {
		pol.Interfaces = append(pol.Interfaces, s)
		return nil
	})
	if err := fs.Parse(args); err != nil || len(uids) == 0 {
		return cmp.Or(err, errors.New("--allow-uid is required: name the frontend's user"))
	}
	if len(pol.Interfaces) == 0 {
		pol.Interfaces = []string{"vxlan100"}
	}
	if err := errors.Join(pol.Validate(), helper.CheckPrivileges()); err != nil {
		return err
	}
	l, err := helper.Listen(*socket)
	routes, rerr := helper.OpenRoutes()
	if err = errors.Join(err, rerr); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	log.Info("route helper serving", "socket", l.Addr().String(), "allow_uids", uids, "policy", pol, "route_protocol", wire.RouteProtocol, "uid", os.Getuid())
	// No signal handling: SIGTERM ends the process, its routes stay in the
	// kernel, and the next start removes the socket file left behind.
	// Serve returns only when the socket fails: let the supervisor restart us.
	return fmt.Errorf("serve: %w", (&helper.Server{Policy: pol, Routes: routes, AllowUIDs: uids, Log: log}).Serve(l))
}
