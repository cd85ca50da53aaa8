package helper

import (
	"errors"
	"fmt"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

const netAdmin = unix.CAP_NET_ADMIN

// DropPrivileges leaves every thread with CAP_NET_ADMIN as its only
// capability (bounding, permitted, effective; inheritable and ambient
// empty) and sets no_new_privs. If uid >= 0 it first switches to uid and
// gid, keeping CAP_NET_ADMIN. Capabilities are per thread, so the changes
// go through syscall.AllThreadsSyscall, which needs CGO_ENABLED=0.
func DropPrivileges(uid, gid int) error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	data := [2]unix.CapUserData{}
	if err := unix.Capget(&hdr, &data[0]); err != nil || data[0].Permitted&(1<<netAdmin) == 0 {
		return fmt.Errorf("CAP_NET_ADMIN is required: start as root or with AmbientCapabilities=CAP_NET_ADMIN (capget: %v)", err)
	}
	for c := uintptr(0); ; c++ { // until EINVAL: past the last capability
		if in, err := unix.PrctlRetInt(unix.PR_CAPBSET_READ, c, 0, 0, 0); err != nil {
			break
		} else if in == 1 && c != netAdmin {
			if err := allThreads(unix.SYS_PRCTL, unix.PR_CAPBSET_DROP, c, 0); err != nil {
				return fmt.Errorf("drop capability %d from the bounding set (needs CAP_SETPCAP, or a bounding set of CAP_NET_ADMIN alone): %w", c, err)
			}
		}
	}
	// Any failure from here on ends the process, so each step runs even if
	// one before it failed; the error says which.
	err := allThreads(unix.SYS_PRCTL, unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0)
	if uid >= 0 {
		err = errors.Join(err, allThreads(unix.SYS_PRCTL, unix.PR_SET_KEEPCAPS, 1, 0),
			syscall.Setgroups(nil), syscall.Setresgid(gid, gid, gid), syscall.Setresuid(uid, uid, uid))
	}
	data = [2]unix.CapUserData{{Effective: 1 << netAdmin, Permitted: 1 << netAdmin}}
	err = errors.Join(err, allThreads(unix.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0),
		allThreads(unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0))
	if err != nil {
		return fmt.Errorf("drop to CAP_NET_ADMIN alone (uid %d): %w", uid, err)
	}
	return nil
}

// allThreads makes a syscall on every thread of the process. It fails with
// ENOTSUP in a binary built with cgo.
func allThreads(trap, a1, a2, a3 uintptr) error {
	if _, _, errno := syscall.AllThreadsSyscall(trap, a1, a2, a3); errno != 0 {
		return fmt.Errorf("%w (ENOTSUP means built with cgo: build with CGO_ENABLED=0)", errno)
	}
	return nil
}
