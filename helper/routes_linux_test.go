package helper

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"iter"
	"net"
	"net/netip"
	"testing"

	"github.com/mdlayher/netlink"
	"github.com/mdlayher/netlink/nltest"
	"golang.org/x/sys/unix"

	"github.com/quiltmesh/quilt-runtime/shared/wire"
)

// routeMsg builds a route message as the kernel sends it in a dump.
func routeMsg(dst string, proto uint8, table uint32, oif uint32) []byte {
	p := netip.MustParsePrefix(dst)
	a := p.Addr().As4()
	attrs := nltest.MustMarshalAttributes([]netlink.Attribute{
		{Type: unix.RTA_TABLE, Data: binary.NativeEndian.AppendUint32(nil, table)},
		{Type: unix.RTA_DST, Data: a[:]},
		{Type: unix.RTA_OIF, Data: binary.NativeEndian.AppendUint32(nil, oif)},
	})
	return append([]byte{unix.AF_INET, byte(p.Bits()), 0, 0, byte(min(table, 252)), proto, unix.RT_SCOPE_LINK, unix.RTN_UNICAST, 0, 0, 0, 0}, attrs...)
}

// fakeKernel answers lookups and dumps from its table and acknowledges
// every other request, recording them. Unit tests only: e2e/ runs the
// helper against the real kernel.
type fakeKernel struct {
	table [][]byte // route messages
	sent  []netlink.Message
	err   int                 // errno for mutations, 0 for success
	queue [][]netlink.Message // datagrams not yet received
}

func (k *fakeKernel) routes() *Routes { return &Routes{c: netlink.NewConn(k, nltest.PID)} }

// The netlink.Socket methods: like the kernel, one datagram per answer,
// all of a dump in one, received one datagram at a time.
func (k *fakeKernel) Close() error                 { return nil }
func (k *fakeKernel) Send(m netlink.Message) error { return k.SendMessages([]netlink.Message{m}) }
func (k *fakeKernel) Receive() ([]netlink.Message, error) {
	if len(k.queue) == 0 {
		return nil, io.EOF
	}
	d := k.queue[0]
	k.queue = k.queue[1:]
	return d, nil
}
func (k *fakeKernel) ReceiveIter() iter.Seq2[netlink.Message, error] {
	return func(yield func(netlink.Message, error) bool) {
		d, err := k.Receive()
		if err != nil {
			yield(netlink.Message{}, err)
			return
		}
		for _, m := range d {
			if !yield(m, nil) {
				return
			}
		}
	}
}

func (k *fakeKernel) SendMessages(reqs []netlink.Message) error {
	reply := func(req netlink.Message, typ netlink.HeaderType, flags netlink.HeaderFlags, data []byte) netlink.Message {
		return netlink.Message{Header: netlink.Header{Type: typ, Flags: flags, Sequence: req.Header.Sequence, PID: nltest.PID}, Data: data}
	}
	ack := func(req netlink.Message, errno int) {
		hdr, _ := netlink.Message{Header: req.Header}.MarshalBinary()
		k.queue = append(k.queue, []netlink.Message{reply(req, netlink.Error, 0, append(binary.NativeEndian.AppendUint32(nil, uint32(-int32(errno))), hdr[:16]...))})
	}
	for _, req := range reqs {
		switch {
		case req.Header.Type == unix.RTM_GETROUTE && req.Header.Flags&netlink.Dump == netlink.Dump:
			var d []netlink.Message
			for _, b := range k.table {
				d = append(d, reply(req, unix.RTM_NEWROUTE, netlink.Multi, b))
			}
			k.queue = append(k.queue, append(d, reply(req, netlink.Done, netlink.Multi, make([]byte, 4))))
		case req.Header.Type == unix.RTM_GETROUTE: // a lookup: the first route of the table whose prefix holds the address
			var best []byte
			for _, b := range k.table {
				if rt, err := parseRoute(b); err == nil && rt.dst.IsValid() && rt.dst.Contains(netip.AddrFrom4([4]byte(req.Data[len(req.Data)-4:]))) && best == nil {
					best = b
				}
			}
			if best == nil {
				ack(req, int(unix.ENETUNREACH))
				continue
			}
			k.queue = append(k.queue, []netlink.Message{reply(req, unix.RTM_NEWROUTE, 0, best)})
			ack(req, 0)
		default:
			k.sent = append(k.sent, req)
			ack(req, k.err)
		}
	}
	return nil
}

