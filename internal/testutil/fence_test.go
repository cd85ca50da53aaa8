package testutil

import (
	"bufio"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestNotShipped: no program `make build` builds (the ones the .deb
// ships) links this package or the other test support under internal/.
func TestNotShipped(t *testing.T) {
	f, err := os.Open("../../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var programs []string
	for s, inBuild := bufio.NewScanner(f), false; s.Scan(); {
		line := s.Text()
		if inBuild && strings.HasPrefix(line, "\t") {
			for _, word := range strings.Fields(line) {
				if strings.HasPrefix(word, "./") {
					programs = append(programs, word)
				}
			}
		}
		inBuild = line == "build:" || inBuild && strings.HasPrefix(line, "\t")
	}
	if len(programs) < 4 {
		t.Fatalf("found %q in the Makefile's build target; want the helper, quilt-runtime, quiltctl and quilt-ipam", programs)
	}
	cmd := exec.Command("go", append([]string{"list", "-deps"}, programs...)...)
	cmd.Dir = "../.."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -deps %s: %v", programs, err)
	}
	for _, pkg := range strings.Fields(string(out)) {
		switch pkg {
		case "github.com/quiltmesh/quilt-runtime/internal/testutil",
			"github.com/quiltmesh/quilt-runtime/internal/netns",
			"github.com/quiltmesh/quilt-runtime/internal/sdnotify":
			t.Errorf("a shipped program (%s) links %s", strings.Join(programs, " "), pkg)
		}
	}
}
