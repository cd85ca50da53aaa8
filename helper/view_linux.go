package helper

import (
	"encoding/binary"
	"errors"
	"hash/fnv"
	"net/netip"
	"slices"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/quiltmesh/quilt-runtime/shared/policy"
	"github.com/quiltmesh/quilt-runtime/shared/wire"
)

// route is one route of table main at a node subnet, as much of it as a
// decision needs.
type route struct {
	id    uint64 // identity: a hash of the kernel's description of it
	tos   uint8
	proto uint8
	prio  uint32 // the metric
	oif   uint32 // the output interface; 0 when it has no single one (multipath, blackhole)
}

// ours is the ownership rule, the only one: a route is quilt's if and
// only if it carries wire.RouteProtocol. The view holds routes of table
// main only, so a route of ours in another table is never seen.
func (rt route) ours() bool {
	return rt.proto == wire.RouteProtocol
}

// view is the helper's view of the kernel: every route of table main at
// the policy's node subnets, whatever its protocol, type or metric, and
// every link that is up. Dumps build it and rtnetlink notifications keep it current:
// it never holds what the helper only expects its own requests to do.
type view struct {
	policy policy.Policy
	routes map[netip.Prefix][]route
	links  map[uint32]string // the names of the links that are up
	index  map[string]uint32 // and their indexes
	self   uint32            // port id of the helper's request socket

	// What the watcher has not been told yet: the prefixes whose routes
	// changed other than by the helper's own requests, and whether it must
	// compare every route instead (an allowed interface came up, or the
	// view was rebuilt after losing track).
	changed map[netip.Prefix]bool
	resync  bool

	// stale is set when the view may differ from the kernel: a
	// notification was lost or unreadable, a route was replaced (which
	// removes the old one without a notification), or the kernel refused a
	// request the view said it would take. The next decision rebuilds it.
	stale bool
}

func newView(p policy.Policy) *view {
	return &view{
		policy:  p,
		routes:  map[netip.Prefix][]route{},
		links:   map[uint32]string{},
		index:   map[string]uint32{},
		changed: map[netip.Prefix]bool{},
	}
}

// handle applies one message from the kernel: a notification, or a part
// of a dump.
func (v *view) handle(m netlink.Message) {
	switch m.Header.Type {
	case unix.RTM_NEWROUTE, unix.RTM_DELROUTE:
		v.handleRoute(m)
	case unix.RTM_NEWLINK, unix.RTM_DELLINK:
		v.handleLink(m)
	}
}

// handleRoute adds or removes one route. Both are idempotent: a
// notification that a dump already reflected changes nothing.
func (v *view) handleRoute(m netlink.Message) {
	dst, rt, ok := parseRoute(m.Data)
	if ok && v.policy.CheckPrefix(dst) != nil {
		return // not an IPv4 route of table main at a node subnet
	}
	if !ok || m.Header.Flags&netlink.Replace != 0 {
		v.stale = true
		return
	}
	here := v.routes[dst]
	i := slices.IndexFunc(here, func(x route) bool { return x.id == rt.id })
	switch {
	case m.Header.Type == unix.RTM_NEWROUTE && i < 0:
		v.routes[dst] = append(here, rt)
	case m.Header.Type == unix.RTM_DELROUTE && i >= 0:
		v.routes[dst] = slices.Delete(here, i, i+1) // an empty entry lasts until the next rebuild
	default:
		return
	}
	if m.Header.PID != v.self {
		v.changed[dst] = true
	}
}

