package helper_test

import (
	"bytes"
	"go/scanner"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// The helper's promise is that an auditor can read all of its privileged
// code in one sitting. These limits keep that promise checkable.
const (
	helperMain = "github.com/quiltmesh/quilt-runtime/helper/cmd/quilt-route-helper"
	module     = "github.com/quiltmesh/quilt-runtime"
	lineBudget = 500
)

// goList runs `go list -deps` for linux and returns one line per package.
func goList(t *testing.T, format string, pkgs ...string) []string {
	t.Helper()
	cmd := exec.Command("go", append([]string{"list", "-deps", "-f", format}, pkgs...)...)
	cmd.Env = append(os.Environ(), "GOOS=linux", "CGO_ENABLED=0")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	return strings.Fields(string(out))
}

// codeLines counts the lines of a Go file that hold a token: blank lines
// and comment-only lines do not count.
func codeLines(t *testing.T, path string) int {
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	var s scanner.Scanner
	s.Init(fset.AddFile(path, -1, len(src)), src, nil, 0)
	lines := map[int]bool{}
	for {
		pos, tok, lit := s.Scan()
		if tok == token.EOF {
			return len(lines)
		}
		if tok == token.SEMICOLON && lit == "\n" {
			continue // inserted at a line end, not written
		}
		lines[fset.Position(pos).Line] = true
	}
}

func TestHelperLineBudget(t *testing.T) {
	total, report := 0, &bytes.Buffer{}
	for _, row := range goList(t, "{{.ImportPath}}|{{.Dir}}|{{range .GoFiles}}{{.}},{{end}}", helperMain) {
		f := strings.SplitN(row, "|", 3)
		if f[0] != module && !strings.HasPrefix(f[0], module+"/") {
			continue
		}
		for _, name := range strings.Split(strings.TrimSuffix(f[2], ","), ",") {
			n := codeLines(t, filepath.Join(f[1], name))
			total += n
			report.WriteString(strings.TrimPrefix(f[0], module+"/") + "/" + name + " " + strconv.Itoa(n) + "\n")
		}
	}
	t.Logf("helper code lines (no blanks, no comments, no tests):\n%stotal %d of %d", report, total, lineBudget)
	if total > lineBudget {
		t.Errorf("the helper links %d lines of this module's code; the budget is %d", total, lineBudget)
	}
}

func TestHelperDependencies(t *testing.T) {
	allowed := map[string]bool{}
	for _, p := range goList(t, "{{.ImportPath}}", "golang.org/x/sys/unix", "github.com/mdlayher/netlink") {
		allowed[p] = true
	}
	var deps []string
	for _, row := range goList(t, "{{.ImportPath}}|{{.Standard}}", helperMain) {
		path, std, _ := strings.Cut(row, "|")
		if std == "true" || path == module || strings.HasPrefix(path, module+"/") {
			continue
		}
		deps = append(deps, path)
		for _, bad := range []string{"google.golang.org/grpc", "google.golang.org/protobuf", "github.com/urfave/cli", "github.com/spf13/cobra"} {
			if strings.HasPrefix(path, bad) {
				t.Errorf("the helper must not link %s", path)
			}
		}
		if !allowed[path] && !strings.HasPrefix(path, "golang.org/x/sys/") {
			t.Errorf("the helper links %s, which is not the standard library, golang.org/x/sys or mdlayher/netlink's closure", path)
		}
	}
	t.Logf("helper third-party packages: %s", strings.Join(deps, " "))
}
