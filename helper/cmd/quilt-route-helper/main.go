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
	table := fs.Uint("table", 254, "routing table, 1-4294967295 (254 is main)")
	proto := fs.Uint("route-protocol", 81, "route protocol number, 1-255, marking routes as ours")
	runAs := fs.String("user", "", "switch to this user (name or uid) after start, keeping CAP_NET_ADMIN")
	fs.Func("allow-uid", "user (name or uid) allowed to connect; repeatable, required", func(s string) error {
		uid, _, err := lookup(s)
		uids = append(uids, uint32(uid))
		return err
	})
	fs.Func("allowed-interface", "interface routes may use; repeatable (default vxlan100)", func(s string) error {
		pol.Interfaces = append(pol.Interfaces, s)
		return nil
	})
	if err := fs.Parse(args); err != nil {
		return err
	}
	if len(pol.Interfaces) == 0 {
		pol.Interfaces = []string{"vxlan100"}
	}
	uid, gid, err := -1, -1, pol.Validate()
	switch {
	case err != nil:
		return err
	case len(uids) == 0:
		return errors.New("--allow-uid is required: name the frontend's user")
	case *proto < 1 || *proto > 255 || *table < 1 || *table > 1<<32-1:
		return errors.New("--route-protocol must be 1-255 and --table 1-4294967295")
	case *runAs != "":
		if uid, gid, err = lookup(*runAs); err != nil {
			return fmt.Errorf("--user: %w", err)
		}
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	l, err := helper.Listen(*socket) // before dropping privileges: the directory may be root's
	if err == nil {
		err = helper.DropPrivileges(uid, gid)
	}
	routes, rerr := helper.OpenRoutes(uint32(*table), uint8(*proto))
	if err = errors.Join(err, rerr); err != nil {
		return err
	}
	log.Info("route helper serving", "socket", l.Addr().String(), "allow_uids", uids, "policy", pol, "table", *table, "route_protocol", *proto, "uid", os.Getuid())
	// No signal handling: SIGTERM ends the process, its routes stay in the
	// kernel, and the next start removes the socket file left behind.
	// Serve returns only when the socket fails: let the supervisor restart us.
	return fmt.Errorf("serve: %w", (&helper.Server{Policy: pol, Routes: routes, AllowUIDs: uids, Log: log}).Serve(l))
}

// lookup resolves a user name, or a uid with or without a passwd entry,
// to a uid and primary gid. It runs at start only, never per connection.
func lookup(s string) (uid, gid int, err error) {
	u, err := user.Lookup(s)
	if n, nerr := strconv.ParseUint(s, 10, 31); nerr == nil {
		if u, err = user.LookupId(s); err != nil {
			return int(n), int(n), nil
		}
	}
	if err == nil {
		uid, _ = strconv.Atoi(u.Uid)
		gid, err = strconv.Atoi(u.Gid)
	}
	return uid, gid, err
}
