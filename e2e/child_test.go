package e2e

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/quiltmesh/quilt-runtime/helper"
	"github.com/quiltmesh/quilt-runtime/shared/policy"
	"github.com/quiltmesh/quilt-runtime/shared/wire"
)

// Exit codes of the child modes, read by the parent test.
const (
	childOK      = 0 // what the parent expected to be possible was
	childFailed  = 1 // something else went wrong; details on stderr
	childRefused = 3 // the helper closed the connection without answering
)

// child runs the test binary as a small client under another uid or
// capability set. mode is "hello:SOCKET", "netlink-add:PREFIX:IFNAME" or
// "hostile:KIND:SOCKET" (see hostile).
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
		recs, err := exchange(c, wire.Record{Op: wire.OpHello, Tag: 7}.Append(nil))
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
		pol := policy.Policy{Cluster: netip.MustParsePrefix("10.42.0.0/16"), PrefixLen: 24, Interfaces: []string{ifname}}
		r, err := helper.OpenRoutes(pol)
		if err != nil {
			fmt.Fprintln(os.Stderr, "open:", err)
			return childFailed
		}
		reqs := []wire.Record{{Op: wire.OpAdd, Dst: netip.MustParsePrefix(dst), Ifname: ifname}}
		r.Apply(reqs)
		if reqs[0].Status == wire.StatusKernel && reqs[0].Errno == uint32(unix.EPERM) {
			return childOK
		}
		fmt.Fprintf(os.Stderr, "want EPERM, got: %+v\n", reqs[0])
		return childFailed
	case "hostile":
		return hostile(arg)
	}
	fmt.Fprintln(os.Stderr, "unknown child mode", mode)
	return childFailed
}

// hostile attacks the helper's socket as an allowed peer would, in one of
// three ways: "garbage" sends 2,000 random messages of random sizes,
// reconnecting whenever the helper hangs up, and exits; "idle" opens 8
// connections and never sends; "noread" sends hellos and never reads its
// answers. The last two run until killed.
func hostile(arg string) int {
	kind, sock, _ := strings.Cut(arg, ":")
	dial := func() *net.UnixConn {
		c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: sock, Net: "unixpacket"})
		if err != nil {
			fmt.Fprintln(os.Stderr, "dial:", err)
			os.Exit(childFailed)
		}
		return c
	}
	switch kind {
	case "garbage":
		rng := rand.New(rand.NewPCG(1, 2))
		c, answered, closed := dial(), 0, 0
		buf := make([]byte, 70000)
		for range 2000 {
			msg := make([]byte, 1+rng.IntN(200))
			for i := range msg {
				msg[i] = byte(rng.UintN(256))
			}
			if rng.IntN(4) == 0 { // a record of the right size, so decoding gets past the size check
				msg = msg[:min(len(msg), wire.Size)]
				msg = append(msg, make([]byte, wire.Size-len(msg))...)
				msg[0] = wire.Version
			}
			c.SetDeadline(time.Now().Add(5 * time.Second))
			_, err := c.Write(msg)
			if err == nil {
				_, err = c.Read(buf)
			}
			if err != nil { // hung up on us: broken framing
				closed++
				c.Close()
				c = dial()
				continue
			}
			answered++
		}
		fmt.Printf("garbage: %d answered, %d hung up\n", answered, closed)
		return childOK
	case "idle":
		for range 8 {
			defer dial().Close()
		}
		fmt.Println("idle: connected")
		select {}
	case "noread":
		c := dial()
		hello := wire.Record{Op: wire.OpHello}.Append(nil)
		sent := 0
		for {
			c.SetWriteDeadline(time.Now().Add(2 * time.Second))
			if _, err := c.Write(hello); err != nil {
				break // the helper's answers fill our buffer and its own: it is blocked on us
			}
			sent++
		}
		fmt.Printf("noread: %d sent, now blocked\n", sent)
		select {}
	}
	return childFailed
}
