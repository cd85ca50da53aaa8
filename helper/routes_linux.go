package helper

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/quiltmesh/quilt-runtime/shared/wire"
)

// Routes adds, deletes and lists the IPv4 routes of the main table that
// carry wire.RouteProtocol, the mark of the routes quilt owns. It is not
// safe for concurrent use: it looks, then acts.
type Routes struct{ c *netlink.Conn }

// route is one kernel route, as much of it as ownership needs.
type route struct {
	dst   netip.Prefix
	proto uint8
	oif   uint32
	table uint32
}

// OpenRoutes dials rtnetlink in strict mode, so that the kernel filters
// dumps by table and protocol and explains its refusals, with a receive
// buffer (SO_RCVBUFFORCE, allowed by CAP_NET_ADMIN) that holds the answers
// to a whole batch: they are all queued before the first is read.
func OpenRoutes() (*Routes, error) {
	c, err := netlink.Dial(unix.NETLINK_ROUTE, &netlink.Config{Strict: true})
	if err == nil {
		err = c.SetReadBuffer(8 << 20)
	}
	return &Routes{c: c}, err
}

// Apply carries out adds and deletes the server has checked against its
// policy, and skips every record whose err is already set. An add creates
// the route if there is none for dst, keeps it if ours via that interface
// already, moves it if ours via another, and is refused (conflict) if the
// route for dst is not ours; a delete removes our route, finds it absent,
// or is refused (not-owned). Each of the two phases, look up then act, is
// one pipelined round trip for the whole batch. A race with another
// writer fails the op (EEXIST, ENOENT, ESRCH); the frontend's resync
// tries again.
func (r *Routes) Apply(ops []wire.Record, errs []error) []wire.Result {
	res, msgs, todo := make([]wire.Result, len(ops)), []netlink.Message(nil), []int(nil)
	for i, op := range ops {
		if errs[i] == nil && (op.Op == wire.OpAdd || op.Op == wire.OpDelete) {
			// The route in charge of dst's network address (RTM_F_FIB_MATCH).
			msgs, todo = append(msgs, msg(unix.RTM_GETROUTE, 0, 0, 0, 0, unix.RTM_F_FIB_MATCH, netip.PrefixFrom(op.Dst.Addr(), 32), 0)), append(todo, i)
		}
	}
	found, lerrs := r.exchange(msgs)
	acting, oifs := []int(nil), map[string]uint32{} // oifs: this batch's interfaces, looked up once
	for k, i := range todo {
		op := ops[i]
		rt, perr := parseRoute(found[k])
		lerr := cmp.Or(lerrs[k], perr)
		// No route at all for dst, or one that cannot route (unreachable,
		// prohibit, blackhole): then an add may only create, and the
		// kernel refuses it (EEXIST) if dst has a route at our metric.
		if errors.Is(lerr, unix.ENETUNREACH) || errors.Is(lerr, unix.EHOSTUNREACH) || errors.Is(lerr, unix.EACCES) || errors.Is(lerr, unix.EINVAL) {
			lerr = nil
		}
		if _, ok := oifs[op.Ifname]; !ok && op.Op == wire.OpAdd {
			if ifi, err := net.InterfaceByName(op.Ifname); err == nil {
				oifs[op.Ifname] = uint32(ifi.Index)
			}
		}
		var m netlink.Message
		switch add, oif, exact, ours := op.Op == wire.OpAdd, oifs[op.Ifname], rt.dst == op.Dst, rt.proto == wire.RouteProtocol && rt.table == unix.RT_TABLE_MAIN; {
		case lerr != nil:
			errs[i] = fmt.Errorf("look up %v: %w", op.Dst, lerr)
		case add && oif == 0:
			errs[i] = fmt.Errorf("%w: %q", wire.StatusNoIface, op.Ifname)
		case exact && !ours:
			errs[i] = fmt.Errorf("%w: %v has route protocol %d in table %d", map[bool]wire.Status{true: wire.StatusConflict, false: wire.StatusNotOwned}[add], op.Dst, rt.proto, rt.table)
		case add && exact && rt.oif == oif:
			res[i] = wire.ResultUnchanged
		case add && exact:
			res[i], m = wire.ResultReplaced, msg(unix.RTM_NEWROUTE, netlink.Replace, wire.RouteProtocol, unix.RT_SCOPE_LINK, unix.RTN_UNICAST, 0, op.Dst, oif)
		case add:
			res[i], m = wire.ResultCreated, msg(unix.RTM_NEWROUTE, netlink.Create|netlink.Excl, wire.RouteProtocol, unix.RT_SCOPE_LINK, unix.RTN_UNICAST, 0, op.Dst, oif)
		case exact: // our protocol in the request makes the kernel match only our route
			res[i], m = wire.ResultDeleted, msg(unix.RTM_DELROUTE, 0, wire.RouteProtocol, unix.RT_SCOPE_NOWHERE, 0, 0, op.Dst, 0)
		default:
			res[i] = wire.ResultAbsent
		}
		if m.Header.Type != 0 {
			msgs, acting = append(msgs[:len(acting)], m), append(acting, i)
		}
	}
	_, aerrs := r.exchange(msgs[:len(acting)])
	for k, i := range acting {
		errs[i] = aerrs[k]
	}
	return res
}

