// Package quote shows client-supplied values in messages and log lines:
// bounded, so a huge or binary value cannot make a message huge, and in
// messages also quoted and escaped, so newlines, NULs and invalid UTF-8
// stay on one line. It needs no privileges and has no knobs.
package quote

import (
	"fmt"
	"strconv"
	"unicode/utf8"
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

// Bound returns s as it is if it is at most n bytes, else its first n
// bytes, not cutting a character in two, and "...": for text shown as it
// is, where a log handler or the reader's protocol does the escaping.
func Bound(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for i := 1; i < utf8.UTFMax && n > 0 && !utf8.RuneStart(s[n]); i++ {
		n--
	}
	return s[:n] + "..."
}
