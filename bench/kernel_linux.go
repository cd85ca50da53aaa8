package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"
)

// Route attributes of the helper's messages: main table, protocol 81,
// scope link, a unicast device route.
const (
	mainTable   = 254
	quiltProto  = 81
	nlAckBuffer = 32 << 20 // SO_RCVBUFFORCE: room for every ack of a batch
)

// nlConn is a raw rtnetlink socket opened in one namespace: the kernel
// floor, with nothing between the benchmark and the kernel but sendmsg and
// recvmsg.
type nlConn struct {
	fd    int
	ifidx uint32
	seq   uint32
	rbuf  []byte
	wbuf  []byte
}

// openNL opens the socket inside ns and looks up dev there.
func openNL(ns, dev string, batch int) (*nlConn, error) {
	c := &nlConn{fd: -1, rbuf: make([]byte, 1<<16)}
	err := inNetns(ns, func() error {
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		c.ifidx = uint32(ifi.Index)
		if c.fd, err = unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE); err != nil {
			return fmt.Errorf("netlink socket: %w", err)
		}
		return errors.Join(
			unix.Bind(c.fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}),
			// Every ack of a batch waits in the receive buffer until the
			// sendmsg returns; a full buffer would drop acks (ENOBUFS).
			unix.SetsockoptInt(c.fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, nlAckBuffer),
			// One sendmsg carries the whole batch.
			unix.SetsockoptInt(c.fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, max(batch*128, 1<<20)),
		)
	})
	if err != nil {
		c.close()
		return nil, fmt.Errorf("rtnetlink in %s: %w", ns, err)
	}
	return c, nil
}

func (c *nlConn) close() {
	if c.fd >= 0 {
		unix.Close(c.fd)
		c.fd = -1
	}
}