// handleLink records a link's name and state. The kernel removes the IPv4
// routes of a link that goes down or away without a notification for
// any, so the view drops them itself.
func (v *view) handleLink(m netlink.Message) {
	index, name, up, ok := parseLink(m.Data)
	if !ok {
		v.stale = true
		return
	}
	up = up && m.Header.Type == unix.RTM_NEWLINK
	was, wasUp := v.links[index]
	delete(v.index, was)
	delete(v.links, index)
	if up {
		v.links[index] = name
		v.index[name] = index
	} else if wasUp {
		v.dropDown() // a link never up has no routes: a new veth costs nothing here
	}
	if up && !wasUp && m.Header.PID != v.self && v.policy.CheckInterface(name) == nil {
		v.resync = true // not a dump: routes the kernel refused while it was down can be added now
	}
}

// dropDown removes every route via a link that is down or gone, writing
// only the entries it changes.
func (v *view) dropDown() {
	down := func(rt route) bool {
		return rt.oif != 0 && v.links[rt.oif] == ""
	}
	for dst, here := range v.routes {
		if slices.ContainsFunc(here, down) {
			v.routes[dst] = slices.DeleteFunc(here, down)
			v.changed[dst] = true
		}
	}
}

// plan decides one add or delete, answering req in place, on the routes
// table main holds at exactly its prefix: nothing else (more-specific or
// covering routes, other tables, rules, addresses) plays a part. It
// returns the kernel requests that carry it out: first, and then, once
// first succeeded, then. After the policy's checks, an add of dst via
// ifname:
//   - a route at dst that is not ours, at any metric: conflict, nothing changes;
//   - nothing at dst: create ours;
//   - ours via ifname: unchanged, or moved if a second of ours has to go;
//   - ours via another interface: moved, by adding the new route beside
//     the old one, then deleting the old, so dst always has a route.
//
// A delete of dst removes every route of ours there; with none of ours
// but others, it is refused (not-owned); with nothing, it is absent.
func (v *view) plan(i int, req *wire.Record) (first, then []step) {
	err := v.policy.CheckPrefix(req.Dst)
	if err == nil && req.Op == wire.OpAdd {
		err = v.policy.CheckInterface(req.Ifname)
	}
	if errors.As(err, &req.Status) {
		return nil, nil
	}
	var ours []route
	foreign := 0
	for _, rt := range v.routes[req.Dst] {
		if rt.ours() {
			ours = append(ours, rt)
		} else {
			foreign++
		}
	}
	oif, known := v.index[req.Ifname]
	keep := slices.IndexFunc(ours, func(rt route) bool { return rt.oif == oif })
	switch {
	case req.Op == wire.OpDelete && len(ours) > 0:
		req.Result = wire.ResultDeleted
		return deleteRoutes(i, req.Dst, ours), nil
	case req.Op == wire.OpDelete && foreign > 0:
		req.Status = wire.StatusNotOwned
	case req.Op == wire.OpDelete:
		req.Result = wire.ResultAbsent
	case !known:
		req.Status = wire.StatusNoIface
	case foreign > 0:
		req.Status = wire.StatusConflict
	case len(ours) == 0:
		req.Result = wire.ResultCreated
		return []step{request(i, unix.RTM_NEWROUTE, netlink.Create|netlink.Excl, req.Dst, route{oif: oif})}, nil
	case keep < 0:
		req.Result = wire.ResultMoved
		add := request(i, unix.RTM_NEWROUTE, netlink.Create|netlink.Append, req.Dst, route{oif: oif})
		return []step{add}, deleteRoutes(i, req.Dst, ours)
	case len(ours) == 1:
		req.Result = wire.ResultUnchanged
	default:
		req.Result = wire.ResultMoved
		return deleteRoutes(i, req.Dst, slices.Delete(ours, keep, keep+1)), nil
	}
	return nil, nil
}

// step is one kernel request, and the record it serves.
type step struct {
	record int
	msg    netlink.Message
}

// deleteRoutes returns an RTM_DELROUTE for each of the routes.
func deleteRoutes(i int, dst netip.Prefix, routes []route) []step {
	var steps []step
	for _, rt := range routes {
		steps = append(steps, request(i, unix.RTM_DELROUTE, 0, dst, rt))
	}
	return steps
}

