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
		b := r.Append(nil)
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
	got, err := Decode(r.Append(nil))
	if err != nil || got.Ifname != "" {
		t.Fatalf("an over-long name must go as none, got %q, %v", got.Ifname, err)
	}
	r.Dst = netip.MustParsePrefix("fd00::/64")
	if got, _ := Decode(r.Append(nil)); got.Dst.IsValid() {
		t.Fatalf("an IPv6 prefix must go as none, got %v", got.Dst)
	}
}

func TestDecodeRejects(t *testing.T) {
	good := Record{Op: OpAdd, Tag: 9, Dst: netip.MustParsePrefix("10.42.2.0/24"), Ifname: "vxlan100"}.Append(nil)
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
		{"version 1", mutate(func(b []byte) { b[0] = 1 }), StatusBadVersion},
		{"version 3", mutate(func(b []byte) { b[0] = 3 }), StatusBadVersion},
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
		{"op 6", mutate(func(b []byte) { b[1] = 6 }), StatusBadOp},
		{"status", mutate(func(b []byte) { b[2] = 1 }), StatusBadReserved},
		{"result", mutate(func(b []byte) { b[3] = 1 }), StatusBadReserved},
		{"errno", mutate(func(b []byte) { binary.BigEndian.PutUint32(b[8:], 1) }), StatusBadReserved},
	} {
		rs, _ := DecodeRequests(tc.msg)
		if r := rs[0]; r.Status != tc.want || r.Tag != 9 || r.Result != ResultNone || r.Errno != 0 {
			t.Errorf("%s: got %+v, want status %v, the tag kept for the reply, and nothing else answered", tc.name, r, tc.want)
		}
	}
	if rs, err := DecodeRequests(good); err != nil || rs[0].Status != StatusOK {
		t.Fatalf("good request: %+v %v", rs, err)
	}
}

func TestNames(t *testing.T) {
	if StatusConflict.Error() != "conflict" || Status(200).Error() != "unknown" || OpWatch.String() != "watch" ||
		Op(0).String() != "unknown" || ResultResync.String() != "resync" {
		t.Fatal("names out of step with the codes")
	}
	for s := StatusOK; s <= StatusKernel; s++ {
		if s.Error() == "unknown" {
			t.Errorf("status %d has no name", s)
		}
	}
	for o := OpHello; o <= OpWatch; o++ {
		if o.String() == "unknown" {
			t.Errorf("op %d has no name", o)
		}
	}
	for r := ResultNone; r <= ResultResync; r++ {
		if r.String() == "unknown" {
			t.Errorf("result %d has no name", r)
		}
	}
}

// TestLayout: the struct that travels is exactly Size bytes.
func TestLayout(t *testing.T) {
	if n := binary.Size(layout{}); n != Size {
		t.Fatalf("layout is %d bytes, Size is %d", n, Size)
	}
}

// TestDecodeRequests: the rules for a message of requests.
func TestDecodeRequests(t *testing.T) {
	add := Record{Op: OpAdd, Tag: 1, Dst: netip.MustParsePrefix("10.42.2.0/24"), Ifname: "vxlan100"}
	del := Record{Op: OpDelete, Tag: 2, Dst: netip.MustParsePrefix("10.42.3.0/24")}
	msg := func(rs ...Record) []byte {
		var b []byte
		for _, r := range rs {
			b = r.Append(b)
		}
		return b
	}
	for _, op := range []Op{OpHello, OpList, OpWatch} {
		alone := Record{Op: op, Tag: 3}
		if rs, err := DecodeRequests(msg(alone)); err != nil || rs[0].Status != StatusOK {
			t.Errorf("%v alone: %+v %v", op, rs, err)
		}
		if rs, err := DecodeRequests(msg(add, alone)); err != nil || rs[0].Status != StatusOK || rs[1].Status != StatusBadOp {
			t.Errorf("%v in a batch: %+v %v; want bad-op for it only", op, rs, err)
		}
	}
	// A record of another version anywhere breaks the framing of the whole
	// message: only the first record comes back, to echo its tag.
	bad := msg(add, del)
	bad[Size] = Version + 1
	reqs, err := DecodeRequests(bad)
	if !errors.Is(err, StatusBadVersion) || len(reqs) != 1 || reqs[0].Tag != 1 || reqs[0].Status != StatusBadVersion {
		t.Errorf("version in the second record: %+v %v", reqs, err)
	}
	bad[0] = Version + 1
	if reqs, err := DecodeRequests(bad[:Size]); !errors.Is(err, StatusBadVersion) || reqs[0].Tag != 1 {
		t.Errorf("version in the only record: %+v %v", reqs, err)
	}
	for _, size := range []int{0, Size - 1, Size + 1, (MaxBatch + 1) * Size} {
		reqs, err := DecodeRequests(make([]byte, size))
		if !errors.Is(err, StatusBadSize) || len(reqs) != 1 || reqs[0].Status != StatusBadSize {
			t.Errorf("%d bytes: %v %v", size, reqs, err)
		}
	}
	full := bytes.Repeat(add.Append(nil), MaxBatch)
	if reqs, err := DecodeRequests(full); err != nil || len(reqs) != MaxBatch {
		t.Errorf("%d records: %d, %v", MaxBatch, len(reqs), err)
	}
}

// FuzzDecode: whatever the bytes, Decode never panics, and anything it
// accepts encodes back to exactly the same bytes.
func FuzzDecode(f *testing.F) {
	f.Add(Record{Op: OpAdd, Tag: 1, Dst: netip.MustParsePrefix("10.42.2.0/24"), Ifname: "vxlan100"}.Append(nil))
	f.Add(Record{Op: OpList, Tag: 2}.Append(nil))
	f.Add(make([]byte, Size))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := Decode(b)
		if err != nil {
			return
		}
		if again := r.Append(nil); !bytes.Equal(again, b) {
			t.Fatalf("accepted %x but it encodes back as %x", b, again)
		}
	})
}
