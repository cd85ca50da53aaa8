package packaging_test

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// unitFile is a systemd unit file as systemd reads it: sections of
// assignments, in order, a key possibly assigned more than once.
type unitFile struct {
	name     string
	sections map[string][][2]string
}

// loadUnit parses packaging/systemd/name.
func loadUnit(t *testing.T, name string) *unitFile {
	t.Helper()
	u, err := parseUnit(filepath.Join("systemd", name))
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// parseUnit reads a unit file: [Section] headers, Key=Value lines, # and ;
// comments, and lines continued by a trailing backslash.
func parseUnit(path string) (*unitFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	u := &unitFile{name: filepath.Base(path), sections: map[string][][2]string{}}
	section, pending := "", ""
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if pending == "" && (line == "" || line[0] == '#' || line[0] == ';') {
			continue
		}
		if strings.HasSuffix(line, `\`) {
			pending += strings.TrimSuffix(line, `\`) + " "
			continue
		}
		line, pending = pending+line, ""
		if strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]") {
			section = line[1 : len(line)-1]
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || section == "" {
			return nil, fmt.Errorf("%s:%d: not a [Section] or Key=Value line: %q", path, n, line)
		}
		u.sections[section] = append(u.sections[section], [2]string{strings.TrimSpace(k), strings.TrimSpace(v)})
	}
	return u, sc.Err()
}

// values returns every value assigned to key, in order.
func (u *unitFile) values(section, key string) []string {
	var vs []string
	for _, kv := range u.sections[section] {
		if kv[0] == key {
			vs = append(vs, kv[1])
		}
	}
	return vs
}

// has reports whether key is assigned at all.
func (u *unitFile) has(section, key string) bool { return len(u.values(section, key)) > 0 }

// value returns the last value assigned to key ("" if none).
func (u *unitFile) value(section, key string) string {
	vs := u.values(section, key)
	if len(vs) == 0 {
		return ""
	}
	return vs[len(vs)-1]
}

// list returns a space-separated list setting as systemd merges it: each
// assignment adds words, and an empty assignment resets the list.
func (u *unitFile) list(section, key string) []string {
	var words []string
	for _, v := range u.values(section, key) {
		if v == "" {
			words = nil
		}
		words = append(words, strings.Fields(v)...)
	}
	return words
}

// envFile is an EnvironmentFile= in systemd's syntax: KEY=VALUE lines, #
// and ; comments, values optionally in single or double quotes.
func parseEnvFile(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	env := map[string]string{}
	for n, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || strings.ContainsAny(k, " \t\"'$") {
			return nil, fmt.Errorf("%s:%d: not KEY=VALUE: %q", path, n+1, line)
		}
		v = strings.TrimSpace(v)
		if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
			v = v[1 : len(v)-1]
		}
		env[strings.TrimSpace(k)] = v
	}
	return env, nil
}

// execArgv expands an ExecStart= command line as systemd does for ours:
// words split on whitespace (double quotes group), "$VAR" alone becomes
// the variable's value split into words (none if empty), "${VAR}" becomes
// one word. Prefixes such as "-" or "+" are refused: our units use none.
func execArgv(line string, env map[string]string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord, quoted := false, false
	for _, r := range line {
		switch {
		case r == '"':
			quoted, inWord = !quoted, true
		case (r == ' ' || r == '\t') && !quoted:
			if inWord {
				words, inWord = append(words, cur.String()), false
				cur.Reset()
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if quoted {
		return nil, fmt.Errorf("unbalanced quote in %q", line)
	}
	if inWord {
		words = append(words, cur.String())
	}
	if len(words) == 0 || !strings.HasPrefix(words[0], "/") {
		return nil, fmt.Errorf("ExecStart=%q: want an absolute path without prefixes", line)
	}
	var argv []string
	for _, w := range words {
		if strings.HasPrefix(w, "$") && !strings.HasPrefix(w, "${") {
			argv = append(argv, strings.Fields(env[w[1:]])...)
			continue
		}
		for {
			i := strings.Index(w, "${")
			j := strings.Index(w, "}")
			if i < 0 || j < i {
				break
			}
			w = w[:i] + env[w[i+2:j]] + w[j+1:]
		}
		argv = append(argv, w)
	}
	return argv, nil
}

func TestExecArgv(t *testing.T) {
	env := map[string]string{"ARGS": "--a 1  --b 2", "ONE": "x y", "EMPTY": ""}
	for _, tc := range []struct{ line, want string }{
		{"/bin/p $ARGS", "/bin/p|--a|1|--b|2"},
		{"/bin/p --k ${ONE}", "/bin/p|--k|x y"},
		{"/bin/p --k=${ONE}z", "/bin/p|--k=x yz"},
		{"/bin/p $EMPTY $UNSET end", "/bin/p|end"},
		{`/bin/p "a b" c`, "/bin/p|a b|c"},
	} {
		got, err := execArgv(tc.line, env)
		if err != nil || strings.Join(got, "|") != tc.want {
			t.Errorf("execArgv(%q) = %q, %v; want %q", tc.line, got, err, tc.want)
		}
	}
	for _, bad := range []string{"-/bin/p", "p", `/bin/p "x`} {
		if _, err := execArgv(bad, env); err == nil {
			t.Errorf("execArgv(%q): want an error", bad)
		}
	}
}
