package helper

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/quiltmesh/quilt-runtime/shared/policy"
	"github.com/quiltmesh/quilt-runtime/shared/wire"
)

// Unit tests of the view and the decisions, on messages built as the
// kernel builds them; e2e/ runs the helper against the real kernel.

var testPolicy = policy.Policy{Cluster: netip.MustParsePrefix("10.42.0.0/16"), PrefixLen: 24, Interfaces: []string{"vxlan100", "vxlan101", "vxlan102"}}

// Link indexes of the test view.
const (
	vx100 = 10
	vx101 = 11
	eth0  = 2
)

// kroute describes a route for routeMsg.
type kroute struct {
	dst   string
	proto uint8
	table uint8
	rtype uint8
	tos   uint8
	prio  uint32
	oif   uint32
}

// routeMsg builds a route message as the kernel sends it in a dump or a
// notification.
func routeMsg(r kroute) []byte {
	p := netip.MustParsePrefix(r.dst)
	rtm := unix.RtMsg{Family: unix.AF_INET, Dst_len: uint8(p.Bits()), Tos: r.tos, Table: r.table, Protocol: r.proto,
		Scope: unix.RT_SCOPE_LINK, Type: r.rtype}
	if rtm.Table == 0 {
		rtm.Table = unix.RT_TABLE_MAIN
	}
	if rtm.Type == 0 {
		rtm.Type = unix.RTN_UNICAST
	}
	b, _ := binary.Append(nil, binary.NativeEndian, rtm)
	ae := netlink.NewAttributeEncoder()
	ae.Uint32(unix.RTA_TABLE, uint32(rtm.Table))
	ae.Bytes(unix.RTA_DST, p.Addr().AsSlice())
	if r.prio != 0 {
		ae.Uint32(unix.RTA_PRIORITY, r.prio)
	}
	if r.oif != 0 {
		ae.Uint32(unix.RTA_OIF, r.oif)
	}
	attrs, err := ae.Encode()
	if err != nil {
		panic(err)
	}
	return append(b, attrs...)
}

// linkMsg builds a link message.
func linkMsg(index int32, name string, up bool) []byte {
	ifi := unix.IfInfomsg{Index: index}
	if up {
		ifi.Flags = unix.IFF_UP
	}
	b, _ := binary.Append(nil, binary.NativeEndian, ifi)
	ae := netlink.NewAttributeEncoder()
	ae.String(unix.IFLA_IFNAME, name)
	attrs, _ := ae.Encode()
	return append(b, attrs...)
}

func message(typ netlink.HeaderType, flags netlink.HeaderFlags, pid uint32, data []byte) netlink.Message {
	return netlink.Message{Header: netlink.Header{Type: typ, Flags: flags, PID: pid}, Data: data}
}

// testView has the links vxlan100, vxlan101 and eth0, up, and the routes.
func testView(t *testing.T, routes ...kroute) *view {
	t.Helper()
	v := newView(testPolicy)
	v.self = 1
	for _, l := range []struct {
		index int32
		name  string
	}{{vx100, "vxlan100"}, {vx101, "vxlan101"}, {eth0, "eth0"}} {
		v.handle(message(unix.RTM_NEWLINK, 0, 0, linkMsg(l.index, l.name, true)))
	}
	for _, r := range routes {
		v.handle(message(unix.RTM_NEWROUTE, netlink.Multi, 1, routeMsg(r)))
	}
	if v.stale {
		t.Fatal("the view could not read its own test messages")
	}
	clear(v.changed)
	v.resync = false
	return v
}

// describe renders planned requests for comparison: type, flags, and the
// fields a kernel would match on.
func describe(steps []step) string {
	var out []string
	for _, s := range steps {
		var rtm unix.RtMsg
		n, _ := binary.Decode(s.msg.Data, binary.NativeEndian, &rtm)
		ad, _ := netlink.NewAttributeDecoder(s.msg.Data[n:])
		var oif, prio uint32
		var dst []byte
		for ad.Next() {
			switch ad.Type() {
			case unix.RTA_OIF:
				oif = ad.Uint32()
			case unix.RTA_PRIORITY:
				prio = ad.Uint32()
			case unix.RTA_DST:
				dst = ad.Bytes()
			}
		}
		addr, _ := netip.AddrFromSlice(dst)
		kind := "del"
		if s.msg.Header.Type == unix.RTM_NEWROUTE {
			kind = "new"
			switch {
			case s.msg.Header.Flags&netlink.Excl != 0:
				kind += "+excl"
			case s.msg.Header.Flags&netlink.Append != 0:
				kind += "+append"
			}
		}
		out = append(out, fmt.Sprintf("%s %v/%d proto %d table %d tos %d metric %d oif %d", kind, addr, rtm.Dst_len, rtm.Protocol, rtm.Table, rtm.Tos, prio, oif))
	}
	return strings.Join(out, "; ")
}

