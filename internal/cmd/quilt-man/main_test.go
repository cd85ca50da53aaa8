package main

import (
	"strings"
	"testing"
)

// TestParseFlagHelp reads Go's PrintDefaults format, as the helper prints
// it: names, argument kinds, usage and defaults, quoted or not.
func TestParseFlagHelp(t *testing.T) {
	help := `Usage of quilt-route-helper:
  -allow-uid string
    	the user (name or uid) allowed to connect: the frontend's; required
  -allowed-interface value
    	interface routes may use; repeatable (default vxlan100)
  -node-prefix-len int
    	only routes of this prefix length (default 24)
  -socket string
    	Unix socket to listen on, unless systemd passes one (default "/run/quilt/route-helper.sock")
`
	flags, err := parseFlagHelp(help)
	want := []Flag{
		{"allow-uid", "STRING", "the user (name or uid) allowed to connect: the frontend's; required", ""},
		{"allowed-interface", "VALUE", "interface routes may use; repeatable", "vxlan100"},
		{"node-prefix-len", "N", "only routes of this prefix length", "24"},
		{"socket", "STRING", "Unix socket to listen on, unless systemd passes one", "/run/quilt/route-helper.sock"},
	}
	if err != nil || len(flags) != len(want) {
		t.Fatalf("%+v %v", flags, err)
	}
	for i := range want {
		if flags[i] != want[i] {
			t.Errorf("flag %d: %+v, want %+v", i, flags[i], want[i])
		}
	}
	if _, err := parseFlagHelp("quilt-route-helper: unknown flag\n"); err == nil {
		t.Error("a text without flags was read as help")
	}
	page := helperPage(flags)
	for _, s := range []string{"**--allow-uid** *STRING*", "**--allowed-interface** *VALUE*", "(default: /run/quilt/route-helper.sock)", "% quilt-route-helper 8"} {
		if !strings.Contains(page, s) {
			t.Errorf("helper page lacks %q", s)
		}
	}
}
