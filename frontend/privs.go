package frontend

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ErrPrivileged means the frontend was started with a privilege it never
// needs: uid 0, or a capability in a set that grants one.
var ErrPrivileged = errors.New("quilt-runtime refuses to start with privileges")

// capSets are the capability sets that give a process a privilege now or
// after an exec, by their names in /proc/PID/status. The bounding set only
// limits what an exec may grant, so it is not among them.
var capSets = [...]string{"CapEff", "CapPrm", "CapInh", "CapAmb"}

// capSetNames say what each set is, for the message.
var capSetNames = [...]string{"effective", "permitted", "inheritable", "ambient"}

// identity is what the kernel says the process runs as: its uids (real,
// effective, saved, filesystem) and its capability sets in capSets order.
type identity struct {
	uids [4]uint64
	caps [len(capSets)]uint64
}

// parseStatus reads the Uid: line and the capability lines of a
// /proc/PID/status file. A missing or malformed line is an error: the
// check fails closed.
func parseStatus(status []byte) (identity, error) {
	var id identity
	seen := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		val = strings.TrimSpace(val)
		if key == "Uid" {
			f := strings.Fields(val)
			if len(f) != len(id.uids) {
				return identity{}, fmt.Errorf("Uid line %q: want four uids", val)
			}
			for i := range f {
				u, err := strconv.ParseUint(f[i], 10, 32)
				if err != nil {
					return identity{}, fmt.Errorf("Uid line %q: %w", val, err)
				}
				id.uids[i] = u
			}
			seen[key] = true
		}
		for i, set := range capSets {
			if key != set {
				continue
			}
			c, err := strconv.ParseUint(val, 16, 64)
			if err != nil {
				return identity{}, fmt.Errorf("%s line %q: %w", set, val, err)
			}
			id.caps[i] = c
			seen[key] = true
		}
	}
	for _, key := range append([]string{"Uid"}, capSets[:]...) {
		if !seen[key] {
			return identity{}, fmt.Errorf("no %s: line", key)
		}
	}
	return id, sc.Err()
}

// privilegeError names every privilege the identity holds: uid 0 among
// its uids, and each capability set that is not empty. It wraps
// ErrPrivileged, or is nil for an unprivileged identity.
func privilegeError(id identity) error {
	var why []string
	for _, u := range id.uids {
		if u == 0 {
			why = append(why, fmt.Sprintf("it runs as uid 0 (real, effective, saved, filesystem uids: %d %d %d %d)", id.uids[0], id.uids[1], id.uids[2], id.uids[3]))
			break
		}
	}
	for i, c := range id.caps {
		if c != 0 {
			why = append(why, fmt.Sprintf("it holds capabilities %#x in %s (%s)", c, capSets[i], capSetNames[i]))
		}
	}
	if len(why) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %s. It never needs any; run it as an unprivileged user with no capabilities (the route helper holds CAP_NET_ADMIN), or pass --allow-root", ErrPrivileged, strings.Join(why, "; "))
}