func TestPlan(t *testing.T) {
	add := func(ifname string) wire.Record {
		return wire.Record{Op: wire.OpAdd, Dst: netip.MustParsePrefix("10.42.6.0/24"), Ifname: ifname}
	}
	del := wire.Record{Op: wire.OpDelete, Dst: netip.MustParsePrefix("10.42.6.0/24")}
	ours := kroute{dst: "10.42.6.0/24", proto: wire.RouteProtocol, oif: vx100}
	static := kroute{dst: "10.42.6.0/24", proto: unix.RTPROT_STATIC, oif: vx100}
	for _, tc := range []struct {
		name        string
		routes      []kroute
		req         wire.Record
		res         wire.Result
		status      wire.Status
		first, then string
	}{
		{name: "add, nothing there", req: add("vxlan100"), res: wire.ResultCreated,
			first: "new+excl 10.42.6.0/24 proto 81 table 254 tos 0 metric 0 oif 10"},
		{name: "add, ours there", routes: []kroute{ours}, req: add("vxlan100"), res: wire.ResultUnchanged},
		{name: "add, ours via another", routes: []kroute{ours}, req: add("vxlan101"), res: wire.ResultMoved,
			first: "new+append 10.42.6.0/24 proto 81 table 254 tos 0 metric 0 oif 11",
			then:  "del 10.42.6.0/24 proto 81 table 254 tos 0 metric 0 oif 10"},
		{name: "add, two of ours", routes: []kroute{ours, {dst: "10.42.6.0/24", proto: wire.RouteProtocol, oif: vx101, prio: 7}},
			req: add("vxlan100"), res: wire.ResultMoved, first: "del 10.42.6.0/24 proto 81 table 254 tos 0 metric 7 oif 11"},
		{name: "add, foreign there", routes: []kroute{static}, req: add("vxlan100"), status: wire.StatusConflict},
		{name: "add, foreign at another metric", routes: []kroute{{dst: "10.42.6.0/24", proto: unix.RTPROT_BOOT, prio: 100, oif: eth0}},
			req: add("vxlan100"), status: wire.StatusConflict},
		{name: "add, foreign behind ours", routes: []kroute{ours, static}, req: add("vxlan101"), status: wire.StatusConflict},
		{name: "add, blackhole there", routes: []kroute{{dst: "10.42.6.0/24", proto: unix.RTPROT_BOOT, rtype: unix.RTN_BLACKHOLE}},
			req: add("vxlan100"), status: wire.StatusConflict},
		{name: "add, only more-specific and covering routes", routes: []kroute{
			{dst: "10.42.6.0/26", proto: unix.RTPROT_BOOT, oif: eth0}, {dst: "10.42.6.0/32", proto: unix.RTPROT_BOOT, oif: eth0},
			{dst: "10.42.0.0/16", proto: unix.RTPROT_BOOT, rtype: unix.RTN_UNREACHABLE}, {dst: "10.0.0.0/8", proto: unix.RTPROT_BOOT, oif: eth0}},
			req: add("vxlan100"), res: wire.ResultCreated, first: "new+excl 10.42.6.0/24 proto 81 table 254 tos 0 metric 0 oif 10"},
		{name: "add, ours in another table only", routes: []kroute{{dst: "10.42.6.0/24", proto: wire.RouteProtocol, table: 100, oif: vx100}},
			req: add("vxlan100"), res: wire.ResultCreated, first: "new+excl 10.42.6.0/24 proto 81 table 254 tos 0 metric 0 oif 10"},
		{name: "add via an allowed interface that is absent", req: add("vxlan102"), status: wire.StatusNoIface},
		{name: "add via a name not allowed", req: add("vxlan101x"), status: wire.StatusIfaceDenied},
		{name: "add via an interface not allowed", routes: []kroute{ours}, req: add("eth0"), status: wire.StatusIfaceDenied},
		{name: "add outside the cluster", req: wire.Record{Op: wire.OpAdd, Dst: netip.MustParsePrefix("10.43.6.0/24"), Ifname: "vxlan100"},
			status: wire.StatusOutsideCluster},
		{name: "delete ours", routes: []kroute{ours}, req: del, res: wire.ResultDeleted, first: "del 10.42.6.0/24 proto 81 table 254 tos 0 metric 0 oif 10"},
		{name: "delete ours beside foreign", routes: []kroute{static, ours}, req: del, res: wire.ResultDeleted,
			first: "del 10.42.6.0/24 proto 81 table 254 tos 0 metric 0 oif 10"},
		{name: "delete two of ours", routes: []kroute{ours, {dst: "10.42.6.0/24", proto: wire.RouteProtocol, tos: 4, oif: vx101}}, req: del,
			res:   wire.ResultDeleted,
			first: "del 10.42.6.0/24 proto 81 table 254 tos 0 metric 0 oif 10; del 10.42.6.0/24 proto 81 table 254 tos 4 metric 0 oif 11"},
		{name: "delete, foreign only", routes: []kroute{static}, req: del, status: wire.StatusNotOwned},
		{name: "delete, nothing there", routes: []kroute{{dst: "10.42.6.0/25", proto: wire.RouteProtocol, oif: vx100}}, req: del, res: wire.ResultAbsent},
	} {
		v := testView(t, tc.routes...)
		req := tc.req
		first, then := v.plan(3, &req)
		if req.Result != tc.res || req.Status != tc.status {
			t.Errorf("%s: %v %v, want %v %v", tc.name, req.Result, req.Status, tc.res, tc.status)
			continue
		}
		if got := describe(first); got != tc.first {
			t.Errorf("%s: first\n  %s\nwant\n  %s", tc.name, got, tc.first)
		}
		if got := describe(then); got != tc.then {
			t.Errorf("%s: then\n  %s\nwant\n  %s", tc.name, got, tc.then)
		}
		for _, s := range slices.Concat(first, then) {
			if s.record != 3 {
				t.Errorf("%s: a step for record %d, want 3", tc.name, s.record)
			}
		}
	}
}

