package helper

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// netAdmin is the capability set that holds CAP_NET_ADMIN and nothing
// else.
const netAdmin = 1 << unix.CAP_NET_ADMIN

// CheckPrivileges refuses to run with more than CAP_NET_ADMIN. The helper
// never changes its own privileges: its supervisor starts it so (systemd's
// User=, AmbientCapabilities=, CapabilityBoundingSet=, NoNewPrivileges=,
// or setpriv), and any other start fails closed, naming what is wrong.
func CheckPrivileges() error {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return fmt.Errorf("read own privileges: %w", err)
	}
	return checkStatus(string(status))
}

// checkStatus checks the named fields of a /proc/PID/status text.
func checkStatus(status string) error {
	fields := map[string]string{}
	for line := range strings.Lines(status) {
		name, value, _ := strings.Cut(line, ":")
		fields[name] = strings.TrimSpace(value)
	}
	var errs []error
	want := func(ok bool, field, rule string) {
		if !ok {
			errs = append(errs, fmt.Errorf("%s is %q: want %s", field, fields[field], rule))
		}
	}
	for _, field := range []string{"Uid", "Gid"} {
		ids := strings.Fields(fields[field])
		want(len(ids) == 4 && !slices.Contains(ids, "0"), field, "four ids, none of them 0 (root)")
	}
	gids := strings.Fields(fields["Gid"])
	groups := strings.Fields(fields["Groups"])
	want(len(groups) == 0 || slices.Equal(groups, gids[:min(len(gids), 1)]), "Groups", "no supplementary group")
	for _, field := range []string{"CapPrm", "CapEff", "CapBnd"} {
		want(capabilities(fields[field]) == netAdmin, field, "exactly CAP_NET_ADMIN")
	}
	for _, field := range []string{"CapInh", "CapAmb"} {
		want(capabilities(fields[field])&^netAdmin == 0, field, "none, or CAP_NET_ADMIN")
	}
	want(fields["NoNewPrivs"] == "1", "NoNewPrivs", "1")
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("refusing to run with more privileges than CAP_NET_ADMIN (start it as a user and group other "+
		"than root, without supplementary groups, with CAP_NET_ADMIN as its only capability and no_new_privs: "+
		"systemd's User=, AmbientCapabilities= and CapabilityBoundingSet=CAP_NET_ADMIN, NoNewPrivileges=yes, or "+
		"setpriv, see README.md): %w", errors.Join(errs...))
}

// capabilities parses a capability set, a hex mask; one it cannot parse
// counts as every capability.
func capabilities(mask string) uint64 {
	set, err := strconv.ParseUint(mask, 16, 64)
	if err != nil {
		return ^uint64(0)
	}
	return set
}