// request builds a route request for record i, the only kind the helper
// sends, and always for a route of table main with our protocol:
//   - RTM_NEWROUTE: our route to dst via rt.oif, scope link, unicast, with
//     netlink.Excl (create only if dst has no route at our tos and metric)
//     or netlink.Append (add after those); it can never replace a route;
//   - RTM_DELROUTE: naming rt's tos, metric and output interface too, so
//     the kernel deletes only a route that matches them all: one of ours.
func request(i int, typ netlink.HeaderType, flags netlink.HeaderFlags, dst netip.Prefix, rt route) step {
	rtm := unix.RtMsg{
		Family:   unix.AF_INET,
		Dst_len:  uint8(dst.Bits()),
		Tos:      rt.tos,
		Table:    unix.RT_TABLE_MAIN,
		Protocol: wire.RouteProtocol,
		Scope:    unix.RT_SCOPE_NOWHERE, // a delete: any scope
	}
	if typ == unix.RTM_NEWROUTE {
		rtm.Scope = unix.RT_SCOPE_LINK
		rtm.Type = unix.RTN_UNICAST
	}
	ae := netlink.NewAttributeEncoder()
	ae.Bytes(unix.RTA_DST, dst.Addr().AsSlice())
	ae.Uint32(unix.RTA_PRIORITY, rt.prio) // 0, the default metric, is the same as none
	ae.Uint32(unix.RTA_OIF, rt.oif)       // 0, no single interface, matches any in a delete
	attrs, _ := ae.Encode()               // fixed-size attributes: it cannot fail
	data, _ := binary.Append(nil, binary.NativeEndian, rtm)
	h := netlink.Header{Type: typ, Flags: netlink.Request | flags}
	return step{i, netlink.Message{Header: h, Data: append(data, attrs...)}}
}

// parseRoute reads a route message. dst is not valid when it is not an
// IPv4 route of table main with a destination; ok is false when the
// message cannot be read.
func parseRoute(b []byte) (dst netip.Prefix, rt route, ok bool) {
	var rtm unix.RtMsg
	n, err := binary.Decode(b, binary.NativeEndian, &rtm)
	if err != nil {
		return dst, rt, false
	}
	ad, err := netlink.NewAttributeDecoder(b[n:])
	if err != nil {
		return dst, rt, false
	}
	rt = route{tos: rtm.Tos, proto: rtm.Protocol}
	var addr []byte
	for ad.Next() {
		switch ad.Type() {
		case unix.RTA_DST:
			addr = ad.Bytes()
		case unix.RTA_PRIORITY:
			rt.prio = ad.Uint32()
		case unix.RTA_OIF:
			rt.oif = ad.Uint32()
		}
	}
	id := fnv.New64a()
	id.Write(b[:8])
	id.Write(b[n:]) // not rtm_flags: the kernel changes them without a notification
	rt.id = id.Sum64()
	ip, is4 := netip.AddrFromSlice(addr)
	if rtm.Family == unix.AF_INET && rtm.Table == unix.RT_TABLE_MAIN && is4 {
		dst = netip.PrefixFrom(ip, int(rtm.Dst_len))
	}
	return dst, rt, ad.Err() == nil
}

// parseLink reads a link message: its index and name, whether it is up,
// and whether it could be read.
func parseLink(b []byte) (index uint32, name string, up, ok bool) {
	var ifi unix.IfInfomsg
	n, err := binary.Decode(b, binary.NativeEndian, &ifi)
	if err != nil {
		return 0, "", false, false
	}
	ad, err := netlink.NewAttributeDecoder(b[n:])
	if err != nil {
		return 0, "", false, false
	}
	for ad.Next() {
		if ad.Type() == unix.IFLA_IFNAME {
			name = ad.String()
		}
	}
	return uint32(ifi.Index), name, ifi.Flags&unix.IFF_UP != 0, ad.Err() == nil
}
