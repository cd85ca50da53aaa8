package reconcile

import (
	"net/netip"

	"github.com/quiltmesh/quilt-runtime/frontend/route"
	"github.com/quiltmesh/quilt-runtime/shared/wire"
)

// The agent re-injects every peer's route every few seconds, and nearly
// always the kernel holds it already. While the helper's watch is open,
// the frontend knows that without asking: the helper's answers say what
// the kernel holds after each request, and the watch reports at once
// every route of quilt's that changes by any other hand, and every
// foreign route that appears at one of ours. So Apply answers an add of a
// desired route the kernel is known to hold as desired "unchanged" without
// a helper round trip; anything else still goes to the helper.
//
// The knowledge (desired's heldBit) is only ever added to from an answer the
// helper gave while one watch was open throughout, with no report from it
// in between; every report drops what it names (a resync report, all of
// it), and so does the end of the watch. A report that arrives just after
// such an answer only makes a later request ask the helper again. A
// change by another hand that the watch has not reported yet makes a
// re-inject answer "unchanged" while the route is gone, as if the change
// had come just after the answer: the watch's report repairs it at once,
// and the periodic resync is still the backstop.

// WatchReport takes a report of the helper's watch: a resync (the first
// report of every watch, or the helper lost track of the kernel) drops
// everything known of the kernel, and changed prefixes drop theirs. It
// does not repair anything: RepairChanged and Resync do.
func (r *Reconciler) WatchReport(resync bool, changed []netip.Prefix) {
	r.watch.Lock()
	defer r.watch.Unlock()
	r.watch.epoch++
	if resync {
		r.watch.open = true
		r.routes.releaseAll()
		return
	}
	for _, dst := range changed {
		r.routes.release(dst)
	}
}

// WatchEnded says the helper's watch ended: until the next one opens,
// nothing is known of the kernel without asking.
func (r *Reconciler) WatchEnded() {
	r.watch.Lock()
	defer r.watch.Unlock()
	r.watch.epoch++
	r.watch.open = false
	r.routes.releaseAll()
}

// watchEpoch is the watch's count of reports so far, taken before a
// helper request, for noteAnswers.
func (r *Reconciler) watchEpoch() uint64 {
	r.watch.Lock()
	defer r.watch.Unlock()
	return r.watch.epoch
}

// noteAnswers notes what the helper's answers to changes say the kernel
// holds: an add it made or found made holds, anything else does not. They
// count only if the watch was open throughout and reported nothing since
// epoch; otherwise the changes are only dropped.
func (r *Reconciler) noteAnswers(epoch uint64, changes []route.Route, results []wire.Result, errs []error) {
	r.watch.Lock()
	defer r.watch.Unlock()
	trusted := r.watch.open && r.watch.epoch == epoch
	for i, c := range changes {
		held := errs[i] == nil && !c.IsRemoval() &&
			(results[i] == wire.ResultCreated || results[i] == wire.ResultUnchanged || results[i] == wire.ResultMoved)
		if trusted && held {
			r.routes.hold(c.Dst, c.Ifname)
		} else {
			r.routes.release(c.Dst)
		}
	}
}

// known is how many desired routes the kernel is known to hold without
// asking the helper.
func (r *Reconciler) known() int { return r.routes.heldLen() }
