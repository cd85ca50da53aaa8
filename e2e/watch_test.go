package e2e

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/quiltmesh/quilt-runtime/internal/testutil"
	"github.com/quiltmesh/quilt-runtime/shared/wire"
)

// watch opens a watch on the helper's socket and reads its first message,
// which must be one resync event.
func watch(t *testing.T, sock string) *net.UnixConn {
	t.Helper()
	w := dialHelper(t, sock)
	recs, err := exchange(w, wire.Record{Op: wire.OpWatch, Tag: 9}.Append(nil))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]wire.Record{{Op: wire.OpWatch, Tag: 9, Result: wire.ResultResync}}, recs, cmpopts.EquateComparable(netip.Prefix{})); diff != "" {
		t.Fatalf("the watch's first message: want one resync event (-want +got):\n%s", diff)
	}
	return w
}

// events reads the next message of events from a watch.
func events(t *testing.T, w *net.UnixConn) []wire.Record {
	t.Helper()
	w.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, wire.MaxBatch*wire.Size)
	n, err := w.Read(buf)
	if err != nil {
		t.Fatalf("reading the watch: %v", err)
	}
	var recs []wire.Record
	for off := 0; off+wire.Size <= n; off += wire.Size {
		r, err := wire.Decode(buf[off : off+wire.Size])
		if err != nil || r.Op != wire.OpWatch || r.Tag != 9 || r.Status != wire.StatusOK {
			t.Fatalf("a bad event: %+v %v", r, err)
		}
		recs = append(recs, r)
	}
	return recs
}

// changed returns the prefixes of changed events, sorted, and whether a
// resync event came too.
func changed(recs []wire.Record) (prefixes []string, resync bool) {
	for _, r := range recs {
		if r.Result == wire.ResultResync {
			resync = true
		} else {
			prefixes = append(prefixes, r.Dst.String())
		}
	}
	slices.Sort(prefixes)
	return prefixes, resync
}

