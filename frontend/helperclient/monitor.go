package helperclient

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/quiltmesh/quilt-runtime/frontend/route"
	"github.com/quiltmesh/quilt-runtime/shared/wire"
)

// Monitor passes every request to the helper and keeps the helper's
// health from what it learns, from two sources: every hello (Poll's, the
// only way back up) and every other request that finds the helper
// unavailable (down at once, before that request's caller hears back). A
// request whose caller's deadline had passed proves nothing about the
// helper, so it is not counted. Each change of health is passed to the
// change function, in the order it was seen.
type Monitor struct {
	helper RouteHelper
	socket string // for log lines
	log    *slog.Logger
	change func(err error) // called with mu held: it must not call the monitor

	mu    sync.Mutex
	known bool
	err   error // the helper's health as last seen: nil, up
}

// NewMonitor returns a monitor of h, whose socket log lines name, calling
// change (if not nil) with each change of the helper's health: nil when
// it answers again, else why it does not.
func NewMonitor(h RouteHelper, socket string, log *slog.Logger, change func(err error)) *Monitor {
	return &Monitor{helper: h, socket: socket, log: log, change: change}
}

// Health returns whether the helper answered when last asked, and if not,
// why.
func (m *Monitor) Health() (up bool, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.known {
		return false, errors.New("route helper not checked yet")
	}
	return m.err == nil, m.err
}

// report records one observation (nil: the helper answered) and passes it
// on if it changes the health. It reports whether it did.
func (m *Monitor) report(err error) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.known && (m.err == nil) == (err == nil) {
		return false
	}
	m.known, m.err = true, err
	if m.change != nil {
		m.change(err)
	}
	return true
}

// Hello asks the helper for a hello and records its answer either way.
func (m *Monitor) Hello(ctx context.Context) error {
	err := m.helper.Hello(ctx)
	m.report(err)
	return err
}

// Apply passes the changes on; a change that found the helper unavailable
// turns it down.
func (m *Monitor) Apply(ctx context.Context, changes []route.Route) ([]wire.Result, []error) {
	res, errs := m.helper.Apply(ctx, changes)
	for _, err := range errs {
		if errors.Is(err, ErrUnavailable) {
			m.lost(ctx, err)
			break
		}
	}
	return res, errs
}

// List passes the list on; one that found the helper unavailable turns it
// down.
func (m *Monitor) List(ctx context.Context, each func(route.Route)) error {
	err := m.helper.List(ctx, each)
	if errors.Is(err, ErrUnavailable) {
		m.lost(ctx, err)
	}
	return err
}

// Watch passes the watch through. Its end does not flip health by itself:
// the helper ends a watch for reasons of its own that say nothing about
// whether it answers (it closes a watcher that fell behind, whose next
// watch begins with a resync; a newer watcher replaces an older one), and
// the agent's service must not turn NOT_SERVING for those until the next
// poll. So an end that found the helper unavailable is checked at once
// with one hello, reported either way: a helper that died is NOT_SERVING
// at once, even with no request under way; one that still answers stays
// SERVING.
func (m *Monitor) Watch(ctx context.Context, report func(resync bool, changed []netip.Prefix)) error {
	err := m.helper.Watch(ctx, report)
	if errors.Is(err, ErrUnavailable) && ctx.Err() == nil {
		if herr := m.helper.Hello(ctx); herr != nil {
			m.lost(ctx, herr)
		} else {
			m.report(nil)
		}
	}
	return err
}

// lost reports a request that found the helper unavailable.
func (m *Monitor) lost(ctx context.Context, err error) {
	if d, ok := ctx.Deadline(); ctx.Err() != nil || ok && !time.Now().Before(d) {
		return
	}
	if m.report(err) {
		m.log.Warn("route helper unavailable: health NOT_SERVING until a hello succeeds", "err", err)
	}
}

// Poll asks the helper for a hello every interval until ctx ends, and logs
// each change it sees. It also keeps the connection from idling out.
func (m *Monitor) Poll(ctx context.Context, interval time.Duration) {
	var seen, healthy bool
	for {
		err := m.Hello(ctx)
		if !seen || healthy != (err == nil) {
			seen, healthy = true, err == nil
			if err != nil {
				m.log.Warn("route helper unavailable", "socket", m.socket, "err", err)
			} else {
				m.log.Info("route helper connected", "socket", m.socket)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(interval):
		}
	}
}
