// Package quote shows client-supplied values in error messages: quoted
// and escaped, so newlines, NULs and invalid UTF-8 stay on one line, and
// bounded, so a huge or binary value cannot make a message huge. It needs
// no privileges and has no knobs.
package quote

import (
	"fmt"
	"strconv"
)

// Max is the longest quoted form Value returns before its length note.
const Max = 66

// Value returns s quoted, at most Max bytes of it; a longer value is cut
// and its length given, as in "10.42.2...." (1048576 bytes).
func Value(s string) string {
	q := strconv.Quote(s)
	if len(q) <= Max {
		return q
	}
	n := min(len(s), Max)
	for len(strconv.Quote(s[:n])) > Max {
		n--
	}
	return fmt.Sprintf("%s... (%d bytes)", strconv.Quote(s[:n]), len(s))
}
