package bench

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/quiltmesh/quilt-runtime/internal/testutil"
)

// testNetns makes a namespace with vxlan100 for one test and removes it
// when the test ends.
func testNetns(t *testing.T) string {
	t.Helper()
	requireRoot(t)
	name := fmt.Sprintf("%s%d-t%d", namePrefix, os.Getpid(), time.Now().UnixNano()%1e6)
	t.Cleanup(func() { removeNetns(name) })
	if err := createNetns(context.Background(), name, Device); err != nil {
		t.Fatal(err)
	}
	return name
}

// TestObserver: the observer the repair rows wait on sees exactly our
// routes via the device at the plan's peers, sees a deletion the kernel
// acknowledged before it can see the route back, gives up at its
// deadline and on a cancelled context, and catches up with a dump after
// the kernel dropped notifications it had no room for; and once closed,
// it leaves no goroutine behind.
func TestObserver(t *testing.T) {
	testutil.CheckGoroutines(t)
	ns := testNetns(t)
	plan, err := NewPlan(Cluster, NodePrefixLen, 1000)
	if err != nil {
		t.Fatal(err)
	}
	nl, err := openNL(ns, Device, 1024)
	if err != nil {
		t.Fatal(err)
	}
	defer nl.close()
	peers := plan.Peers[:3]
	if _, _, err := nl.pipelined(context.Background(), true, peers, 1024, time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	// Not ours, or not ours via the device at a peer: never counted.
	for _, args := range [][]string{
		{"route", "add", plan.Peers[3].String(), "dev", Device, "proto", "static"},
		{"route", "add", plan.Peers[4].String(), "dev", Device, "proto", "81", "table", "100"},
		{"route", "add", "192.168.7.0/24", "dev", Device, "proto", "81"},
	} {
		if _, err := command(context.Background(), "ip", append([]string{"-n", ns}, args...)...); err != nil {
			t.Fatal(err)
		}
	}
	obs, err := openObserver(ns, nl.ifidx, plan.Peers[:5])
	if err != nil {
		t.Fatal(err)
	}
	defer obs.close()
	has := func(want ...netip.Prefix) {
		t.Helper()
		if err := obs.drain(); err != nil {
			t.Fatal(err)
		}
		ok := len(obs.ours) == len(want)
		for _, p := range want {
			ok = ok && obs.ours[p]
		}
		if !ok {
			t.Fatalf("observer sees %v, want %v", obs.ours, want)
		}
	}
	has(peers...)

	ctx := context.Background()
	if err := nl.deleteRoute(peers[1]); err != nil {
		t.Fatal(err)
	}
	// Before it returns true, wait must have applied the deletion.
	calls := 0
	if err := obs.wait(ctx, time.Now().Add(time.Minute), func() bool { calls++; return !obs.ours[peers[1]] }); err != nil || calls != 1 {
		t.Fatalf("wait for the deletion: %v after %d looks, want at once", err, calls)
	}
	has(peers[0], peers[2])
	go nl.pipelined(ctx, true, peers[1:2], 1, time.Now().Add(time.Minute))
	if err := obs.wait(ctx, time.Now().Add(time.Minute), func() bool { return obs.ours[peers[1]] }); err != nil {
		t.Fatalf("wait for the route back: %v", err)
	}
	if err := obs.wait(ctx, time.Now().Add(50*time.Millisecond), func() bool { return false }); !errors.Is(err, errNotBack) {
		t.Fatalf("wait past its deadline: %v, want errNotBack", err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if err := obs.wait(cancelled, time.Now().Add(time.Minute), func() bool { return false }); !errors.Is(err, context.Canceled) {
		t.Fatalf("wait on a cancelled context: %v", err)
	}

	// A receive buffer too small for a thousand notifications: the
	// kernel drops some (ENOBUFS) and the dump makes up for them.
	obs.peers = map[netip.Prefix]bool{}
	for _, p := range plan.Peers {
		obs.peers[p] = true
	}
	if err := unix.SetsockoptInt(obs.fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 4096); err != nil {
		t.Fatal(err)
	}
	if _, _, err := nl.pipelined(ctx, true, plan.Peers[5:], 1024, time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	dumps := obs.dumps
	if err := obs.wait(ctx, time.Now().Add(10*time.Second), func() bool { return len(obs.ours) == len(plan.Peers)-2 }); err != nil {
		t.Fatalf("after ENOBUFS the observer sees %d routes, want %d: %v", len(obs.ours), len(plan.Peers)-2, err)
	}
	if obs.dumps == dumps {
		t.Fatal("no dump after the burst: the kernel dropped no notification, and the test shows nothing")
	}
}
