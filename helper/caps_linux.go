package helper

import (
	"fmt"
	"os"
	"regexp"
)

// privileges is what /proc/self/status must say: CAP_NET_ADMIN (bit 12)
// permitted, effective and bounding, and nothing else in any set; a uid
// and a gid other than 0 in all four places; and no_new_privs.
var privileges = regexp.MustCompile(`(?s)\nUid:(\t[1-9]\d*){4}\nGid:(\t[1-9]\d*){4}\n.*` +
	`\nCapInh:\t(0000000000000000|0000000000001000)\n` + `CapPrm:\t0000000000001000\nCapEff:\t0000000000001000\nCapBnd:\t0000000000001000\n` +
	`CapAmb:\t(0000000000000000|0000000000001000)\nNoNewPrivs:\t1\n`)

// CheckPrivileges refuses to run with more than CAP_NET_ADMIN: not as uid
// 0, with no other capability in any set (the bounding set included), and
// only with no_new_privs. The helper never changes its own privileges: its
// supervisor starts it so (systemd's User=, AmbientCapabilities=,
// CapabilityBoundingSet=, NoNewPrivileges=, or setpriv), and any other
// start fails closed, showing what it found.
func CheckPrivileges() error {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil || !privileges.Match(b) {
		return fmt.Errorf("CAP_NET_ADMIN is required, as the only capability, for a user and group other than root, with no_new_privs (systemd: User=, "+
			"AmbientCapabilities= and CapabilityBoundingSet=CAP_NET_ADMIN, NoNewPrivileges=yes; or setpriv, see README.md); found %q (%v)",
			regexp.MustCompile(`(?m)^(Uid|Gid|Cap\w+|NoNewPrivs):.*$`).FindAll(b, -1), err)
	}
	return nil
}
