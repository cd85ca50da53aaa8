package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// observer follows, from rtnetlink's IPv4 route notifications, which of
// the plan's peers have a route of ours (table main, protocol 81, via the
// device) in one namespace: what the drift repair rows wait on, so they
// never sleep a fixed time.
type observer struct {
	ns    string
	fd    int // joined to RTNLGRP_IPV4_ROUTE
	ifidx uint32
	peers map[netip.Prefix]bool
	ours  map[netip.Prefix]bool // as the last notification or dump left it
	dumps int                   // dumps that filled ours: one at the start, one per ENOBUFS
	buf   []byte
}

// errNotBack means a route, or every route, did not come back in time.
var errNotBack = errors.New("not back in time")

// openObserver joins the notification group inside ns, then fills the
// view from a dump, so no change falls between the two.
func openObserver(ns string, ifidx uint32, peers []netip.Prefix) (*observer, error) {
	o := &observer{ns: ns, fd: -1, ifidx: ifidx, peers: map[netip.Prefix]bool{}, ours: map[netip.Prefix]bool{}, buf: make([]byte, 1<<16)}
	for _, p := range peers {
		o.peers[p] = true
	}
	err := inNetns(ns, func() error {
		var err error
		if o.fd, err = unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE); err != nil {
			return err
		}
		return errors.Join(
			unix.Bind(o.fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1 << (unix.RTNLGRP_IPV4_ROUTE - 1)}),
			// Room for a notification per route when every route comes
			// back at once; if they overrun it anyway, a dump catches up.
			unix.SetsockoptInt(o.fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, nlAckBuffer),
		)
	})
	if err == nil {
		err = o.resync()
	}
	if err != nil {
		o.close()
		return nil, fmt.Errorf("route notifications in %s: %w", ns, err)
	}
	return o, nil
}

func (o *observer) close() {
	if o.fd >= 0 {
		unix.Close(o.fd)
		o.fd = -1
	}
}

// resync replaces the view with a dump of the namespace's IPv4 routes.
func (o *observer) resync() error {
	var rib []byte
	err := inNetns(o.ns, func() error {
		var err error
		rib, err = syscall.NetlinkRIB(syscall.RTM_GETROUTE, syscall.AF_INET)
		return err
	})
	if err != nil {
		return fmt.Errorf("dump routes: %w", err)
	}
	clear(o.ours)
	o.dumps++
	return o.apply(rib)
}

// apply applies the route messages in b (a notification, or a dump).
func (o *observer) apply(b []byte) error {
	msgs, err := syscall.ParseNetlinkMessage(b)
	if err != nil {
		return fmt.Errorf("route message: %w", err)
	}
	for i := range msgs {
		m := &msgs[i]
		if dst, ok := o.parse(m); ok && m.Header.Type == syscall.RTM_NEWROUTE {
			o.ours[dst] = true
		} else if ok {
			delete(o.ours, dst)
		}
	}
	return nil
}

// parse returns the destination of a route message, if it is about a
// route of ours via the device at one of the plan's peers.
func (o *observer) parse(m *syscall.NetlinkMessage) (netip.Prefix, bool) {
	if (m.Header.Type != syscall.RTM_NEWROUTE && m.Header.Type != syscall.RTM_DELROUTE) || len(m.Data) < syscall.SizeofRtMsg {
		return netip.Prefix{}, false
	}
	family, bits, table, proto := m.Data[0], int(m.Data[1]), uint32(m.Data[4]), m.Data[5]
	attrs, err := syscall.ParseNetlinkRouteAttr(m)
	if err != nil {
		return netip.Prefix{}, false
	}
	var dst netip.Addr
	var oif uint32
	for _, a := range attrs {
		switch {
		case a.Attr.Type == syscall.RTA_TABLE && len(a.Value) == 4:
			table = binary.NativeEndian.Uint32(a.Value)
		case a.Attr.Type == syscall.RTA_OIF && len(a.Value) == 4:
			oif = binary.NativeEndian.Uint32(a.Value)
		case a.Attr.Type == syscall.RTA_DST:
			dst, _ = netip.AddrFromSlice(a.Value)
		}
	}
	if family != syscall.AF_INET || table != mainTable || proto != quiltProto || oif != o.ifidx || !dst.IsValid() {
		return netip.Prefix{}, false
	}
	p := netip.PrefixFrom(dst, bits)
	return p, o.peers[p]
}

// drain applies every notification queued, without waiting. Notifications
// the socket had to drop (ENOBUFS) are made up for by a dump.
func (o *observer) drain() error {
	for {
		n, _, err := unix.Recvfrom(o.fd, o.buf, unix.MSG_DONTWAIT)
		switch {
		case errors.Is(err, unix.EAGAIN):
			return nil
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.ENOBUFS):
			if err := o.resync(); err != nil {
				return err
			}
			continue
		case err != nil:
			return fmt.Errorf("read route notifications: %w", err)
		}
		if err := o.apply(o.buf[:n]); err != nil {
			return err
		}
	}
}

// wait applies notifications as they arrive until done holds, ctx ends or
// until passes. It drains every notification already queued before it
// asks done the first time, so done never judges a view older than the
// call: a change the kernel acknowledged before wait began is in it.
func (o *observer) wait(ctx context.Context, until time.Time, done func() bool) error {
	if err := o.drain(); err != nil {
		return err
	}
	for !done() {
		left := time.Until(until)
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case left <= 0:
			return errNotBack
		}
		// Wake at least every 100ms to notice ctx.
		fds := []unix.PollFd{{Fd: int32(o.fd), Events: unix.POLLIN}}
		_, err := unix.Poll(fds, int(min(left, 100*time.Millisecond)/time.Millisecond)+1)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("poll route notifications: %w", err)
		}
		if err := o.drain(); err != nil {
			return err
		}
	}
	return nil
}