// TestHelperWatch: the helper tells its watcher, at once, what changes at
// the node subnets other than by its own requests: a route of ours
// deleted by hand, a foreign route appearing, an interface going down
// (which flushes its routes without a notification) and coming up. A
// newer watch replaces an older one; a watcher that stops reading is
// closed, and the helper serves on; after notifications are lost
// (ENOBUFS) the view is rebuilt, the watcher told to resync, and requests
// are answered as the kernel has it.
func TestHelperWatch(t *testing.T) {
	ns := newNetns(t, "vxlan100", "vxlan101")
	addVeth(t, ns, "eth1")
	h, sock := startHelper(t, ns, os.Getuid(), "--allowed-interface", "vxlan100", "--allowed-interface", "vxlan101")
	c := dialHelper(t, sock)
	w := watch(t, sock)

	// Our own changes are no news; a deletion by hand is, alone.
	want(t, call(t, c, add("10.42.2.0/24", "vxlan100")), wire.StatusOK, wire.ResultCreated)
	want(t, call(t, c, add("10.42.2.0/24", "vxlan101")), wire.StatusOK, wire.ResultMoved)
	testutil.Run(t, "ip", "-n", ns, "route", "del", "10.42.2.0/24")
	if got, resync := changed(events(t, w)); !slices.Equal(got, []string{"10.42.2.0/24"}) || resync {
		t.Fatalf("after a deletion by hand: %v (resync %v); want only 10.42.2.0/24", got, resync)
	}
	// A foreign route appearing at a node subnet; routes elsewhere are no news.
	testutil.Run(t, "ip", "-n", ns, "route", "add", "10.43.3.0/24", "dev", "eth1")
	testutil.Run(t, "ip", "-n", ns, "route", "add", "10.42.3.0/25", "dev", "eth1")
	testutil.Run(t, "ip", "-n", ns, "route", "add", "10.42.3.0/24", "dev", "eth1", "proto", "static", "metric", "5")
	if got, _ := changed(events(t, w)); !slices.Equal(got, []string{"10.42.3.0/24"}) {
		t.Fatalf("after a foreign route appeared: %v; want only 10.42.3.0/24", got)
	}
	// An interface going down: its routes go without a notification, the
	// watcher hears of each; coming up, it is told to resync.
	for _, dst := range []string{"10.42.4.0/24", "10.42.5.0/24", "10.42.6.0/24"} {
		want(t, call(t, c, add(dst, "vxlan101")), wire.StatusOK, wire.ResultCreated)
	}
	testutil.Run(t, "ip", "-n", ns, "link", "set", "vxlan101", "down")
	if got, _ := changed(events(t, w)); !slices.Equal(got, []string{"10.42.4.0/24", "10.42.5.0/24", "10.42.6.0/24"}) {
		t.Fatalf("after vxlan101 went down: %v", got)
	}
	want(t, call(t, c, add("10.42.4.0/24", "vxlan101")), wire.StatusNoIface, wire.ResultNone)
	testutil.Run(t, "ip", "-n", ns, "link", "set", "vxlan101", "up")
	if _, resync := changed(events(t, w)); !resync {
		t.Fatal("vxlan101 came up, and the watcher was not told to resync")
	}
	want(t, call(t, c, add("10.42.4.0/24", "vxlan101")), wire.StatusOK, wire.ResultCreated)

	// A newer watch replaces this one, which the helper closes.
	stuck := watch(t, sock)
	w.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := w.Read(make([]byte, wire.Size)); !errors.Is(err, io.EOF) {
		t.Fatalf("the replaced watch: %v; want it closed", err)
	}
	// A watcher that never reads: the helper serves on, and closes it when
	// its socket is full, never queueing for it.
	var script strings.Builder
	for i := range 2000 {
		fmt.Fprintf(&script, "route add 10.42.%d.0/24 dev eth1 proto static metric 300\n", 100+i%100)
		fmt.Fprintf(&script, "route del 10.42.%d.0/24 dev eth1 proto static metric 300\n", 100+i%100)
	}
	ipBatch(t, ns, script.String())
	want(t, call(t, c, wire.Record{Op: wire.OpHello, Tag: 3}), wire.StatusOK, wire.ResultNone)
	stuck.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, wire.MaxBatch*wire.Size)
	var err error
	for err == nil {
		_, err = stuck.Read(buf)
	}
	if !errors.Is(err, io.EOF) {
		t.Fatalf("the watcher that did not read: %v; want it closed", err)
	}

	// Lost notifications: with the helper stopped, far more changes than
	// its socket's buffer holds; when it runs again, it rebuilds its view
	// and tells the watcher to resync, and answers requests as the kernel
	// has it.
	w = watch(t, sock)
	h.Cmd.Process.Signal(syscall.SIGSTOP)
	script.Reset()
	for i := range 40000 {
		fmt.Fprintf(&script, "route add 10.42.%d.0/24 dev eth1 proto static metric %d\n", 100+i%100, 1000+i/100)
	}
	fmt.Fprintf(&script, "route add 10.42.7.0/24 dev eth1 proto static\n")
	fmt.Fprintf(&script, "route add 10.42.8.0/24 dev vxlan100 proto 81\n")
	ipBatch(t, ns, script.String())
	h.Cmd.Process.Signal(syscall.SIGCONT)
	for resync := false; !resync; {
		_, resync = changed(events(t, w))
	}
	want(t, call(t, c, add("10.42.7.0/24", "vxlan100")), wire.StatusConflict, wire.ResultNone)
	want(t, call(t, c, add("10.42.8.0/24", "vxlan100")), wire.StatusOK, wire.ResultUnchanged)
	want(t, call(t, c, add("10.42.9.0/24", "vxlan100")), wire.StatusOK, wire.ResultCreated)
	want(t, call(t, c, add("10.42.150.0/24", "vxlan100")), wire.StatusConflict, wire.ResultNone)
	recs, err := exchange(c, wire.Record{Op: wire.OpList, Tag: 4}.Append(nil))
	if err != nil {
		t.Fatal(err)
	}
	var listed []string
	for _, r := range recs[:len(recs)-1] {
		listed = append(listed, r.Dst.String()+" dev "+r.Ifname)
	}
	slices.Sort(listed)
	var kernel []string
	for line := range strings.Lines(routes(t, ns, "proto", "81")) {
		f := strings.Fields(line)
		kernel = append(kernel, f[0]+" dev "+f[2])
	}
	slices.Sort(kernel)
	if !slices.Equal(listed, kernel) {
		t.Fatalf("after lost notifications the helper lists\n%v\nthe kernel holds\n%v", listed, kernel)
	}
	if !strings.Contains(h.Output(), "route helper serving") || h.Exited() {
		t.Fatalf("the helper stopped:\n%s", h.Output())
	}
}

// ipBatch runs ip(8) commands in the namespace, one per line.
func ipBatch(t *testing.T, ns, script string) {
	t.Helper()
	cmd := exec.Command("ip", "-n", ns, "-batch", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ip -batch: %v\n%s", err, out)
	}
}
