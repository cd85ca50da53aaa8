package helper

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/quiltmesh/quilt-runtime/shared/wire"
)

// Routes adds, deletes and lists the IPv4 routes in one table that carry
// one route protocol number, the mark of the routes quilt owns. It is not
// safe for concurrent use: each operation looks, then acts.
type Routes struct {
	c     *netlink.Conn
	table uint32
	proto uint8
}

// route is one kernel route, as much of it as ownership needs.
type route struct {
	dst   netip.Prefix
	proto uint8
	oif   uint32
}

// OpenRoutes dials rtnetlink in strict mode, so that the kernel filters
// route dumps by table and protocol and explains its refusals.
func OpenRoutes(table uint32, proto uint8) (*Routes, error) {
	c, err := netlink.Dial(unix.NETLINK_ROUTE, &netlink.Config{Strict: true})
	return &Routes{c: c, table: table, proto: proto}, err
}

// Add makes dst go via the interface: create the route if absent, keep it
// if ours there already, move it in one request if ours elsewhere, and
// refuse if any route for dst is not ours. A race with another writer
// (EEXIST, ENOENT) is answered by looking again, once.
func (r *Routes) Add(dst netip.Prefix, ifname string) (wire.Result, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return 0, fmt.Errorf("%w: %q: %w", wire.StatusNoIface, ifname, err)
	}
	for try := 0; ; try++ {
		found, err := r.dump(0, dst)
		if i := slices.IndexFunc(found, func(rt route) bool { return rt.proto != r.proto }); err == nil && i >= 0 {
			err = fmt.Errorf("%w: %v has route protocol %d", wire.StatusConflict, dst, found[i].proto)
		}
		if err != nil || slices.ContainsFunc(found, func(rt route) bool { return rt.oif == uint32(ifi.Index) }) {
			return wire.ResultUnchanged, err
		}
		res, flags := wire.ResultCreated, netlink.Create|netlink.Excl
		if len(found) > 0 {
			res, flags = wire.ResultReplaced, netlink.Replace
		}
		_, err = r.exec(unix.RTM_NEWROUTE, flags|netlink.Acknowledge, r.proto, unix.RT_SCOPE_LINK, unix.RTN_UNICAST, dst, uint32(ifi.Index))
		if try > 0 || !(errors.Is(err, unix.EEXIST) || errors.Is(err, unix.ENOENT)) {
			return res, err
		}
	}
}

// Delete removes our route for dst. Absent is success; a route for dst that
// is not ours is refused and left alone. A race (ESRCH, ENOENT) is answered
// by looking again, once.
func (r *Routes) Delete(dst netip.Prefix) (wire.Result, error) {
	for try := 0; ; try++ {
		found, err := r.dump(0, dst)
		if err != nil || len(found) == 0 {
			return wire.ResultAbsent, err
		}
		if !slices.ContainsFunc(found, func(rt route) bool { return rt.proto == r.proto }) {
			return 0, fmt.Errorf("%w: %v has route protocol %d", wire.StatusNotOwned, dst, found[0].proto)
		}
		// Our protocol in the request makes the kernel match only our route.
		_, err = r.exec(unix.RTM_DELROUTE, netlink.Acknowledge, r.proto, unix.RT_SCOPE_NOWHERE, 0, dst, 0)
		if try > 0 || !(errors.Is(err, unix.ESRCH) || errors.Is(err, unix.ENOENT)) {
			return wire.ResultDeleted, err
		}
	}
}

// List returns our routes, with their interface names, as list records.
func (r *Routes) List(tag uint32) ([]wire.Record, error) {
	routes, err := r.dump(r.proto, netip.Prefix{})
	recs := make([]wire.Record, 0, len(routes))
	for _, rt := range routes {
		ifi, ierr := net.InterfaceByIndex(int(rt.oif))
		if ierr != nil {
			return nil, fmt.Errorf("route %v: interface %d: %w", rt.dst, rt.oif, ierr)
		}
		recs = append(recs, wire.Record{Op: wire.OpList, Result: wire.ResultRoute, Tag: tag, Dst: rt.dst, Ifname: ifi.Name})
	}
	return recs, err
}

// dump lists the IPv4 routes of our table: only those of proto if it is
// not zero, and only those for exactly dst if it is valid.
func (r *Routes) dump(proto uint8, dst netip.Prefix) ([]route, error) {
	msgs, err := r.exec(unix.RTM_GETROUTE, netlink.Dump, proto, 0, 0, netip.Prefix{}, 0)
	var out []route
	for _, m := range msgs {
		if len(m.Data) < unix.SizeofRtMsg || m.Data[0] != unix.AF_INET {
			continue
		}
		rt, table, addr := route{proto: m.Data[5]}, uint32(m.Data[4]), [4]byte{}
		ad, err := netlink.NewAttributeDecoder(m.Data[unix.SizeofRtMsg:])
		if err != nil {
			return nil, fmt.Errorf("parse route: %w", err)
		}
		for ad.Next() {
			switch ad.Type() {
			case unix.RTA_DST:
				copy(addr[:], ad.Bytes())
			case unix.RTA_OIF:
				rt.oif = ad.Uint32()
			case unix.RTA_TABLE:
				table = ad.Uint32()
			}
		}
		if err := ad.Err(); err != nil {
			return nil, fmt.Errorf("parse route: %w", err)
		}
		rt.dst = netip.PrefixFrom(netip.AddrFrom4(addr), int(m.Data[1])).Masked()
		if table == r.table && (proto == 0 || rt.proto == proto) && (!dst.IsValid() || rt.dst == dst) {
			out = append(out, rt)
		}
	}
	return out, err
}

// exec sends one route message for our table: a struct rtmsg, whose
// protocol is also a dump filter under strict checking, then attributes.
func (r *Routes) exec(typ netlink.HeaderType, flags netlink.HeaderFlags, proto, scope, rtype uint8, dst netip.Prefix, oif uint32) ([]netlink.Message, error) {
	ae := netlink.NewAttributeEncoder()
	ae.Uint32(unix.RTA_TABLE, r.table)
	hdr := []byte{unix.AF_INET, 0, 0, 0, 0, proto, scope, rtype, 0, 0, 0, 0}
	if dst.IsValid() {
		a := dst.Addr().As4()
		ae.Bytes(unix.RTA_DST, a[:])
		hdr[1] = byte(dst.Bits())
	}
	if oif != 0 {
		ae.Uint32(unix.RTA_OIF, oif)
	}
	attrs, err := ae.Encode()
	if err != nil {
		return nil, err
	}
	return r.c.Execute(netlink.Message{Header: netlink.Header{Type: typ, Flags: netlink.Request | flags}, Data: append(hdr, attrs...)})
}