// countRoutes is the number of routes in the view.
func countRoutes(v *view) int {
	n := 0
	for _, here := range v.routes {
		n += len(here)
	}
	return n
}

func TestViewNotifications(t *testing.T) {
	ours := routeMsg(kroute{dst: "10.42.6.0/24", proto: wire.RouteProtocol, oif: vx100})
	dst := netip.MustParsePrefix("10.42.6.0/24")
	v := testView(t)
	// A notification of another process's change is news for the watcher.
	v.handle(message(unix.RTM_NEWROUTE, netlink.Create|netlink.Excl, 99, ours))
	if len(v.routes[dst]) != 1 || !v.changed[dst] {
		t.Fatalf("after a new route: %v, changed %v", v.routes, v.changed)
	}
	// The same again (a dump saw it already): no change.
	clear(v.changed)
	v.handle(message(unix.RTM_NEWROUTE, netlink.Create|netlink.Excl, 99, ours))
	if len(v.routes[dst]) != 1 || v.changed[dst] {
		t.Fatalf("after the same route again: %v, changed %v", v.routes, v.changed)
	}
	// The same route at another metric is another route.
	v.handle(message(unix.RTM_NEWROUTE, 0, 99, routeMsg(kroute{dst: "10.42.6.0/24", proto: wire.RouteProtocol, oif: vx100, prio: 5})))
	if len(v.routes[dst]) != 2 {
		t.Fatalf("two routes at two metrics: %v", v.routes)
	}
	// Deleted, twice: idempotent; the view forgets the prefix.
	v.handle(message(unix.RTM_DELROUTE, 0, 99, ours))
	v.handle(message(unix.RTM_DELROUTE, 0, 99, ours))
	if len(v.routes[dst]) != 1 {
		t.Fatalf("after the delete: %v", v.routes)
	}
	// The helper's own changes are not news.
	clear(v.changed)
	v.handle(message(unix.RTM_NEWROUTE, netlink.Create|netlink.Excl, v.self, ours))
	if len(v.routes[dst]) != 2 || v.changed[dst] {
		t.Fatalf("after our own add: %v, changed %v", v.routes, v.changed)
	}
	// Routes that no decision depends on are not kept.
	for _, r := range []kroute{
		{dst: "10.42.7.0/25", proto: unix.RTPROT_BOOT, oif: eth0},
		{dst: "10.43.7.0/24", proto: unix.RTPROT_BOOT, oif: eth0},
		{dst: "10.42.7.0/24", proto: wire.RouteProtocol, table: 100, oif: vx100},
		{dst: "0.0.0.0/0", proto: unix.RTPROT_BOOT, oif: eth0},
	} {
		v.handle(message(unix.RTM_NEWROUTE, 0, 99, routeMsg(r)))
	}
	if countRoutes(v) != 2 || v.stale {
		t.Fatalf("routes that do not matter were kept: %v (stale %v)", v.routes, v.stale)
	}
	// A replace removes a route without telling which: the view is stale.
	v.handle(message(unix.RTM_NEWROUTE, netlink.Replace, 99, ours))
	if !v.stale {
		t.Fatal("a replace did not make the view stale")
	}
	// So does a message the view cannot read.
	v = testView(t)
	v.handle(message(unix.RTM_NEWROUTE, 0, 99, ours[:5]))
	if !v.stale {
		t.Fatal("a short route message did not make the view stale")
	}
}

