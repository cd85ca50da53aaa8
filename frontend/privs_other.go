//go:build !linux

package frontend

import (
	"fmt"
	"runtime"
)

// CheckPrivileges is not implemented beyond Linux.
func CheckPrivileges() error {
	return fmt.Errorf("privilege check not implemented on %s", runtime.GOOS)
}
