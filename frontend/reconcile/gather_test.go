package reconcile

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"testing"

	"github.com/quiltmesh/quilt-runtime/frontend/helperclient"
	"github.com/quiltmesh/quilt-runtime/frontend/internal/testkit"
	"github.com/quiltmesh/quilt-runtime/frontend/route"
	"github.com/quiltmesh/quilt-runtime/shared/wire"
)

// nullStore records nothing and never fails.
type nullStore struct{}

func (nullStore) ChangeRoutes(iter.Seq[route.Route]) error { return nil }
func (nullStore) AdoptRoutes(iter.Seq[route.Route]) error  { return nil }

// recordingHelper records the changes of every Apply and, if during is
// set, calls it in the middle of each with the call's number (1 the
// first), before the changes are carried out.
type recordingHelper struct {
	*testkit.Helper
	during func(call int)
	mu     sync.Mutex
	calls  [][]route.Route
}

func (h *recordingHelper) Apply(ctx context.Context, changes []route.Route) ([]wire.Result, []error) {
	h.mu.Lock()
	h.calls = append(h.calls, slices.Clone(changes))
	call := len(h.calls)
	during := h.during
	h.mu.Unlock()
	if during != nil {
		during(call)
	}
	return h.Helper.Apply(ctx, changes)
}

// count is the number of Apply calls so far.
func (h *recordingHelper) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.calls)
}

// TestConcurrentChangesShareAMessage: route changes that arrive while a
// helper request is in flight go to the helper together, in one request,
// and each caller gets its own answers; one whose caller gave up while it
// waited is not sent.
func TestConcurrentChangesShareAMessage(t *testing.T) {
	peer := func(i int) netip.Prefix {
		return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 42, byte(2 + i), 0}), 24)
	}
	fake := testkit.New(route.Route{Dst: peer(3), Ifname: "vxlan100"})
	var r *Reconciler
	h := &recordingHelper{Helper: fake, during: func(call int) {
		if call > 1 {
			return
		}
		for r.requests.Waiting() < 9 {
			runtime.Gosched()
		}
	}}
	r = New(Config{Policy: testkit.Policy, Helper: h, Store: nullStore{}, Log: slog.New(slog.DiscardHandler)})
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	var wg sync.WaitGroup
	applied := make([]Applied, 10)
	for i := range 10 {
		ctx := context.Background()
		if i == 5 {
			ctx = gone
		}
		wg.Go(func() {
			var err error
			if applied[i], err = r.Apply(ctx, Batch{Changes: []route.Route{{Dst: peer(i), Ifname: "vxlan100"}}}); err != nil {
				t.Error(err)
			}
		})
		if i == 0 {
			for { // the first is in flight before the others come
				if h.count() == 1 {
					break
				}
				runtime.Gosched()
			}
		}
	}
	wg.Wait()
	if len(h.calls) != 2 || len(h.calls[0]) != 1 || len(h.calls[1]) != 8 {
		t.Fatalf("the helper was asked %d times, with %v changes; want 1, then the 8 that queued and had not given up", len(h.calls), h.calls)
	}
	for i, a := range applied {
		want, err := wire.ResultCreated, a.Errs[0]
		if i == 3 {
			want = wire.ResultUnchanged
		}
		switch {
		case i == 5 && !errors.Is(err, helperclient.ErrUnavailable):
			t.Errorf("the change of a caller that gave up: %v, want unavailable", err)
		case i != 5 && (err != nil || a.Results[0] != want):
			t.Errorf("change %d: %v %v, want %v", i, a.Results[0], err, want)
		}
	}
	if routes := fake.Routes(); len(routes) != 9 || routes[peer(5)] != "" {
		t.Errorf("the kernel holds %v: want all but %v", routes, peer(5))
	}
	if got := fmt.Sprint(r.DesiredLen()); got != "10" {
		t.Errorf("%s desired, want 10: a change is recorded before the helper is asked", got)
	}
}
