package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// requireRoot skips the test without root, or fails it when CI=true.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("this test needs root (network namespaces, setpriv, rtnetlink) and CI=true forbids skipping")
	}
	t.Skip("needs root to create network namespaces, switch uids and send rtnetlink messages; run `sudo make test`")
}

// TestSmoke runs the whole benchmark at N=8 on all three systems, so the
// harness is proven on every run of the tests: every workload measured
// (or unimplemented, for ApplyRoutes until the frontend has it), each
// process seen with the identity and capabilities it should have, and
// nothing left behind: no namespace, and the host's routes as they were.
func TestSmoke(t *testing.T) {
	requireRoot(t)
	bin := t.TempDir()
	cmd := exec.Command("go", "build", "-o", bin, "./helper/cmd/quilt-route-helper", "./frontend/cmd/quilt-runtime", "./bench/cmd/quilt-bench-single")
	cmd.Dir, cmd.Env = "..", append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	hostRoutes := func() string {
		out, err := exec.Command("ip", "-4", "route", "show", "table", "all").CombinedOutput()
		if err != nil {
			t.Fatalf("ip route: %v\n%s", err, out)
		}
		return string(out)
	}
	before := hostRoutes()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var log strings.Builder
	rep, err := Run(ctx, Config{BinDir: bin, Ns: []int{8}, PhaseLimit: time.Minute, Log: slog.New(slog.NewTextHandler(&log, nil))})
	var text strings.Builder
	rep.WriteText(&text)
	t.Logf("progress:\n%s\n%s", log.String(), text.String())
	if err != nil {
		t.Fatal(err)
	}
	if left := ourNamespaces(); len(left) > 0 {
		t.Errorf("namespaces left behind: %v", left)
	}
	if after := hostRoutes(); after != before {
		t.Errorf("the host's routes changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if len(rep.Runs) != 1 || len(rep.Runs[0].Systems) != 3 {
		t.Fatalf("want one run of three systems, got %+v", rep.Runs)
	}
	run := rep.Runs[0]
	for _, s := range run.Systems {
		if s.Error != "" {
			t.Errorf("(%s) stopped: %s", s.ID, s.Error)
		}
		want := map[string]int{"a": 4, "b": 8, "c": 8}[s.ID]
		if len(s.Results) != want {
			t.Errorf("(%s): %d results, want %d", s.ID, len(s.Results), want)
		}
		for _, r := range s.Results {
			switch {
			case r.Status == StatusUnimplemented && strings.HasPrefix(r.Workload, "apply-"):
			case r.Status != StatusOK || r.Routes != 8 || r.RoutesPerSec <= 0:
				t.Errorf("(%s) %s: %s, %d routes: %s", s.ID, r.Title, r.Status, r.Routes, r.Detail)
			case s.ID == "c" && (r.COverA == nil) != (workload(r.Workload).Kernel == ""):
				t.Errorf("(c) %s: c/a %v", r.Title, deref(r.COverA))
			case s.ID == "c" && (r.COverB == nil || (r.P50Ms != nil) != (r.P50COverB != nil)):
				t.Errorf("(c) %s: c/b %v, p50 c/b %v", r.Title, deref(r.COverB), deref(r.P50COverB))
			}
		}
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
	if len(rep.Targets) == 0 || rep.Machine.CPU == "" || rep.Machine.Kernel == "" {
		t.Errorf("targets %d, machine %+v", len(rep.Targets), rep.Machine)
	}
	if _, err := json.Marshal(rep); err != nil {
		t.Fatal(err)
	}
}