func TestViewLinks(t *testing.T) {
	v := testView(t,
		kroute{dst: "10.42.6.0/24", proto: wire.RouteProtocol, oif: vx100},
		kroute{dst: "10.42.7.0/24", proto: wire.RouteProtocol, oif: vx101},
		kroute{dst: "10.42.8.0/24", proto: unix.RTPROT_BOOT, rtype: unix.RTN_BLACKHOLE})
	// vxlan100 goes down: the kernel drops its routes without a word, so
	// does the view, and says so.
	v.handle(message(unix.RTM_NEWLINK, 0, 99, linkMsg(vx100, "vxlan100", false)))
	if countRoutes(v) != 2 || !v.changed[netip.MustParsePrefix("10.42.6.0/24")] || v.resync {
		t.Fatalf("after vxlan100 went down: %v, changed %v, resync %v", v.routes, v.changed, v.resync)
	}
	// Up again: the watcher must compare everything (its repairs failed
	// while the interface was down).
	v.handle(message(unix.RTM_NEWLINK, 0, 99, linkMsg(vx100, "vxlan100", true)))
	if !v.resync || v.index["vxlan100"] != vx100 {
		t.Fatalf("after vxlan100 came up: resync %v, index %v", v.resync, v.index)
	}
	// An interface that is not allowed coming up is nobody's business.
	v.resync = false
	v.handle(message(unix.RTM_NEWLINK, 0, 99, linkMsg(40, "veth1234", true)))
	if v.resync {
		t.Fatal("a veth coming up asked for a resync")
	}
	// Renamed, then gone: no name points at it any more.
	v.handle(message(unix.RTM_NEWLINK, 0, 99, linkMsg(vx101, "renamed", true)))
	v.handle(message(unix.RTM_DELLINK, 0, 99, linkMsg(vx101, "renamed", false)))
	if _, ok := v.index["vxlan101"]; ok || countRoutes(v) != 1 {
		t.Fatalf("after vxlan101 was renamed and deleted: index %v, routes %v", v.index, v.routes)
	}
	if _, ok := v.index["renamed"]; ok {
		t.Fatal("a deleted link is still in the index")
	}
}

// FuzzRouteReplies: whatever the kernel sends, the view does not panic,
// and every request it then plans can only touch a route of ours: a delete
// always names our protocol, a new route is always ours and only created
// or appended, never a replacement.
func FuzzRouteReplies(f *testing.F) {
	f.Add(routeMsg(kroute{dst: "10.42.2.0/24", proto: wire.RouteProtocol, oif: vx100}))
	f.Add(routeMsg(kroute{dst: "10.42.2.0/24", proto: unix.RTPROT_STATIC, oif: vx101, prio: 9}))
	f.Add(linkMsg(vx101, "vxlan101", false))
	f.Add(routeMsg(kroute{dst: "0.0.0.0/0", proto: 81, oif: 1})[:14])
	f.Fuzz(func(t *testing.T, data []byte) {
		v := testView(t, kroute{dst: "10.42.2.0/24", proto: wire.RouteProtocol, oif: vx101})
		for _, typ := range []netlink.HeaderType{unix.RTM_NEWROUTE, unix.RTM_NEWLINK, unix.RTM_DELROUTE, unix.RTM_NEWROUTE, unix.RTM_DELLINK} {
			v.handle(message(typ, 0, 99, data))
		}
		for dst := range v.routes {
			for _, req := range []wire.Record{{Op: wire.OpAdd, Dst: dst, Ifname: "vxlan100"}, {Op: wire.OpDelete, Dst: dst}} {
				first, then := v.plan(0, &req)
				for _, s := range slices.Concat(first, then) {
					var rtm unix.RtMsg
					binary.Decode(s.msg.Data, binary.NativeEndian, &rtm)
					flags := s.msg.Header.Flags
					if rtm.Protocol != wire.RouteProtocol || rtm.Table != unix.RT_TABLE_MAIN || flags&netlink.Replace != 0 {
						t.Fatalf("a request that could touch a route not ours: %+v %+v", s.msg.Header, rtm)
					}
					if s.msg.Header.Type == unix.RTM_NEWROUTE && flags&(netlink.Excl|netlink.Append) == 0 {
						t.Fatalf("a new route neither exclusive nor appended: %+v", s.msg.Header)
					}
				}
			}
		}
	})
}