// TestRoutesRequests checks the exact requests each ownership case sends.
func TestRoutesRequests(t *testing.T) {
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Skip("no lo interface:", err)
	}
	dst := netip.MustParsePrefix("10.42.2.0/24")
	for _, tc := range []struct {
		name   string
		table  [][]byte
		ifname string // "" for a delete
		res    wire.Result
		status wire.Status
		typ    netlink.HeaderType
		flags  netlink.HeaderFlags
	}{
		{"add absent", nil, "lo", wire.ResultCreated, 0, unix.RTM_NEWROUTE, netlink.Create | netlink.Excl},
		{"add, only a wider route", [][]byte{routeMsg("10.42.0.0/16", 4, 254, 1)}, "lo", wire.ResultCreated, 0, unix.RTM_NEWROUTE, netlink.Create | netlink.Excl},
		{"add ours there", [][]byte{routeMsg("10.42.2.0/24", 81, 254, uint32(lo.Index))}, "lo", wire.ResultUnchanged, 0, 0, 0},
		{"add ours elsewhere", [][]byte{routeMsg("10.42.2.0/24", 81, 254, 999)}, "lo", wire.ResultReplaced, 0, unix.RTM_NEWROUTE, netlink.Replace},
		{"add foreign", [][]byte{routeMsg("10.42.2.0/24", 4, 254, uint32(lo.Index))}, "lo", 0, wire.StatusConflict, 0, 0},
		{"add, ours in another table", [][]byte{routeMsg("10.42.2.0/24", 81, 100, 1)}, "lo", 0, wire.StatusConflict, 0, 0},
		{"add via a missing interface", nil, "no-such-if0", 0, wire.StatusNoIface, 0, 0},
		{"delete ours", [][]byte{routeMsg("10.42.2.0/24", 81, 254, 1)}, "", wire.ResultDeleted, 0, unix.RTM_DELROUTE, 0},
		{"delete absent", [][]byte{routeMsg("10.42.3.0/24", 81, 254, 1)}, "", wire.ResultAbsent, 0, 0, 0},
		{"delete foreign", [][]byte{routeMsg("10.42.2.0/24", 3, 254, 1)}, "", 0, wire.StatusNotOwned, 0, 0},
	} {
		k := &fakeKernel{table: tc.table}
		op := wire.Record{Op: wire.OpDelete, Dst: dst}
		if tc.ifname != "" {
			op = wire.Record{Op: wire.OpAdd, Dst: dst, Ifname: tc.ifname}
		}
		errs := []error{nil}
		res := k.routes().Apply([]wire.Record{op}, errs)
		var st wire.Status
		errors.As(errs[0], &st)
		if st != tc.status || tc.status == 0 && (errs[0] != nil || res[0] != tc.res) {
			t.Errorf("%s: %v %v, want %v %v", tc.name, res[0], errs[0], tc.res, tc.status)
			continue
		}
		if tc.typ == 0 {
			if len(k.sent) != 0 {
				t.Errorf("%s: sent %v, want nothing", tc.name, k.sent)
			}
			continue
		}
		if len(k.sent) != 1 || k.sent[0].Header.Type != tc.typ || k.sent[0].Header.Flags&^(netlink.Request|netlink.Acknowledge) != tc.flags {
			t.Errorf("%s: sent %+v, want type %d flags %v", tc.name, k.sent, tc.typ, tc.flags)
			continue
		}
		if d := k.sent[0].Data; d[5] != 81 || d[1] != 24 || !bytes.Contains(d, []byte{10, 42, 2, 0}) {
			t.Errorf("%s: request %x does not name 10.42.2.0/24 with protocol 81", tc.name, d)
		}
	}
	// A kernel refusal keeps its errno.
	k := &fakeKernel{err: int(unix.ENETDOWN)}
	errs := []error{nil}
	if k.routes().Apply([]wire.Record{{Op: wire.OpAdd, Dst: dst, Ifname: "lo"}}, errs); !errors.Is(errs[0], unix.ENETDOWN) {
		t.Errorf("kernel errno lost: %v", errs[0])
	}
}

// TestApplyBatch: one batch, every case at once, each answered in its place.
func TestApplyBatch(t *testing.T) {
	k := &fakeKernel{table: [][]byte{routeMsg("10.42.3.0/24", 81, 254, 1), routeMsg("10.42.4.0/24", 4, 254, 1), routeMsg("10.42.5.0/24", 81, 254, 999)}}
	add := func(d string) wire.Record {
		return wire.Record{Op: wire.OpAdd, Dst: netip.MustParsePrefix(d), Ifname: "lo"}
	}
	del := func(d string) wire.Record { return wire.Record{Op: wire.OpDelete, Dst: netip.MustParsePrefix(d)} }
	ops := []wire.Record{add("10.42.2.0/24"), del("10.42.3.0/24"), add("10.42.4.0/24"), del("10.42.6.0/24"), add("10.42.5.0/24")}
	errs := make([]error, len(ops))
	res := k.routes().Apply(ops, errs)
	want := []wire.Result{wire.ResultCreated, wire.ResultDeleted, 0, wire.ResultAbsent, wire.ResultReplaced}
	for i, w := range want {
		if res[i] != w || (w == 0) != (errs[i] != nil) {
			t.Errorf("op %d: %v %v, want %v", i, res[i], errs[i], w)
		}
	}
	if !errors.Is(errs[2], wire.StatusConflict) || len(k.sent) != 3 {
		t.Errorf("conflict %v; sent %d requests, want 3 (create, delete, move)", errs[2], len(k.sent))
	}
}

// FuzzRouteReplies: whatever the kernel answers a dump with, the helper
// does not panic, and every list record it would send decodes cleanly on
// the other side.
func FuzzRouteReplies(f *testing.F) {
	f.Add(routeMsg("10.42.2.0/24", 81, 254, 1))
	f.Add(routeMsg("10.42.2.0/24", 4, 254, 1))
	f.Add(routeMsg("0.0.0.0/0", 81, 254, 1)[:14])
	f.Fuzz(func(t *testing.T, data []byte) {
		k := &fakeKernel{table: [][]byte{data, data}}
		r := k.routes()
		recs, _ := r.List(7)
		for _, rec := range recs {
			zero := rec.Dst == netip.PrefixFrom(netip.IPv4Unspecified(), 0) // 0.0.0.0/0 goes as "no prefix"
			if got, err := wire.Decode(rec.Encode()); err != nil || got != rec && !zero {
				t.Fatalf("list record %+v does not survive the wire: %+v %v", rec, got, err)
			}
		}
		r.Apply([]wire.Record{{Op: wire.OpAdd, Dst: netip.MustParsePrefix("10.42.2.0/24"), Ifname: "lo"}, {Op: wire.OpDelete, Dst: netip.MustParsePrefix("10.42.2.0/24")}}, make([]error, 2))
	})
}
