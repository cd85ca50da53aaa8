package helper

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
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

// fakeKernel answers dumps with the given route messages and acks every
// other request, recording them. Unit tests only: e2e/ runs the helper
// against the real kernel.
type fakeKernel struct {
	dump [][]byte
	sent []netlink.Message
	err  int // errno for mutations, 0 for success
}

func (k *fakeKernel) routes() *Routes {
	return &Routes{table: unix.RT_TABLE_MAIN, proto: 81, c: nltest.Dial(func(reqs []netlink.Message) ([]netlink.Message, error) {
		if len(reqs) == 0 {
			return nil, io.EOF // nothing unsolicited
		}
		if reqs[0].Header.Type == unix.RTM_GETROUTE {
			var msgs []netlink.Message
			for _, d := range k.dump {
				msgs = append(msgs, netlink.Message{Header: netlink.Header{Type: unix.RTM_NEWROUTE, Flags: netlink.Multi, Sequence: reqs[0].Header.Sequence, PID: nltest.PID}, Data: d})
			}
			return append(msgs, netlink.Message{Header: netlink.Header{Type: netlink.Done, Flags: netlink.Multi, Sequence: reqs[0].Header.Sequence, PID: nltest.PID}, Data: make([]byte, 4)}), nil
		}
		k.sent = append(k.sent, reqs...)
		// An ack: the errno, then the request's header, with no flags (a
		// copied NLM_F_EXCL would read as NLM_F_ACK_TLVS in an ack).
		hdr, _ := netlink.Message{Header: reqs[0].Header}.MarshalBinary()
		return []netlink.Message{{Header: netlink.Header{Type: netlink.Error, Sequence: reqs[0].Header.Sequence, PID: nltest.PID},
			Data: append(binary.NativeEndian.AppendUint32(nil, uint32(-int32(k.err))), hdr[:16]...)}}, nil
	})}
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
		dump   [][]byte
		add    bool
		res    wire.Result
		status wire.Status
		typ    netlink.HeaderType
		flags  netlink.HeaderFlags
	}{
		{"add absent", nil, true, wire.ResultCreated, 0, unix.RTM_NEWROUTE, netlink.Create | netlink.Excl},
		{"add ours there", [][]byte{routeMsg("10.42.2.0/24", 81, 254, uint32(lo.Index))}, true, wire.ResultUnchanged, 0, 0, 0},
		{"add ours elsewhere", [][]byte{routeMsg("10.42.2.0/24", 81, 254, 999)}, true, wire.ResultReplaced, 0, unix.RTM_NEWROUTE, netlink.Replace},
		{"add foreign", [][]byte{routeMsg("10.42.2.0/24", 4, 254, uint32(lo.Index))}, true, 0, wire.StatusConflict, 0, 0},
		{"add, other table only", [][]byte{routeMsg("10.42.2.0/24", 4, 100, 1)}, true, wire.ResultCreated, 0, unix.RTM_NEWROUTE, netlink.Create | netlink.Excl},
		{"delete ours", [][]byte{routeMsg("10.42.2.0/24", 81, 254, 1)}, false, wire.ResultDeleted, 0, unix.RTM_DELROUTE, 0},
		{"delete absent", [][]byte{routeMsg("10.42.3.0/24", 81, 254, 1)}, false, wire.ResultAbsent, 0, 0, 0},
		{"delete foreign", [][]byte{routeMsg("10.42.2.0/24", 3, 254, 1)}, false, 0, wire.StatusNotOwned, 0, 0},
	} {
		k := &fakeKernel{dump: tc.dump}
		r := k.routes()
		var res wire.Result
		if tc.add {
			res, err = r.Add(dst, "lo")
		} else {
			res, err = r.Delete(dst)
		}
		var st wire.Status
		errors.As(err, &st)
		if res != tc.res && err == nil || st != tc.status || (tc.status == 0 && err != nil) {
			t.Errorf("%s: %v %v, want %v %v", tc.name, res, err, tc.res, tc.status)
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
	if _, err := k.routes().Add(dst, "lo"); !errors.Is(err, unix.ENETDOWN) {
		t.Errorf("kernel errno lost: %v", err)
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
		k := &fakeKernel{dump: [][]byte{data, data}}
		r := k.routes()
		recs, _ := r.List(7)
		for _, rec := range recs {
			zero := rec.Dst == netip.PrefixFrom(netip.IPv4Unspecified(), 0) // 0.0.0.0/0 goes as "no prefix"
			if got, err := wire.Decode(rec.Encode()); err != nil || got != rec && !zero {
				t.Fatalf("list record %+v does not survive the wire: %+v %v", rec, got, err)
			}
		}
		r.Add(netip.MustParsePrefix("10.42.2.0/24"), "lo")
		r.Delete(netip.MustParsePrefix("10.42.2.0/24"))
	})
}
