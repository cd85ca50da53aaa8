package helperclient

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/quiltmesh/quilt-runtime/frontend/internal/testkit"
	"github.com/quiltmesh/quilt-runtime/frontend/route"
)

// monitored returns a monitor of h and the changes of health it passed on
// so far ("up" or "down").
func monitored(h RouteHelper) (*Monitor, *[]string) {
	var changes []string
	m := NewMonitor(h, "test.sock", slog.New(slog.DiscardHandler), func(err error) {
		if err == nil {
			changes = append(changes, "up")
		} else {
			changes = append(changes, "down")
		}
	})
	return m, &changes
}

// expect fails unless the monitor reads up as want.
func expect(t *testing.T, m *Monitor, step string, want bool) {
	t.Helper()
	if up, err := m.Health(); up != want {
		t.Fatalf("%s: up %v (%v), want %v", step, up, err, want)
	}
}

// TestHealthFlipsAtOnce: a request that finds the helper unavailable turns
// its health down before it returns; only a hello brings it back; a
// request whose caller's deadline had passed, or one the helper refused,
// changes nothing.
func TestHealthFlipsAtOnce(t *testing.T) {
	f := testkit.New()
	f.Conflict(netip.MustParsePrefix("10.42.9.0/24"))
	m, changes := monitored(f)
	ctx := context.Background()
	if up, err := m.Health(); up || err == nil {
		t.Fatalf("before any request: up %v, %v; want not checked yet", up, err)
	}
	add := []route.Route{{Dst: netip.MustParsePrefix("10.42.2.0/24"), Ifname: "vxlan100"}}
	gone := fmt.Errorf("%w: read: connection reset by peer", ErrUnavailable)

	m.Hello(ctx)
	expect(t, m, "after a hello", true)
	if _, errs := m.Apply(ctx, []route.Route{{Dst: netip.MustParsePrefix("10.42.9.0/24"), Ifname: "vxlan100"}}); errs[0] == nil {
		t.Fatal("the fake did not refuse the conflicting add")
	}
	expect(t, m, "after a refused add (the helper answered)", true)

	f.Fail(gone)
	expired, cancel := context.WithDeadline(ctx, time.Now().Add(-time.Second))
	defer cancel()
	m.Apply(expired, add)
	expect(t, m, "after an unavailable answer past the caller's deadline", true)
	m.Apply(ctx, add)
	expect(t, m, "right after an add found the helper unavailable", false)
	if _, err := m.Health(); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("health says %v, want why", err)
	}

	f.Fail(nil)
	if _, errs := m.Apply(ctx, add); errs[0] != nil {
		t.Fatal(errs[0])
	}
	expect(t, m, "after a successful add: the hello poll is the way back", false)
	m.Hello(ctx)
	expect(t, m, "after a hello", true)

	f.Fail(gone)
	m.List(ctx, func(route.Route) {})
	expect(t, m, "right after a list found the helper unavailable", false)
	m.Apply(ctx, add)
	m.Hello(ctx)
	if fmt.Sprint(*changes) != "[up down up down]" {
		t.Errorf("changes passed on: %v, want [up down up down]: repeated observations must not pass again", *changes)
	}
}

// TestWatchEndChecksHealth: a watch that ends finding the helper
// unavailable turns health down only if a hello, sent at once, fails too;
// a watch ended by its own context sends none.
func TestWatchEndChecksHealth(t *testing.T) {
	f := testkit.New()
	m, _ := monitored(f)
	ctx := context.Background()
	gone := fmt.Errorf("%w: watch: read: connection reset by peer", ErrUnavailable)
	nop := func(bool, []netip.Prefix) {}

	m.Hello(ctx)
	expect(t, m, "after a hello", true)
	f.FailWatch(gone)
	if err := m.Watch(ctx, nop); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("watch: %v, want it passed through", err)
	}
	expect(t, m, "a watch ended, the helper still answers a hello", true)
	f.Fail(gone)
	m.Watch(ctx, nop)
	expect(t, m, "a watch ended, and the hello failed", false)

	f.Fail(nil)
	f.FailWatch(nil)
	m.Hello(ctx)
	expect(t, m, "a hello again", true)
	stopped, cancel := context.WithCancel(ctx)
	cancel()
	f.Fail(gone)
	f.FailWatch(fmt.Errorf("%w: %w", ErrUnavailable, context.Canceled))
	m.Watch(stopped, nop)
	expect(t, m, "a watch ended by its context", true)
}
