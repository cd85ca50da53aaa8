package frontend

import (
	"fmt"
	"os"
)

// CheckPrivileges refuses uid 0 (real, effective, saved or filesystem) and
// any capability in the effective, permitted, inheritable or ambient set,
// as the kernel reports them in /proc/self/status: the frontend faces the
// network and never needs any of them.
func CheckPrivileges() error {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return fmt.Errorf("privilege check: %w", err)
	}
	id, err := parseStatus(b)
	if err != nil {
		return fmt.Errorf("privilege check: /proc/self/status: %w", err)
	}
	return privilegeError(id)
}
