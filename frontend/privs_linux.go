package frontend

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// CheckPrivileges refuses uid 0 and any effective capability: the
// frontend faces the network and never needs either.
func CheckPrivileges() error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("read capabilities: %w", err)
	}
	return privilegeError(os.Getuid(), os.Geteuid(), uint64(data[1].Effective)<<32|uint64(data[0].Effective))
}
