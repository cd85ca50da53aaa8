package wire

import "strings"

// Status is the outcome code of a request. Zero is success; every other
// value is an error, and Status implements error so callers can test for
// it with errors.Is.
type Status uint8

// Statuses, in wire order (append, never reorder): ok; framing errors,
// which close the connection: bad-size (not exactly Size bytes),
// bad-version; request errors: bad-op, bad-reserved (a reserved or
// response-only field not zero), bad-prefix (host bits, or a length over
// 32), bad-name (no NUL, or bytes after it); policy refusals: not-ipv4,
// outside-cluster, prefix-len, interface-denied, no-interface; ownership:
// conflict (a route for the prefix exists and is not ours), not-owned (a
// delete of a route that is not ours); kernel (the kernel refused; Errno
// says why).
const (
	StatusOK, StatusBadSize, StatusBadVersion, StatusBadOp, StatusBadReserved, StatusBadPrefix, StatusBadName Status = 0, 1, 2, 3, 4, 5, 6
	StatusNotIPv4, StatusOutsideCluster, StatusPrefixLen, StatusIfaceDenied, StatusNoIface                    Status = 7, 8, 9, 10, 11
	StatusConflict, StatusNotOwned, StatusKernel                                                              Status = 12, 13, 14
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
