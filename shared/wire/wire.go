package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
)

// Version is the protocol version. A record of another version breaks
// the framing of its whole message: the helper answers StatusBadVersion
// and closes the connection, and the frontend refuses a helper that
// answers its hello so. Version 2 added OpWatch.
const Version = 2

// Size is the length in bytes of every record.
const Size = 36

// MaxBatch is the most records one message may carry.
const MaxBatch = 256

// RouteProtocol is the route protocol number (rtm_protocol) that marks
// the routes quilt owns: "quilt" in packaging/rt_protos.d (42 would be
// babel).
const RouteProtocol = 81

// Op is a request's operation. The values are the wire format.
type Op uint8

// Operations.
const (
	OpHello  Op = 1 // version check; alone in its message
	OpAdd    Op = 2 // route Dst via Ifname
	OpDelete Op = 3 // remove quilt's routes to Dst
	OpList   Op = 4 // quilt's routes: ResultRoute records, then ResultDone; alone
	OpWatch  Op = 5 // events from now on, starting with ResultResync; alone
)

// Result says what a successful operation did, or what an event reports.
type Result uint8

// Results. The values are the wire format.
const (
	ResultNone      Result = 0 // hello, or refused
	ResultCreated   Result = 1 // add: Dst had no route; ours now
	ResultUnchanged Result = 2 // add: ours via Ifname already
	ResultMoved     Result = 3 // add: ours via another interface before, via Ifname now
	ResultDeleted   Result = 4 // delete: ours removed
	ResultAbsent    Result = 5 // delete: none of ours
	ResultRoute     Result = 6 // list: one of ours
	ResultDone      Result = 7 // list: the end
	ResultChanged   Result = 8 // event: the routes at Dst changed, other than by the helper's own requests
	ResultResync    Result = 9 // event: compare every route (events were lost, or an interface came up)
)

// Record is one record, as the two sides use it.
type Record struct {
	Op     Op
	Status Status
	Result Result
	Tag    uint32
	Errno  uint32
	Dst    netip.Prefix
	Ifname string
}

// layout is a record as it travels: Size bytes, big-endian.
type layout struct {
	Version  uint8
	Op       Op
	Status   Status
	Result   Result
	Tag      uint32
	Errno    uint32
	Addr     [4]byte // Dst's address, and then its length
	Bits     uint8
	Reserved [3]byte // zero
	Name     [16]byte
}

// Append appends r's Size bytes to b. A Dst that is not a valid IPv4
// prefix, and a name that does not fit with its NUL, are sent as none:
// never truncated.
func (r Record) Append(b []byte) []byte {
	l := layout{Version: Version, Op: r.Op, Status: r.Status, Result: r.Result, Tag: r.Tag, Errno: r.Errno}
	if r.Dst.IsValid() && r.Dst.Addr().Is4() {
		l.Addr = r.Dst.Addr().As4()
		l.Bits = uint8(r.Dst.Bits())
	}
	if len(r.Ifname) < len(l.Name) {
		copy(l.Name[:], r.Ifname)
	}
	b, _ = binary.Append(b, binary.BigEndian, l) // a struct of fixed size: it cannot fail
	return b
}

// Decode parses one record strictly: exact size, this version, zero
// reserved bytes, a prefix without host bits, a name that ends in a NUL
// and is zero-padded. On error the Record still carries what could be
// read, so a reply can echo its Op and Tag.
func Decode(b []byte) (Record, error) {
	var l layout
	if _, err := binary.Decode(b, binary.BigEndian, &l); err != nil || len(b) != Size {
		return Record{}, StatusBadSize
	}
	r := Record{Op: l.Op, Status: l.Status, Result: l.Result, Tag: l.Tag, Errno: l.Errno}
	if l.Addr != [4]byte{} || l.Bits != 0 {
		r.Dst = netip.PrefixFrom(netip.AddrFrom4(l.Addr), int(l.Bits))
	}
	name, padding, _ := bytes.Cut(l.Name[:], []byte{0})
	r.Ifname = string(name)
	switch {
	case l.Version != Version:
		return r, StatusBadVersion
	case l.Reserved != [3]byte{}:
		return r, StatusBadReserved
	case l.Bits > 32 || r.Dst != r.Dst.Masked():
		return r, StatusBadPrefix
	case len(name) == len(l.Name) || len(bytes.Trim(padding, "\x00")) > 0:
		return r, StatusBadName // no NUL, or bytes after it
	}
	return r, nil
}

// DecodeRequests decodes a message of requests: 1 to MaxBatch whole
// records, each checked by Decode and by the rules for requests: a known
// op; hello, list and watch alone; the response-only fields (status,
// result, errno) zero. A record that breaks a rule comes back with only
// its op, its tag and the status to answer it with; the others whole, with
// StatusOK, to be answered in place. Fields an op does not use are ignored; missing ones fail the
// policy checks.
//
// err is set when the framing of the message is broken: a size that is
// not a whole number of records, or a record of another version. Then no
// record of it may be carried out: only the first comes back, to answer,
// and the connection must be closed.
func DecodeRequests(b []byte) (reqs []Record, err error) {
	if len(b) == 0 || len(b)%Size != 0 || len(b) > MaxBatch*Size {
		return []Record{{Status: StatusBadSize}}, StatusBadSize
	}
	reqs = make([]Record, len(b)/Size)
	for i := range reqs {
		r, err := Decode(b[i*Size : (i+1)*Size])
		reqs[i] = Record{Op: r.Op, Tag: r.Tag}
		switch {
		case errors.Is(err, StatusBadVersion):
			reqs[0].Status = StatusBadVersion
			return reqs[:1], err
		case err != nil:
			errors.As(err, &reqs[i].Status)
		case r.Op < OpHello || r.Op > OpWatch || len(reqs) > 1 && r.Op != OpAdd && r.Op != OpDelete:
			reqs[i].Status = StatusBadOp
		case r.Status != StatusOK || r.Result != ResultNone || r.Errno != 0:
			reqs[i].Status = StatusBadReserved
		default:
			reqs[i].Dst = r.Dst
			reqs[i].Ifname = r.Ifname
		}
	}
	return reqs, nil
}
