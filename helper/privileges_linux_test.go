package helper

import (
	"strings"
	"testing"
)

// status is a /proc/self/status as the unit starts the helper: its own uid
// and gid, no supplementary group but its own, CAP_NET_ADMIN only.
const status = `Name:	quilt-route-hel
Umask:	0077
State:	R (running)
Uid:	998	998	998	998
Gid:	997	997	997	997
FDSize:	64
Groups:	997
NStgid:	1234
CapInh:	0000000000001000
CapPrm:	0000000000001000
CapEff:	0000000000001000
CapBnd:	0000000000001000
CapAmb:	0000000000001000
NoNewPrivs:	1
Seccomp:	2
`

func TestCheckStatus(t *testing.T) {
	if err := checkStatus(status); err != nil {
		t.Fatalf("the unit's privileges refused: %v", err)
	}
	if err := checkStatus(strings.Replace(status, "Groups:\t997", "Groups:\t", 1)); err != nil {
		t.Fatalf("no groups at all refused: %v", err)
	}
	if err := checkStatus(strings.NewReplacer("CapInh:\t0000000000001000", "CapInh:\t0000000000000000",
		"CapAmb:\t0000000000001000", "CapAmb:\t0000000000000000").Replace(status)); err != nil {
		t.Fatalf("no inheritable or ambient capability refused: %v", err)
	}
	for _, tc := range []struct{ from, to, named string }{
		{"Uid:\t998\t998\t998\t998", "Uid:\t998\t0\t998\t998", `Uid is "998\t0\t998\t998"`},
		{"Uid:\t998\t998\t998\t998", "Uid:\t998\t998\t998\t0", `Uid is`},
		{"Uid:\t998\t998\t998\t998", "Uid:\t998", `Uid is "998"`},
		{"Gid:\t997\t997\t997\t997", "Gid:\t997\t997\t0\t997", `Gid is "997\t997\t0\t997"`},
		{"Groups:\t997", "Groups:\t997 0", `Groups is "997 0"`},
		{"Groups:\t997", "Groups:\t6", `Groups is "6"`},
		{"CapPrm:\t0000000000001000", "CapPrm:\t0000000000003000", `CapPrm is "0000000000003000"`},
		{"CapEff:\t0000000000001000", "CapEff:\t0000000000000000", `CapEff is "0000000000000000"`},
		{"CapBnd:\t0000000000001000", "CapBnd:\t000001ffffffffff", `CapBnd is`},
		{"CapInh:\t0000000000001000", "CapInh:\t0000000000002000", `CapInh is`},
		{"CapAmb:\t0000000000001000", "CapAmb:\t0000000000003000", `CapAmb is`},
		{"CapEff:\t0000000000001000", "CapEff:\tnonsense", `CapEff is "nonsense"`},
		{"NoNewPrivs:\t1", "NoNewPrivs:\t0", `NoNewPrivs is "0"`},
		{"NoNewPrivs:\t1\n", "", `NoNewPrivs is ""`},
	} {
		err := checkStatus(strings.Replace(status, tc.from, tc.to, 1))
		if err == nil || !strings.Contains(err.Error(), tc.named) {
			t.Errorf("%q: %v; want a refusal naming %s", tc.to, err, tc.named)
			continue
		}
		if strings.Count(err.Error(), " is \"") != 1 {
			t.Errorf("%q: one field is wrong, the error names others too: %v", tc.to, err)
		}
	}
}
