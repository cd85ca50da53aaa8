package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quiltmesh/quilt-runtime/internal/testutil"
)

// requireRoot skips the test without root, or fails it when CI=true.
func requireRoot(t *testing.T) {
	t.Helper()
	testutil.RequireRoot(t, "network namespaces, setpriv, rtnetlink")
}

// smokeBins builds the binaries the systems run, once for the package's
// tests.
var smokeBins = sync.OnceValues(func() (string, error) {
	bin, err := os.MkdirTemp("", "quilt-bench-test-")
	if err != nil {
		return "", err
	}
	cmd := exec.Command("go", "build", "-o", bin, "./helper/cmd/quilt-route-helper", "./frontend/cmd/quilt-runtime", "./bench/cmd/quilt-bench-single")
	cmd.Dir, cmd.Env = "..", append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build: %w\n%s", err, out)
	}
	return bin, nil
})

func TestMain(m *testing.M) {
	code := m.Run()
	if bin, err := smokeBins(); err == nil && strings.Contains(bin, "quilt-bench-test-") {
		os.RemoveAll(bin)
	}
	os.Exit(code)
}

// host is what a run must leave as it found it in the host's namespace:
// its routes and its links, by name.
func host(t *testing.T) string {
	t.Helper()
	routes, err := exec.Command("ip", "-4", "route", "show", "table", "all").CombinedOutput()
	if err != nil {
		t.Fatalf("ip route: %v\n%s", err, routes)
	}
	links, err := exec.Command("ip", "-o", "link", "show").CombinedOutput()
	if err != nil {
		t.Fatalf("ip link: %v\n%s", err, links)
	}
	var names []string
	for _, l := range strings.Split(strings.TrimSpace(string(links)), "\n") {
		if f := strings.Fields(l); len(f) > 1 {
			names = append(names, f[1])
		}
	}
	return fmt.Sprintf("routes:\n%slinks: %s\n", routes, strings.Join(names, " "))
}

// leftBehind reports what a run left: namespaces of this process, and
// children of this process still running one of the systems' binaries
// (each is started as one, through `ip netns exec` and setpriv, which
// exec).
func leftBehind() []string {
	left := ourNamespaces()
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		_, after, ok := strings.Cut(string(stat), ") ")
		f := strings.Fields(after)
		if err != nil || !ok || len(f) < 2 || f[1] != strconv.Itoa(os.Getpid()) {
			continue
		}
		exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if name := filepath.Base(exe); name == HelperBin || name == FrontendBin || name == SingleBin {
			left = append(left, fmt.Sprintf("%s pid %d", name, pid))
		}
	}
	return left
}

// smokeVeths is how many extra veths the smoke runs make: enough to show
// the row works, few enough to keep the tests quick.
const smokeVeths = 64