// appendRoute appends one route request: RTM_NEWROUTE (create, exclusive)
// via our device, or RTM_DELROUTE of our protocol's route; both ask for an
// ack. They are the messages quilt-route-helper sends.
func (c *nlConn) appendRoute(b []byte, add bool, dst netip.Prefix) []byte {
	c.seq++
	ne := binary.NativeEndian
	start := len(b)
	typ, flags := uint16(unix.RTM_DELROUTE), uint16(unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	scope, rtype := byte(unix.RT_SCOPE_NOWHERE), byte(unix.RTN_UNSPEC)
	if add {
		typ, flags = unix.RTM_NEWROUTE, flags|unix.NLM_F_CREATE|unix.NLM_F_EXCL
		scope, rtype = unix.RT_SCOPE_LINK, unix.RTN_UNICAST
	}
	b = append(b, make([]byte, unix.NLMSG_HDRLEN)...)
	b = append(b, unix.AF_INET, byte(dst.Bits()), 0, 0, 0, quiltProto, scope, rtype, 0, 0, 0, 0) // struct rtmsg
	attr := func(typ uint16, v []byte) {
		b = ne.AppendUint16(b, uint16(4+len(v)))
		b = ne.AppendUint16(b, typ)
		b = append(b, v...) // 4 bytes: already aligned
	}
	attr(unix.RTA_TABLE, ne.AppendUint32(nil, mainTable))
	a := dst.Addr().As4()
	attr(unix.RTA_DST, a[:])
	if add {
		attr(unix.RTA_OIF, ne.AppendUint32(nil, c.ifidx))
	}
	c.header(b[start:], typ, flags)
	return b
}

// header fills in the netlink header at the start of msg, which holds one
// whole message, with the next sequence number.
func (c *nlConn) header(msg []byte, typ, flags uint16) {
	ne := binary.NativeEndian
	ne.PutUint32(msg, uint32(len(msg)))
	ne.PutUint16(msg[4:], typ)
	ne.PutUint16(msg[6:], flags)
	ne.PutUint32(msg[8:], c.seq)
}

// deleteRoute deletes our route at dst, as `ip route del dst proto 81`
// does, and waits for the kernel's ack.
func (c *nlConn) deleteRoute(dst netip.Prefix) error {
	c.wbuf = c.appendRoute(c.wbuf[:0], false, dst)
	return c.send(c.wbuf, 1, []netip.Prefix{dst})
}

// setUp sets the device up or down with RTM_NEWLINK, as `ip link set dev
// DEV up` or `down` does, and waits for the kernel's ack. Down, the kernel
// flushes the device's IPv4 routes before it answers, without a
// notification for any of them.
func (c *nlConn) setUp(up bool) error {
	c.seq++
	ne := binary.NativeEndian
	flags := uint32(0)
	if up {
		flags = unix.IFF_UP
	}
	b := make([]byte, unix.NLMSG_HDRLEN, unix.NLMSG_HDRLEN+unix.SizeofIfInfomsg)
	b = append(b, unix.AF_UNSPEC, 0, 0, 0) // struct ifinfomsg: family, padding, type
	b = ne.AppendUint32(b, c.ifidx)
	b = ne.AppendUint32(b, flags)
	b = ne.AppendUint32(b, unix.IFF_UP) // the flags changed
	c.header(b, unix.RTM_NEWLINK, unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	return c.send(b, 1, nil)
}

// send writes the messages in one sendmsg and reads one ack per message,
// returning the first error the kernel answered with; dsts name the
// messages' routes in errors, if they are route messages.
func (c *nlConn) send(msgs []byte, count int, dsts []netip.Prefix) error {
	if _, err := unix.SendmsgN(c.fd, msgs, nil, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}, 0); err != nil {
		return fmt.Errorf("sendmsg: %w", err)
	}
	first := c.seq - uint32(count) + 1
	var kerr error
	for got := 0; got < count; {
		n, _, err := unix.Recvfrom(c.fd, c.rbuf, 0)
		if errors.Is(err, unix.ENOBUFS) {
			return fmt.Errorf("acks overran the socket's receive buffer (ENOBUFS): use a smaller batch: %w", err)
		}
		if err != nil {
			return fmt.Errorf("recvmsg: %w", err)
		}
		for b := c.rbuf[:n]; len(b) > 0; {
			ne := binary.NativeEndian
			l := int(ne.Uint32(b))
			if l < unix.NLMSG_HDRLEN+4 || l > len(b) {
				return fmt.Errorf("malformed netlink reply of %d bytes", l)
			}
			typ, seq, errno := ne.Uint16(b[4:]), ne.Uint32(b[8:]), -int32(ne.Uint32(b[unix.NLMSG_HDRLEN:]))
			if typ != unix.NLMSG_ERROR {
				return fmt.Errorf("unexpected netlink message type %d", typ)
			}
			if seq < first || seq > c.seq {
				return fmt.Errorf("ack for sequence %d, want %d-%d", seq, first, c.seq)
			}
			got++
			if errno != 0 && kerr == nil {
				what := "the request"
				if int(seq-first) < len(dsts) {
					what = dsts[seq-first].String()
				}
				kerr = fmt.Errorf("kernel refused %s: %w", what, unix.Errno(errno))
			}
			b = b[min((l+3)&^3, len(b)):]
		}
	}
	return kerr
}

// pipelined adds or deletes the routes batch messages per sendmsg, acks
// read back after each, and stops early at the deadline.
func (c *nlConn) pipelined(ctx context.Context, add bool, dsts []netip.Prefix, batch int, deadline time.Time) (done int, took time.Duration, err error) {
	start := time.Now()
	for done < len(dsts) && time.Now().Before(deadline) && ctx.Err() == nil {
		chunk := dsts[done:min(done+batch, len(dsts))]
		c.wbuf = c.wbuf[:0]
		for _, d := range chunk {
			c.wbuf = c.appendRoute(c.wbuf, add, d)
		}
		if err := c.send(c.wbuf, len(chunk), chunk); err != nil {
			return done, time.Since(start), err
		}
		done += len(chunk)
	}
	return done, time.Since(start), ctx.Err()
}

// sequential sends one message at a time and waits for its ack, timing
// each round trip.
func (c *nlConn) sequential(ctx context.Context, add bool, dsts []netip.Prefix, deadline time.Time) (lat []time.Duration, took time.Duration, err error) {
	lat = make([]time.Duration, 0, len(dsts))
	start := time.Now()
	for i, d := range dsts {
		if i%64 == 0 && (ctx.Err() != nil || time.Now().After(deadline)) {
			break
		}
		t0 := time.Now()
		c.wbuf = c.appendRoute(c.wbuf[:0], add, d)
		if err := c.send(c.wbuf, 1, dsts[i:i+1]); err != nil {
			return lat, time.Since(start), err
		}
		lat = append(lat, time.Since(t0))
	}
	return lat, time.Since(start), ctx.Err()
}
