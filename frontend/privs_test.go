package frontend

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
)

// procStatus is a /proc/PID/status excerpt with the given uids and sets.
func procStatus(uids string, eff, prm, inh, amb uint64) string {
	return fmt.Sprintf("Name:\tquilt-runtime\nUid:\t%s\nGid:\t1000\t1000\t1000\t1000\nCapInh:\t%016x\nCapPrm:\t%016x\nCapEff:\t%016x\nCapBnd:\t000001ffffffffff\nCapAmb:\t%016x\nNoNewPrivs:\t1\n",
		uids, inh, prm, eff, amb)
}

func TestPrivilegeError(t *testing.T) {
	const user = "1000\t1000\t1000\t1000"
	for _, tc := range []struct {
		name   string
		status string
		want   []string // each named in the error; none: allowed
	}{
		{"unprivileged, full bounding set", procStatus(user, 0, 0, 0, 0), nil},
		{"uid 0", procStatus("0\t0\t0\t0", 0, 0, 0, 0), []string{"uid 0"}},
		{"saved uid 0", procStatus("1000\t1000\t0\t1000", 0, 0, 0, 0), []string{"uid 0"}},
		{"filesystem uid 0", procStatus("1000\t1000\t1000\t0", 0, 0, 0, 0), []string{"uid 0"}},
		{"effective", procStatus(user, 1<<12, 1<<12, 0, 0), []string{"CapEff", "CapPrm"}},
		{"permitted, not effective", procStatus(user, 0, 1<<12, 0, 0), []string{"CapPrm (permitted)"}},
		{"inheritable only", procStatus(user, 0, 0, 1<<12, 0), []string{"CapInh (inheritable)"}},
		{"ambient", procStatus(user, 1<<12, 1<<12, 1<<12, 1<<12), []string{"CapEff", "CapPrm", "CapInh", "CapAmb (ambient)"}},
		{"root with everything", procStatus("0\t0\t0\t0", 0x1ffffffffff, 0x1ffffffffff, 0, 0), []string{"uid 0", "CapEff", "CapPrm"}},
	} {
		id, err := parseStatus([]byte(tc.status))
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		err = privilegeError(id)
		if len(tc.want) == 0 {
			if err != nil {
				t.Errorf("%s: refused: %v", tc.name, err)
			}
			continue
		}
		if !errors.Is(err, ErrPrivileged) {
			t.Errorf("%s: %v, want ErrPrivileged", tc.name, err)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %q does not name %q", tc.name, err, w)
			}
		}
		if strings.Contains(err.Error(), "CapBnd") {
			t.Errorf("%s: %q names the bounding set, which grants nothing", tc.name, err)
		}
	}
	// A status the check cannot read fails closed.
	for _, bad := range []string{"", "Uid:\t1000\t1000\nCapInh:\t0\nCapPrm:\t0\nCapEff:\t0\nCapAmb:\t0\n", strings.Replace(procStatus(user, 0, 0, 0, 0), "CapAmb:", "CapAmbX:", 1), strings.Replace(procStatus(user, 0, 0, 0, 0), "CapPrm:\t0", "CapPrm:\tz", 1)} {
		if _, err := parseStatus([]byte(bad)); err == nil {
			t.Errorf("parseStatus(%q) accepted", bad)
		}
	}
}

func TestCheckPrivilegesHere(t *testing.T) {
	// The check reads this very process: as root it must refuse (uid 0,
	// and root's capabilities); the tests run as root in make test and CI.
	err := CheckPrivileges()
	switch {
	case os.Geteuid() == 0 && !errors.Is(err, ErrPrivileged):
		t.Fatalf("CheckPrivileges as root: %v, want ErrPrivileged", err)
	case os.Geteuid() != 0 && err != nil && !errors.Is(err, ErrPrivileged):
		t.Fatalf("CheckPrivileges: %v", err)
	}
}