// TestSmoke runs the whole benchmark at N=8 on all three systems, so the
// harness is proven on every run of the tests: every workload measured
// (or unimplemented, for ApplyRoutes until the frontend has it; the drift
// repairs skipped on (b), which has no watch), each process seen with the
// identity and capabilities it should have, and nothing left behind: no
// namespace (the extra veths' included), no process, no goroutine, and
// the host's routes and links as they were.
func TestSmoke(t *testing.T) {
	requireRoot(t)
	testutil.CheckGoroutines(t)
	bin, err := smokeBins()
	if err != nil {
		t.Fatal(err)
	}
	before := host(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var log strings.Builder
	rep, err := Run(ctx, Config{BinDir: bin, Ns: []int{8}, PhaseLimit: time.Minute, Veths: smokeVeths, Log: slog.New(slog.NewTextHandler(&log, nil))})
	var text strings.Builder
	rep.WriteText(&text)
	t.Logf("progress:\n%s\n%s", log.String(), text.String())
	if err != nil {
		t.Fatal(err)
	}
	if left := leftBehind(); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
	if after := host(t); after != before {
		t.Errorf("the host's namespace changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if len(rep.Runs) != 1 || len(rep.Runs[0].Systems) != 3 {
		t.Fatalf("want one run of three systems, got %+v", rep.Runs)
	}
	run := rep.Runs[0]
	for _, s := range run.Systems {
		if s.Error != "" {
			t.Errorf("(%s) stopped: %s", s.ID, s.Error)
		}
		want := map[string]int{"a": 4, "b": 11, "c": 11}[s.ID]
		if len(s.Results) != want {
			t.Errorf("(%s): %d results, want %d", s.ID, len(s.Results), want)
		}
		for _, r := range s.Results {
			wl := workload(r.Workload)
			switch {
			case r.Status == StatusUnimplemented && strings.HasPrefix(r.Workload, "apply-"):
			case s.ID == "b" && wl.Watch:
				if r.Status != StatusSkipped {
					t.Errorf("(b) %s: %s, want skipped: (b) has no watch", r.Title, r.Status)
				}
			case r.Status != StatusOK || r.Routes != 8 || r.RoutesPerSec <= 0:
				t.Errorf("(%s) %s: %s, %d routes: %s", s.ID, r.Title, r.Status, r.Routes, r.Detail)
			case (r.P50OverBase != nil) != (wl.Base != ""):
				t.Errorf("(%s) %s: p50/base %v", s.ID, r.Title, deref(r.P50OverBase))
			case s.ID == "c" && (r.COverA == nil) != (wl.Kernel == ""):
				t.Errorf("(c) %s: c/a %v", r.Title, deref(r.COverA))
			case s.ID == "c" && wl.Watch && r.COverB != nil:
				t.Errorf("(c) %s: c/b %v, but (b) has no figure", r.Title, deref(r.COverB))
			case s.ID == "c" && !wl.Watch && (r.COverB == nil || (r.P50Ms != nil) != (r.P50COverB != nil)):
				t.Errorf("(c) %s: c/b %v, p50 c/b %v", r.Title, deref(r.COverB), deref(r.P50COverB))
			}
		}
	}
	if r := run.Systems[2].result("repair-delete"); r == nil || r.P50Ms == nil || r.P99Ms == nil {
		t.Errorf("(c) repair after route del: no latencies: %+v", r)
	}
	if r := run.Systems[2].result("repair-bounce"); r == nil || !strings.Contains(r.Note, "after the up") {
		t.Errorf("(c) repair after the bounce: no note of the kernel's share: %+v", r)
	}
	// Who ran what: the uid, the effective capabilities (CAP_NET_ADMIN is
	// bit 12), a high-water mark and a GOMAXPROCS for each.
	want := map[string]string{"b": SingleBin + " uid 0", "c": HelperBin + " uid 65534 caps 0000000000001000, " + FrontendBin + " uid 64210 caps 0000000000000000"}
	for _, s := range run.Systems[1:] {
		var got []string
		for _, p := range s.Processes {
			id := fmt.Sprintf("%s uid %d", p.Name, p.UID)
			if s.ID == "c" {
				id += " caps " + p.CapEff
			}
			got = append(got, id)
			if p.PeakRSSKiB <= 0 || p.GOMAXPROCS <= 0 || p.GoVersion == "" {
				t.Errorf("(%s) %s: peak RSS %d KiB, GOMAXPROCS %d (%s), %q", s.ID, p.Name, p.PeakRSSKiB, p.GOMAXPROCS, p.GOMAXPROCSFrom, p.GoVersion)
			}
		}
		if strings.Join(got, ", ") != want[s.ID] {
			t.Errorf("(%s) processes: %s, want %s", s.ID, strings.Join(got, ", "), want[s.ID])
		}
	}
	if run.Systems[1].Processes[0].GOMAXPROCSFrom != "reported" {
		t.Errorf("(b) GOMAXPROCS %s, want reported", run.Systems[1].Processes[0].GOMAXPROCSFrom)
	}
	for _, name := range []string{"repair after route del p50, (c)", "every route back after vxlan100 down, up, (c)",
		"InjectRoute again (resync) p50 over Health.Check p50, (c)", fmt.Sprintf("InjectRoute p50 with %d extra veths over without, (c)", smokeVeths)} {
		if i := slices.IndexFunc(rep.Targets, func(tg Target) bool { return tg.Name == name }); i < 0 || rep.Targets[i].Value == nil {
			t.Errorf("target %q: not measured", name)
		}
	}
	if rep.Machine.CPU == "" || rep.Machine.Kernel == "" {
		t.Errorf("machine %+v", rep.Machine)
	}
	if _, err := json.Marshal(rep); err != nil {
		t.Fatal(err)
	}
}

// cancelOn cancels the run when a progress line with the message arrives.
type cancelOn struct {
	slog.Handler
	msg    string
	cancel context.CancelFunc
}

func (h cancelOn) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == h.msg {
		h.cancel()
	}
	return h.Handler.Handle(ctx, r)
}

func (h cancelOn) WithAttrs(as []slog.Attr) slog.Handler {
	return cancelOn{h.Handler.WithAttrs(as), h.msg, h.cancel}
}

func (h cancelOn) WithGroup(name string) slog.Handler {
	return cancelOn{h.Handler.WithGroup(name), h.msg, h.cancel}
}

// TestSmokeInterrupted: a run cancelled (Ctrl-C) while (c) runs, with its
// routes installed and then with the extra veths made, removes every
// namespace and process it made, ends every goroutine it started and
// leaves the host as it was.
func TestSmokeInterrupted(t *testing.T) {
	requireRoot(t)
	bin, err := smokeBins()
	if err != nil {
		t.Fatal(err)
	}
	for _, at := range []string{"ApplyRoutes, 8 adds", "made the extra veths"} {
		t.Run(at, func(t *testing.T) {
			testutil.CheckGoroutines(t)
			before := host(t)
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			var log strings.Builder
			h := cancelOn{slog.NewTextHandler(&log, nil), at, cancel}
			rep, err := Run(ctx, Config{BinDir: bin, Ns: []int{8}, Systems: []string{"c"}, PhaseLimit: time.Minute, Veths: smokeVeths, Log: slog.New(h)})
			t.Logf("progress:\n%s", log.String())
			if !errors.Is(err, context.Canceled) || !strings.HasPrefix(rep.Error, "interrupted") {
				t.Fatalf("Run: %v, report error %q: want it interrupted", err, rep.Error)
			}
			if !strings.Contains(log.String(), at) {
				t.Fatalf("never reached %q", at)
			}
			if len(rep.Runs) != 1 || len(rep.Runs[0].Systems) != 1 || rep.Runs[0].Systems[0].Error != "interrupted" {
				t.Errorf("want (c) interrupted, got %+v", rep.Runs)
			}
			if left := leftBehind(); len(left) > 0 {
				t.Errorf("left behind: %v", left)
			}
			if after := host(t); after != before {
				t.Errorf("the host's namespace changed:\nbefore:\n%s\nafter:\n%s", before, after)
			}
		})
	}
}
