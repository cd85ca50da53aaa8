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

// Operations.
const (
	OpHello  Op = 1 // version check; no payload
	OpAdd    Op = 2 // add or move a route: Dst and Ifname
	OpDelete Op = 3 // delete a route: Dst only
	OpList   Op = 4 // list owned routes: one ResultRoute record each, then ResultDone
)

// Result says what a successful operation did.
type Result uint8

// Results.
const (
	ResultNone      Result = 0
	ResultCreated   Result = 1
	ResultUnchanged Result = 2 // add: already ours on that interface
	ResultReplaced  Result = 3 // add: ours, moved to the requested interface
	ResultDeleted   Result = 4
	ResultAbsent    Result = 5 // delete: nothing to delete
	ResultRoute     Result = 6 // list: one owned route
	ResultDone      Result = 7 // list: end of the list
)

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
	if r.Dst.Addr().Is4() {
		a := r.Dst.Addr().As4()
		copy(b[12:16], a[:])
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
