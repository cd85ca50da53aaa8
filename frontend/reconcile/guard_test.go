package reconcile

import (
	"fmt"
	"strings"
	"testing"
)

func TestParseRemovalLimit(t *testing.T) {
	for _, tc := range []struct {
		in        string
		installed int
		want      int
	}{
		{"10%", 100, 10}, {"10%", 1000, 100}, {"10%", 20, MinRemovalLimit}, {"25", 1000, 25}, {"0", 100, 0}, {"100%", 7, 7},
	} {
		l, err := ParseRemovalLimit(tc.in)
		if err != nil || l.Of(tc.installed) != tc.want {
			t.Errorf("%s of %d: %v %v, want %d", tc.in, tc.installed, l.Of(tc.installed), err, tc.want)
		}
	}
	for _, bad := range []string{"", "-1", "10 %", "101%", "ten", "1e3"} {
		if _, err := ParseRemovalLimit(bad); err == nil || !strings.Contains(err.Error(), "--resync-max-removals") {
			t.Errorf("%q: %v", bad, err)
		}
	}
	if got := fmt.Sprint(DefaultRemovalLimit); got != "10% (at least 5)" {
		t.Errorf("default: %s", got)
	}
}
