package e2e

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/quiltmesh/quilt-runtime/helper"
	"github.com/quiltmesh/quilt-runtime/shared/wire"
)

// Exit codes of the child modes, read by the parent test.
const (
	childOK      = 0 // what the parent expected to be possible was
	childFailed  = 1 // something else went wrong; details on stderr
	childRefused = 3 // the helper closed the connection without answering
)

// child runs the test binary as a small client under another uid or
// capability set. mode is "hello:SOCKET" or "netlink-add:PREFIX:IFNAME".
func child(mode string) int {
	kind, arg, _ := strings.Cut(mode, ":")
	switch kind {
	case "hello":
		c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: arg, Net: "unixpacket"})
		if err != nil {
			fmt.Fprintln(os.Stderr, "dial:", err)
			return childFailed
		}
		defer c.Close()
		recs, err := exchange(c, wire.Record{Op: wire.OpHello, Tag: 7}.Encode())
		if errors.Is(err, io.EOF) || errors.Is(err, unix.ECONNRESET) || errors.Is(err, unix.EPIPE) {
			return childRefused
		}
		if err != nil || len(recs) != 1 || recs[0].Status != wire.StatusOK || recs[0].Tag != 7 {
			fmt.Fprintln(os.Stderr, "hello:", recs, err)
			return childFailed
		}
		return childOK
	case "netlink-add":
		// Without CAP_NET_ADMIN the kernel itself must refuse a route add.
		dst, ifname, _ := strings.Cut(arg, ":")
		r, err := helper.OpenRoutes(unix.RT_TABLE_MAIN, 81)
		if err != nil {
			fmt.Fprintln(os.Stderr, "open:", err)
			return childFailed
		}
		_, err = r.Add(netip.MustParsePrefix(dst), ifname)
		if errors.Is(err, unix.EPERM) {
			return childOK
		}
		fmt.Fprintln(os.Stderr, "want EPERM, got:", err)
		return childFailed
	}
	fmt.Fprintln(os.Stderr, "unknown child mode", mode)
	return childFailed
}
