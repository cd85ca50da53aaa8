package wire

import (
	"bytes"
	"encoding/binary"
	"net/netip"
)

// Version is the protocol version. A peer speaking another version is told
// so with StatusBadVersion and disconnected.
const Version = 1

// Size is the length in bytes of every record.
const Size = 36

// Op is a request's operation.
type Op uint8

// Operations: hello (version check, no payload), add (route Dst via
// Ifname), delete (our route to Dst), list (our routes: one ResultRoute
// record each, then ResultDone). The values are the wire format.
const OpHello, OpAdd, OpDelete, OpList Op = 1, 2, 3, 4

// Result says what a successful operation did.
type Result uint8

// Results: created; unchanged (add: ours there already); replaced (add:
// ours elsewhere, moved in one request); deleted; absent (delete: nothing
// to do); route (list: one of ours); done (list: the end); none (refused, or hello).
const ResultNone, ResultCreated, ResultUnchanged, ResultReplaced, ResultDeleted, ResultAbsent, ResultRoute, ResultDone Result = 0, 1, 2, 3, 4, 5, 6, 7

// Record is one message. Layout, big-endian:
//
//	0  version   1  op      2  status   3  result
//	4  tag (u32)            8  errno (u32)
//	12 IPv4 address        16 prefix length  17-19 reserved, zero
//	20 interface name, 16 bytes, NUL-padded
type Record struct {
	Op     Op
	Status Status
	Result Result
	Tag    uint32
	Errno  uint32
	Dst    netip.Prefix
	Ifname string
}

// Encode returns r as Size bytes. A Dst that is not IPv4 is sent as none.
func (r Record) Encode() []byte {
	b := make([]byte, Size)
	b[0], b[1], b[2], b[3] = Version, byte(r.Op), byte(r.Status), byte(r.Result)
	binary.BigEndian.PutUint32(b[4:], r.Tag)
	binary.BigEndian.PutUint32(b[8:], r.Errno)
	if a := r.Dst.Addr(); a.Is4() && r.Dst.IsValid() {
		copy(b[12:16], a.AsSlice())
		b[16] = byte(r.Dst.Bits())
	}
	if len(r.Ifname) < Size-20 { // never truncate: a name too long goes as none
		copy(b[20:], r.Ifname)
	}
	return b
}

// Decode parses one record strictly: exact size, known version, zero
// reserved bytes, a prefix without host bits, a name that ends in a
// NUL and is zero-padded. On error the Record still carries what could be
// read, so a reply can echo its Op and Tag.
func Decode(b []byte) (r Record, err error) {
	if len(b) != Size {
		return r, StatusBadSize
	}
	r = Record{Op: Op(b[1]), Status: Status(b[2]), Result: Result(b[3]),
		Tag: binary.BigEndian.Uint32(b[4:]), Errno: binary.BigEndian.Uint32(b[8:])}
	addr, bits := netip.AddrFrom4([4]byte(b[12:16])), int(b[16])
	if bits != 0 || !addr.IsUnspecified() {
		r.Dst = netip.PrefixFrom(addr, bits)
	}
	name, pad, _ := bytes.Cut(b[20:], []byte{0})
	r.Ifname = string(name)
	switch {
	case b[0] != Version:
		return r, StatusBadVersion
	case b[17]|b[18]|b[19] != 0:
		return r, StatusBadReserved
	case bits > 32 || r.Dst != r.Dst.Masked():
		return r, StatusBadPrefix
	case len(name) == len(b[20:]) || len(bytes.Trim(pad, "\x00")) != 0:
		return r, StatusBadName
	}
	return r, nil
}

// DecodeRequest is Decode plus the rules for requests: a known op, and
// the response-only fields (status, result, errno) zero. Fields an op does
// not use are ignored; missing ones fail the policy checks.
func DecodeRequest(b []byte) (Record, error) {
	r, err := Decode(b)
	if err == nil && (r.Op < OpHello || r.Op > OpList) {
		err = StatusBadOp
	} else if err == nil && (r.Status != 0 || r.Result != 0 || r.Errno != 0) {
		err = StatusBadReserved
	}
	return r, err
}