// List returns our routes, with their interface names, as list records.
func (r *Routes) List(tag uint32) ([]wire.Record, error) {
	msgs, err := r.c.Execute(msg(unix.RTM_GETROUTE, netlink.Dump, wire.RouteProtocol, 0, 0, 0, netip.Prefix{}, 0))
	ifs, ierr := net.Interfaces()
	names := map[uint32]string{}
	for _, ifi := range ifs {
		names[uint32(ifi.Index)] = ifi.Name
	}
	var recs []wire.Record
	for _, m := range msgs {
		rt, perr := parseRoute(m.Data)
		if ierr = cmp.Or(ierr, perr); rt.proto == wire.RouteProtocol && rt.table == unix.RT_TABLE_MAIN {
			recs = append(recs, wire.Record{Op: wire.OpList, Result: wire.ResultRoute, Tag: tag, Dst: rt.dst, Ifname: names[rt.oif]})
		}
	}
	return recs, cmp.Or(err, ierr)
}

// parseRoute reads a route message from the kernel. A message of any
// family but IPv4 has table 0, which is never ours.
func parseRoute(b []byte) (rt route, err error) {
	if len(b) < unix.SizeofRtMsg || b[0] != unix.AF_INET {
		return rt, nil
	}
	rt.proto, rt.table = b[5], uint32(b[4])
	var addr [4]byte
	attrs, err := netlink.UnmarshalAttributes(b[unix.SizeofRtMsg:])
	for _, a := range attrs {
		switch v := a.Data; {
		case a.Type == unix.RTA_DST && len(v) == 4:
			addr = [4]byte(v)
		case a.Type == unix.RTA_OIF && len(v) == 4:
			rt.oif = binary.NativeEndian.Uint32(v)
		case a.Type == unix.RTA_TABLE && len(v) == 4:
			rt.table = binary.NativeEndian.Uint32(v)
		}
	}
	if err != nil {
		return route{}, fmt.Errorf("parse route: %w", err)
	}
	rt.dst = netip.PrefixFrom(netip.AddrFrom4(addr), int(b[1])).Masked()
	return rt, nil
}

// msg builds one route request: a struct rtmsg (whose protocol is also a
// dump filter under strict checking), then attributes: the main table for
// all but a lookup, which finds the route in charge whatever its table.
func msg(typ netlink.HeaderType, flags netlink.HeaderFlags, proto, scope, rtype uint8, rtmFlags uint32, dst netip.Prefix, oif uint32) netlink.Message {
	b := binary.NativeEndian.AppendUint32([]byte{unix.AF_INET, byte(max(dst.Bits(), 0)), 0, 0, 0, proto, scope, rtype}, rtmFlags)
	attr := func(typ uint16, v []byte) { // length, type, value: all ours are 4 bytes, so aligned
		b = append(binary.NativeEndian.AppendUint16(binary.NativeEndian.AppendUint16(b, uint16(4+len(v))), typ), v...)
	}
	if rtmFlags == 0 {
		attr(unix.RTA_TABLE, binary.NativeEndian.AppendUint32(nil, unix.RT_TABLE_MAIN))
	}
	if dst.IsValid() {
		attr(unix.RTA_DST, dst.Addr().AsSlice())
	}
	if oif != 0 {
		attr(unix.RTA_OIF, binary.NativeEndian.AppendUint32(nil, oif))
	}
	return netlink.Message{Header: netlink.Header{Type: typ, Flags: netlink.Request | netlink.Acknowledge | flags}, Data: b}
}

// exchange sends msgs in one sendmsg and reads, in order, the answer to
// each: for a lookup its route message, and for every request its error,
// nil for a plain acknowledgement.
func (r *Routes) exchange(msgs []netlink.Message) (data [][]byte, errs []error) {
	data, errs = make([][]byte, len(msgs)), make([]error, len(msgs))
	sent, err := r.c.SendMessages(msgs)
	i := 0
	for i < len(sent) && err == nil {
		got, rerr := r.c.Receive()
		var oe *netlink.OpError
		if errors.As(rerr, &oe) && oe.Sequence != 0 { // the kernel refused one request
			got = []netlink.Message{{Header: netlink.Header{Type: netlink.Error, Sequence: oe.Sequence}}}
		} else if err = rerr; err != nil {
			break
		}
		for _, m := range got {
			if i == len(sent) || m.Header.Sequence != sent[i].Header.Sequence {
				err = fmt.Errorf("netlink answer out of order: %+v", m.Header)
				break
			}
			if m.Header.Type == netlink.Error {
				errs[i], i = rerr, i+1
			} else {
				data[i] = m.Data // its acknowledgement follows
			}
		}
	}
	for ; i < len(msgs); i++ { // not sent, or not answered: the socket failed
		errs[i] = err
	}
	return data, errs
}
