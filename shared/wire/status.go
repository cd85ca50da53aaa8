package wire

// Status is the outcome code of a request. Zero is success; every other
// value is an error, and Status implements error so callers can test for
// it with errors.Is. The values are the wire format: append, never
// reorder.
type Status uint8

// Statuses, by kind: framing errors close the connection; request errors
// and refusals are answered, and it stays open.
const (
	StatusOK         Status = 0
	StatusBadSize    Status = 1 // framing: not a whole number of records, none, or more than MaxBatch
	StatusBadVersion Status = 2 // framing: a record of another protocol version

	StatusBadOp       Status = 3 // request: unknown op, or hello, list or watch beside other records
	StatusBadReserved Status = 4 // request: a reserved or response-only field not zero
	StatusBadPrefix   Status = 5 // request: host bits, or a length over 32
	StatusBadName     Status = 6 // request: no NUL, or bytes after it

	StatusNotIPv4        Status = 7 // policy
	StatusOutsideCluster Status = 8
	StatusPrefixLen      Status = 9
	StatusIfaceDenied    Status = 10 // policy: not on the allow list
	StatusNoIface        Status = 11 // policy: on the allow list, but absent or down

	StatusConflict Status = 12 // ownership: an add, and Dst holds a route that is not quilt's
	StatusNotOwned Status = 13 // ownership: a delete, and Dst holds only routes that are not quilt's
	StatusKernel   Status = 14 // the kernel refused; Errno says why
)

var statusNames = [...]string{
	StatusOK:             "ok",
	StatusBadSize:        "bad-size",
	StatusBadVersion:     "bad-version",
	StatusBadOp:          "bad-op",
	StatusBadReserved:    "bad-reserved",
	StatusBadPrefix:      "bad-prefix",
	StatusBadName:        "bad-name",
	StatusNotIPv4:        "not-ipv4",
	StatusOutsideCluster: "outside-cluster",
	StatusPrefixLen:      "prefix-len",
	StatusIfaceDenied:    "interface-denied",
	StatusNoIface:        "no-interface",
	StatusConflict:       "conflict",
	StatusNotOwned:       "not-owned",
	StatusKernel:         "kernel",
}

var opNames = [...]string{
	OpHello:  "hello",
	OpAdd:    "add",
	OpDelete: "delete",
	OpList:   "list",
	OpWatch:  "watch",
}

var resultNames = [...]string{
	ResultNone:      "none",
	ResultCreated:   "created",
	ResultUnchanged: "unchanged",
	ResultMoved:     "moved",
	ResultDeleted:   "deleted",
	ResultAbsent:    "absent",
	ResultRoute:     "route",
	ResultDone:      "done",
	ResultChanged:   "changed",
	ResultResync:    "resync",
}

// Error returns the status's short name, for logs and errors.
func (s Status) Error() string {
	return name(statusNames[:], int(s))
}

// String returns the op's short name.
func (o Op) String() string {
	return name(opNames[:], int(o))
}

// String returns the result's short name.
func (r Result) String() string {
	return name(resultNames[:], int(r))
}

// name returns names[i], or "unknown" for a code without a name.
func name(names []string, i int) string {
	if i < len(names) && names[i] != "" {
		return names[i]
	}
	return "unknown"
}
