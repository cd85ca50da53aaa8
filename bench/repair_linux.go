package bench

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// openRepair opens what the repair rows need in ns: a socket to delete
// routes and bounce the device with, and an observer of the peers' routes.
func openRepair(ns string, peers []netip.Prefix) (*nlConn, *observer, error) {
	nl, err := openNL(ns, Device, 1)
	if err != nil {
		return nil, nil, err
	}
	obs, err := openObserver(ns, nl.ifidx, peers)
	if err != nil {
		nl.close()
		return nil, nil, err
	}
	return nl, obs, nil
}

// repairWait is how long the delete row waits for one route to come back:
// past it, not even the periodic resync, the backstop, brought it back.
func (r *runner) repairWait() time.Duration { return 3*r.cfg.ResyncInterval + 10*time.Second }

// repairDelete deletes our route at each peer given, one at a time, as
// `ip route del` does, and times each from the deletion until the route
// is back in the kernel: the helper's watch tells the frontend, which puts
// it back. A route that does not come back fails the row.
func (r *runner) repairDelete(ctx context.Context, ns string, peers []netip.Prefix, idx []int, deadline time.Time) outcome {
	nl, obs, err := openRepair(ns, peers)
	if err != nil {
		return outcome{err: err}
	}
	defer nl.close()
	defer obs.close()
	wait := r.repairWait()
	return phase(ctx, idx, 1, deadline, func(ctx context.Context, _, i int) error {
		if !obs.ours[peers[i]] {
			return fmt.Errorf("%v: no route of ours to delete", peers[i])
		}
		if err := nl.deleteRoute(peers[i]); err != nil {
			return err
		}
		// The kernel queued the deletion's notification before its ack,
		// so wait sees the route gone before it can see it back.
		err := obs.wait(ctx, time.Now().Add(wait), func() bool { return obs.ours[peers[i]] })
		if errors.Is(err, errNotBack) {
			err = fmt.Errorf("%v deleted, not back after %v: %w", peers[i], wait, err)
		}
		return err
	})
}

// bounce is what repairBounce measured.
type bounce struct {
	back     int           // routes back
	took     time.Duration // from the down request until every route was back
	down, up time.Duration // the kernel's time for each request, to its ack
	afterUp  time.Duration // from the up's ack until every route was back
}

// note says how the bounce's time divides: the kernel's down alone takes
// milliseconds (closing a device waits for an RCU grace period).
func (b bounce) note() string {
	return fmt.Sprintf("%s down took the kernel %s, up %s; every route was back %s after the up", Device,
		fmtDur(b.down.Seconds()), fmtDur(b.up.Seconds()), fmtDur(b.afterUp.Seconds()))
}

// repairBounce sets the device down, which flushes its routes without a
// notification, and up again, and times from the down request until every
// route of ours at the peers is back, at most Config.PhaseLimit.
func (r *runner) repairBounce(ctx context.Context, ns string, peers []netip.Prefix, want int) (bounce, error) {
	var b bounce
	nl, obs, err := openRepair(ns, peers)
	if err != nil {
		return b, err
	}
	defer nl.close()
	defer obs.close()
	if len(obs.ours) != want {
		return b, fmt.Errorf("before the bounce the kernel holds %d routes of ours at the peers, want %d", len(obs.ours), want)
	}
	start := time.Now()
	if err := nl.setUp(false); err != nil {
		return b, err
	}
	b.down = time.Since(start)
	// What was queued before the down is applied; then the view loses
	// what the kernel flushed before it acknowledged the down.
	derr := obs.drain()
	clear(obs.ours)
	t := time.Now()
	err = errors.Join(derr, nl.setUp(true))
	upped := time.Now()
	b.up = upped.Sub(t)
	if err != nil {
		b.took = time.Since(start)
		return b, err
	}
	until := start.Add(r.cfg.PhaseLimit)
	for {
		err := obs.wait(ctx, until, func() bool { return len(obs.ours) >= want })
		now := time.Now()
		b.back, b.took, b.afterUp = len(obs.ours), now.Sub(start), now.Sub(upped)
		if errors.Is(err, errNotBack) {
			err = fmt.Errorf("%d of %d routes back after %v: %w", b.back, want, r.cfg.PhaseLimit, err)
		}
		if err != nil {
			return b, err
		}
		// A dump confirms what the notifications said (the clock has
		// stopped); if it disagrees, wait on.
		if err := obs.resync(); err != nil {
			return b, err
		}
		if len(obs.ours) >= want {
			b.back = want
			return b, nil
		}
	}
}

// vethNetns names the namespace that holds the far ends of ns's extra
// veths; it is ours too (namePrefix), so every sweep finds it.
func vethNetns(ns string) string { return ns + "-veths" }

// addVeths makes n veth pairs, all up, as a container host has them: qv0,
// qv1, ... in ns, their peers in vethNetns(ns). Removing that namespace
// removes them all; the caller does, also when this fails.
func addVeths(ctx context.Context, ns string, n int) error {
	peer := vethNetns(ns)
	if err := createNetns(ctx, peer, ""); err != nil {
		return err
	}
	var add, up, peerUp strings.Builder
	for i := range n {
		fmt.Fprintf(&add, "link add qv%d type veth peer name qp%d netns %s\n", i, i, peer)
		fmt.Fprintf(&up, "link set qv%d up\n", i)
		fmt.Fprintf(&peerUp, "link set qp%d up\n", i)
	}
	for _, b := range []struct{ ns, lines string }{{ns, add.String()}, {ns, up.String()}, {peer, peerUp.String()}} {
		if err := ipBatch(ctx, b.ns, b.lines); err != nil {
			return err
		}
	}
	out, err := command(ctx, "ip", "-n", ns, "-o", "link", "show", "type", "veth")
	if got := strings.Count(out, "\n"); err == nil && got != n {
		err = fmt.Errorf("%s holds %d veths, want %d", ns, got, n)
	}
	return err
}
