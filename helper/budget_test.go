package helper_test

import (
	"bufio"
	"bytes"
	"fmt"
	"go/scanner"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"
)

// The helper's promise is that an auditor can read all of its privileged
// code in one sitting. These limits keep that promise checkable.
const (
	helperMain = "github.com/quiltmesh/quilt-runtime/helper/cmd/quilt-route-helper"
	module     = "github.com/quiltmesh/quilt-runtime"
	// tokenBudget fences the size of everything the helper links from this
	// module, tests excluded, in Go tokens: packing statements onto fewer
	// lines cannot game it. Counted as ../shared/tools/tokcount counts.
	tokenBudget = 7000
	// maxColumns is the widest a line may be (tabs count four).
	maxColumns = 120
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

// measure counts a Go file's tokens (comments and the semicolons the
// scanner inserts at line ends left out), its code lines (lines that hold
// a token), and its widest line.
func measure(t *testing.T, path string) (tokens, lines, widest int) {
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	file := fset.AddFile(path, -1, len(src))
	var s scanner.Scanner
	s.Init(file, src, func(pos token.Position, msg string) { t.Errorf("%s: %s", pos, msg) }, 0)
	seen := map[int]bool{}
	for {
		pos, tok, lit := s.Scan()
		if tok == token.EOF {
			break
		}
		if tok == token.SEMICOLON && lit == "\n" {
			continue
		}
		tokens++
		seen[file.Line(pos)] = true
	}
	sc := bufio.NewScanner(bytes.NewReader(src))
	for sc.Scan() {
		widest = max(widest, utf8.RuneCountInString(strings.ReplaceAll(sc.Text(), "\t", "    ")))
	}
	return tokens, len(seen), widest
}

func TestHelperBudget(t *testing.T) {
	var tokens, lines int
	report := &bytes.Buffer{}
	for _, row := range goList(t, "{{.ImportPath}}|{{.Dir}}|{{range .GoFiles}}{{.}},{{end}}", helperMain) {
		f := strings.SplitN(row, "|", 3)
		if f[0] != module && !strings.HasPrefix(f[0], module+"/") {
			continue
		}
		for _, name := range strings.Split(strings.TrimSuffix(f[2], ","), ",") {
			path := filepath.Join(f[1], name)
			tk, ln, wide := measure(t, path)
			tokens += tk
			lines += ln
			rel := strings.TrimPrefix(f[0], module+"/") + "/" + name
			fmt.Fprintf(report, "%6d tokens %5d lines  %s\n", tk, ln, rel)
			if wide > maxColumns {
				t.Errorf("%s has a line of %d columns; at most %d", rel, wide, maxColumns)
			}
		}
	}
	t.Logf("what the helper links from this module (no tests, no comments):\n%s%6d tokens %5d lines  total, of a budget of %d tokens",
		report, tokens, lines, tokenBudget)
	if tokens > tokenBudget {
		t.Errorf("the helper links %d tokens of this module's code; the budget is %d", tokens, tokenBudget)
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
		for _, bad := range []string{"google.golang.org/grpc", "google.golang.org/protobuf", "github.com/urfave/cli", "github.com/spf13/cobra",
			"github.com/prometheus", "github.com/coreos/go-systemd", "github.com/containernetworking"} {
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
