package e2e

import (
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/quiltmesh/quilt-runtime/internal/testutil"
	"github.com/quiltmesh/quilt-runtime/proto/quiltpb"
)

// logMark is a position in a process's output.
type logMark struct {
	p   *testutil.Proc
	off int
}

func mark(p *testutil.Proc) logMark { return logMark{p, len(p.Output())} }

// since returns the output written after m.
func (m logMark) since() string { return m.p.Output()[m.off:] }

// TestSteadyStateLogs plays the Quilt Mesh agent in steady state against
// the real pair: ConfigureNodeSubnet once, then InjectRoute for each of
// 255 peers, three rounds. The first round logs every route it adds, in
// the frontend and in the helper's audit log; the next rounds change
// nothing, and neither process logs a line at INFO for them but the
// frontend's periodic summary, which counts every call. A route deleted
// by hand between rounds is repaired at once by the helper's watch, and
// both logs say so. The periodic resync is an hour apart, so that the
// repair is the watch's and nothing else runs between the rounds.
func TestSteadyStateLogs(t *testing.T) {
	n := newNode(t)
	metrics := testutil.FreeLoopback(t)
	fe := n.startFrontend(t, "--log-summary-interval", "1s", "--resync-interval", "1h", "--metrics-addr", metrics)
	scrape := newScraper(t, n.ns, metrics)
	// applies is how many route requests the frontend has sent the helper.
	applies := func() float64 {
		return scrape.metric(t, `quilt_helper_request_duration_seconds_count{op="apply",outcome="ok"}`)
	}
	rt, adm, _ := n.clients(t)
	ctx := ctxT(t)
	n.configure(t, "10.42.0.0/24")
	barriers := 0
	// barrier returns the output of both processes since the marks, up to
	// a line each writes only now: everything logged before is in.
	barrier := func(fm, hm logMark) (front, helper string) {
		t.Helper()
		barriers++
		id := fmt.Sprintf("barrier-%d", barriers)
		if _, err := adm.AllocateIP(ctx, &quiltpb.AllocateIPRequest{ContainerId: id}); err != nil {
			t.Fatal(err)
		}
		refused := strings.Count(n.helper.Output(), "refused connection: uid not allowed")
		dialHelper(t, n.sock) // as root, which the helper does not admit
		waitFor(t, fe, func() bool { return strings.Contains(fe.Output(), " to container "+id) })
		waitFor(t, n.helper, func() bool {
			return strings.Count(n.helper.Output(), "refused connection: uid not allowed") > refused
		})
		return upTo(fm.since(), " to container "+id), upTo(hm.since(), "refused connection: uid not allowed")
	}
	// info returns the lines at INFO and above but the summary's.
	info := func(out string) []string {
		var lines []string
		for _, l := range strings.Split(out, "\n") {
			if !strings.Contains(l, "level=DEBUG") && strings.Contains(l, "level=") && !strings.Contains(l, "route calls in the last") {
				lines = append(lines, l)
			}
		}
		return lines
	}
	round := func() {
		t.Helper()
		for i := 1; i <= 255; i++ {
			r, err := rt.InjectRoute(ctx, &quiltpb.InjectRouteRequest{Destination: fmt.Sprintf("10.42.%d.0/24", i), ViaInterface: "vxlan100"})
			if err != nil || !r.Success {
				t.Fatalf("InjectRoute 10.42.%d.0/24: %v %v", i, r, err)
			}
		}
	}
	peer := fmt.Sprintf("uid %d", frontendUID)

	fm, hm := mark(fe), mark(n.helper)
	round()
	front, helper := barrier(fm, hm)
	if got := strings.Count(front, `msg="Added route: 10.42.`); got != 255 {
		t.Errorf("round 1: %d Added route lines in the frontend's log, want 255", got)
	}
	if got := strings.Count(front, `msg="RPC: InjectRoute(destination=10.42.`); got != 255 {
		t.Errorf("round 1: %d RPC lines in the frontend's log, want 255", got)
	}
	if got := strings.Count(strings.Join(auditLines(helper, peer), "\n"), "vxlan100 created ok 0"); got != 255 {
		t.Errorf("round 1: %d route adds in the helper's audit log, want 255:\n%s", got, helper)
	}
	// Right after the injects, the status shows them held, whenever the
	// last resync ran.
	whenever := protocmp.IgnoreFields(&quiltpb.GetStatusResponse{}, "installed_routes", "last_resync")
	want := &quiltpb.GetStatusResponse{Subnet: "10.42.0.0/24", Gateway: "10.42.0.1", Allocations: 1, Capacity: 245,
		DesiredRoutes: 255, InstalledRoutesNow: 255, InSyncRoutesNow: 255, HelperAvailable: true}
	if diff := cmp.Diff(want, getStatus(t, adm), stateOnly, whenever); diff != "" {
		t.Errorf("status after round 1 (-want +got):\n%s", diff)
	}
	// quiet checks that a round of re-injects logged nothing at INFO, left
	// no audit line, and sent the helper no request since sent: the watch
	// is open, and the helper's last answers said the kernel holds them.
	var sent float64
	quiet := func(what string, front, helper string) {
		t.Helper()
		if got := applies() - sent; got != 0 {
			t.Errorf("%s: the frontend sent the helper %v route requests, want none", what, got)
		}
		if lines := info(front); len(lines) > 0 {
			t.Errorf("%s: the frontend logged at INFO:\n%s", what, strings.Join(lines[:min(5, len(lines))], "\n"))
		}
		if lines := auditLines(helper, peer); len(lines) > 0 {
			t.Errorf("%s: the helper's audit log has:\n%s", what, strings.Join(lines[:min(5, len(lines))], "\n"))
		}
	}
	fm, hm, sent = mark(fe), mark(n.helper), applies()
	round()
	front, helper = barrier(fm, hm)
	quiet("round 2", front, helper)

	// A route deleted by hand: the watch re-adds it, and says so as a
	// resync would.
	fm, hm = mark(fe), mark(n.helper)
	testutil.Run(t, "ip", "-n", n.ns, "route", "del", "10.42.77.0/24", "proto", "81")
	waitFor(t, fe, func() bool {
		return strings.Contains(fm.since(), "resync: re-added missing route 10.42.77.0/24 dev vxlan100")
	})
	front, helper = barrier(fm, hm)
	var repairs []string
	for _, l := range info(front) {
		repairs = append(repairs, l[strings.Index(l, "msg="):])
	}
	if len(repairs) != 2 || !strings.HasPrefix(repairs[0], `msg="resync: re-added missing route 10.42.77.0/24 dev vxlan100"`) || !strings.HasPrefix(repairs[1], `msg="watch: done" added=1 `) {
		t.Errorf("the repair: the frontend logged at INFO:\n%s\nwant the re-added line, then watch: done", strings.Join(repairs, "\n"))
	}
	if got := strings.Join(auditLines(helper, peer), "\n"); got != "add 10.42.77.0/24 vxlan100 created ok 0" {
		t.Errorf("the repair: the helper's audit log has:\n%s\nwant the one add", got)
	}

	fm, hm, sent = mark(fe), mark(n.helper), applies()
	round()
	front, helper = barrier(fm, hm)
	quiet("round 3", front, helper)

	// The summaries count every call: 1 configure, 255 adds and the
	// watch's repair changed something, 510 re-injects found everything
	// as asked.
	waitFor(t, fe, func() bool { return summed(fe.Output()) == [4]int{767, 510, 257, 0} })
	if got := ours(t, n.ns); strings.Count(got, "\n") != 255 {
		t.Errorf("%d routes of ours in the kernel, want 255", strings.Count(got, "\n"))
	}
}

// upTo returns out before the last line that contains s.
func upTo(out, s string) string {
	return out[:strings.LastIndex(out[:strings.LastIndex(out, s)], "\n")+1]
}

// summed adds up the frontend's summary lines: calls, unchanged, changed,
// failed.
func summed(out string) [4]int {
	var sum [4]int
	for _, l := range strings.Split(out, "\n") {
		i := strings.Index(l, " calls=")
		if i < 0 || !strings.Contains(l, "route calls in the last") {
			continue
		}
		var n [4]int
		fmt.Sscanf(l[i:], " calls=%d unchanged=%d changed=%d failed=%d", &n[0], &n[1], &n[2], &n[3])
		for k := range n {
			sum[k] += n[k]
		}
	}
	return sum
}
