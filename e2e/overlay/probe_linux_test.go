package overlay

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestClassify(t *testing.T) {
	// A real refusal, from a loopback port nobody listens on any more.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	_, refused := net.Dial("tcp", addr)

	for _, tc := range []struct {
		err  error
		want Outcome
	}{
		{nil, Reached},
		{refused, Refused},
		{&net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", unix.ENETUNREACH)}, Unreachable},
		{&net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", unix.EHOSTUNREACH)}, Unreachable},
		{&net.OpError{Op: "dial", Net: "tcp", Err: os.ErrDeadlineExceeded}, TimedOut},
		{fmt.Errorf("probe: %w", context.DeadlineExceeded), TimedOut},
		{fmt.Errorf("%w: want %q", ErrWrongPeer, "node1-a x"), WrongPeer},
		{errors.New("something else"), Failed},
	} {
		if got := classify(tc.err); got != tc.want {
			t.Errorf("classify(%v) = %s, want %s", tc.err, got, tc.want)
		}
	}
}

func TestMatrixText(t *testing.T) {
	m := &Matrix{Containers: []string{"node1-a", "node2-a"}, Cells: []Cell{
		{From: "node1-a", To: "node2-a", Outcome: Reached},
		{From: "node2-a", To: "node1-a", Outcome: Unreachable},
	}}
	var b strings.Builder
	m.WriteText(&b, "")
	got := strings.Split(strings.TrimRight(b.String(), "\n"), "\n")
	if len(got) != 3 {
		t.Fatalf("want a header and two rows, got:\n%s", b.String())
	}
	for i, want := range [][]string{{"from", "\\", "to", "node1-a", "node2-a"}, {"node1-a", "-", "ok"}, {"node2-a", "unreachable", "-"}} {
		if f := strings.Fields(got[i]); strings.Join(f, " ") != strings.Join(want, " ") {
			t.Errorf("line %d: %q, want fields %q", i, got[i], want)
		}
	}
}
