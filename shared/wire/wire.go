package wire

import (
	"bytes"
	"encoding/binary"
	"net/netip"
)

// Version is the protocol version (a peer speaking another version is told
// so with StatusBadVersion and disconnected), and Size the length in bytes
// of every record.
const Version, Size = 1, 36

// RouteProtocol is the route protocol number marking the routes quilt
// owns (rtm_protocol; "quilt" in packaging/rt_protos.d; 42 would be babel).
const RouteProtocol = 81

// MaxBatch is the most records one message may carry: a batch of adds and
// deletes, answered by one message of as many replies, or a part of a list.
const MaxBatch = 256

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
func (r Record) Encode() []byte { return r.Append(nil) }

// Append appends r's Size bytes to b.
func (r Record) Append(b []byte) []byte {
	b = append(b, make([]byte, Size)...)
	b, all := b[len(b)-Size:], b
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
	return all
}

// Decode parses one record strictly: exact size, known version, zero
// reserved bytes, a prefix without host bits, a name that ends in a
// NUL and is zero-padded. On error the Record still carries what could be
// read, so a reply can echo its Op and Tag.
func Decode(b []byte) (r Record, err error) {
	if len(b) != Size {
		return r, StatusBadSize
	}
	r = Record{Op: Op(b[1]), Status: Status(b[2]), Result: Result(b[3]), Tag: binary.BigEndian.Uint32(b[4:]), Errno: binary.BigEndian.Uint32(b[8:])}
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

// DecodeRequests decodes a message of one or more requests: whole
// records, at most MaxBatch, each by Decode plus the rules for requests (a
// known op, hello and list only alone, and the response-only fields
// status, result and errno zero). A wrong total size, or a record of
// another version, breaks the framing of the whole message (err); errs
// holds each record's own error. Fields an op does not use are ignored;
// missing ones fail the policy checks.
func DecodeRequests(b []byte) (reqs []Record, errs []error, err error) {
	if len(b) == 0 || len(b)%Size != 0 || len(b) > MaxBatch*Size {
		return []Record{{}}, []error{StatusBadSize}, StatusBadSize
	}
	for off := 0; off < len(b); off += Size {
		r, rerr := Decode(b[off : off+Size])
		switch {
		case rerr == StatusBadVersion:
			err = rerr
		case rerr != nil: // answered with its own status
		case r.Op < OpHello || r.Op > OpList || len(b) > Size && (r.Op == OpHello || r.Op == OpList):
			rerr = StatusBadOp
		case r.Status != 0 || r.Result != 0 || r.Errno != 0:
			rerr = StatusBadReserved
		}
		reqs, errs = append(reqs, r), append(errs, rerr)
	}
	return reqs, errs, err
}
