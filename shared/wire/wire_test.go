package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	for _, r := range []Record{
		{Op: OpHello, Tag: 1},
		{Op: OpAdd, Tag: 0xdeadbeef, Dst: netip.MustParsePrefix("10.42.2.0/24"), Ifname: "vxlan100"},
		{Op: OpDelete, Tag: 3, Dst: netip.MustParsePrefix("10.42.255.0/24")},
		{Op: OpList, Tag: 4},
		{Op: OpList, Result: ResultRoute, Tag: 4, Dst: netip.MustParsePrefix("10.0.0.0/8"), Ifname: "abcdefghijklmno"},
		{Op: OpAdd, Status: StatusKernel, Errno: 17, Tag: 5},
		{Op: OpAdd, Dst: netip.MustParsePrefix("1.2.3.4/32"), Ifname: "x"},
	} {
		b := r.Encode()
		if len(b) != Size {
			t.Fatalf("%+v encodes to %d bytes", r, len(b))
		}
		got, err := Decode(b)
		if err != nil || got != r {
			t.Errorf("round trip of %+v: got %+v, %v", r, got, err)
		}
	}
}

func TestEncodeNeverTruncates(t *testing.T) {
	r := Record{Op: OpAdd, Dst: netip.MustParsePrefix("10.42.2.0/24"), Ifname: "vxlan100-but-too-long"}
	got, err := Decode(r.Encode())
	if err != nil || got.Ifname != "" {
		t.Fatalf("an over-long name must go as none, got %q, %v", got.Ifname, err)
	}
	r.Dst = netip.MustParsePrefix("fd00::/64")
	if got, _ := Decode(r.Encode()); got.Dst.IsValid() {
		t.Fatalf("an IPv6 prefix must go as none, got %v", got.Dst)
	}
}

func TestDecodeRejects(t *testing.T) {
	good := Record{Op: OpAdd, Tag: 9, Dst: netip.MustParsePrefix("10.42.2.0/24"), Ifname: "vxlan100"}.Encode()
	mutate := func(f func(b []byte)) []byte {
		b := bytes.Clone(good)
		f(b)
		return b
	}
	for _, tc := range []struct {
		name string
		msg  []byte
		want Status
	}{
		{"empty", nil, StatusBadSize},
		{"one short", good[:Size-1], StatusBadSize},
		{"one long", append(bytes.Clone(good), 0), StatusBadSize},
		{"version 0", mutate(func(b []byte) { b[0] = 0 }), StatusBadVersion},
		{"version 2", mutate(func(b []byte) { b[0] = 2 }), StatusBadVersion},
		{"reserved 17", mutate(func(b []byte) { b[17] = 1 }), StatusBadReserved},
		{"reserved 19", mutate(func(b []byte) { b[19] = 0x80 }), StatusBadReserved},
		{"host bits", mutate(func(b []byte) { b[15] = 7 }), StatusBadPrefix},
		{"prefix length 33", mutate(func(b []byte) { b[16] = 33 }), StatusBadPrefix},
		{"prefix length 255", mutate(func(b []byte) { b[16] = 255 }), StatusBadPrefix},
		{"zero address, length 33", mutate(func(b []byte) { copy(b[12:16], []byte{0, 0, 0, 0}); b[16] = 33 }), StatusBadPrefix},
		{"byte after NUL", mutate(func(b []byte) { b[35] = 'x' }), StatusBadName},
		{"NUL inside name", mutate(func(b []byte) { b[22] = 0 }), StatusBadName},
		{"no NUL", mutate(func(b []byte) { copy(b[20:], "0123456789abcdef") }), StatusBadName},
	} {
		_, err := Decode(tc.msg)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
		}
	}
	for _, tc := range []struct {
		name string
		msg  []byte
		want Status
	}{
		{"op 0", mutate(func(b []byte) { b[1] = 0 }), StatusBadOp},
		{"op 5", mutate(func(b []byte) { b[1] = 5 }), StatusBadOp},
		{"status", mutate(func(b []byte) { b[2] = 1 }), StatusBadReserved},
		{"result", mutate(func(b []byte) { b[3] = 1 }), StatusBadReserved},
		{"errno", mutate(func(b []byte) { binary.BigEndian.PutUint32(b[8:], 1) }), StatusBadReserved},
	} {
		rs, errs, _ := DecodeRequests(tc.msg)
		r, err := rs[0], errs[0]
		if !errors.Is(err, tc.want) || r.Tag != 9 {
			t.Errorf("%s: got %v (tag %d), want %v and the tag kept for the reply", tc.name, err, r.Tag, tc.want)
		}
	}
	if _, errs, err := DecodeRequests(good); err != nil || errs[0] != nil {
		t.Fatalf("good request: %v", err)
	}
}

func TestNames(t *testing.T) {
	if StatusConflict.Error() != "conflict" || Status(200).Error() != "unknown" || OpAdd.String() != "add" || ResultDone.String() != "done" {
		t.Fatal("names out of step with the codes")
	}
	if len(statusNames) != int(StatusKernel)+2 || len(opNames) != int(OpList)+2 || len(resultNames) != int(ResultDone)+2 {
		t.Fatal("every code needs a name, and the last name must be unknown")
	}
}

// FuzzDecode: whatever the bytes, Decode never panics, and anything it
// accepts encodes back to exactly the same bytes.
func FuzzDecode(f *testing.F) {
	f.Add(Record{Op: OpAdd, Tag: 1, Dst: netip.MustParsePrefix("10.42.2.0/24"), Ifname: "vxlan100"}.Encode())
	f.Add(Record{Op: OpList, Tag: 2}.Encode())
	f.Add(make([]byte, Size))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := Decode(b)
		if err != nil {
			return
		}
		if again := r.Encode(); !bytes.Equal(again, b) {
			t.Fatalf("accepted %x but it encodes back as %x", b, again)
		}
	})
}
