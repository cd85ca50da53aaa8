package wire

import "strings"

// Status is the outcome code of a request. Zero is success; every other
// value is an error, and Status implements error so callers can test for
// it with errors.Is. Framing errors (BadSize, BadVersion) close the
// connection; every other status leaves it open for the next request.
type Status uint8

// Statuses. The values are the wire format: append, never reorder.
const (
	StatusOK             Status = iota
	StatusBadSize               // message is not exactly Size bytes
	StatusBadVersion            // version byte is not Version
	StatusBadOp                 // unknown op
	StatusBadReserved           // reserved or unused field not zero
	StatusBadPrefix             // prefix missing, or has host bits
	StatusBadName               // interface name not NUL-terminated and zero-padded
	StatusNotIPv4               // prefix is not IPv4
	StatusOutsideCluster        // prefix not inside the cluster CIDR
	StatusPrefixLen             // prefix length is not the node prefix length
	StatusIfaceDenied           // interface not on the allow list
	StatusNoIface               // interface does not exist
	StatusConflict              // a route for the prefix exists and is not ours
	StatusNotOwned              // delete of a route that is not ours
	StatusKernel                // the kernel refused; Errno says why
)

// Short names, in code order and ending in "unknown", for logs and errors.
var (
	statusNames = strings.Fields("ok bad-size bad-version bad-op bad-reserved bad-prefix bad-name not-ipv4 " +
		"outside-cluster prefix-len interface-denied no-interface conflict not-owned kernel unknown")
	opNames     = strings.Fields("none hello add delete list unknown")
	resultNames = strings.Fields("none created unchanged replaced deleted absent route done unknown")
)

func (s Status) Error() string  { return statusNames[min(int(s), len(statusNames)-1)] }
func (o Op) String() string     { return opNames[min(int(o), len(opNames)-1)] }
func (r Result) String() string { return resultNames[min(int(r), len(resultNames)-1)] }
