package packaging_test

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestDeps runs make deps' script against a PATH of stand-ins for the
// commands in packaging/dev/deps.txt and a stand-in apt-get that records
// its arguments: with everything there it installs nothing and says
// nothing; as root it installs exactly the packages of the missing
// commands and says so; without root, or without apt-get, it names them,
// installs nothing and fails.
func TestDeps(t *testing.T) {
	requireRoot(t)
	dir, err := os.MkdirTemp("", "quilt-deps-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755) // nobody runs the script too
	for _, f := range []string{"deps.sh", "deps.txt"} {
		if err := copyFile(filepath.Join(repo, "packaging/dev", f), filepath.Join(dir, f), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	aptLog := filepath.Join(dir, "apt-get.log")
	bin := filepath.Join(dir, "bin")
	reset := func(withApt bool, lacking ...string) {
		t.Helper()
		os.RemoveAll(bin)
		os.Remove(aptLog)
		if err := os.Mkdir(bin, 0o755); err != nil {
			t.Fatal(err)
		}
		cmds := map[string]string{}
		for _, cmd := range depsList(t) {
			cmds[cmd] = "#!/bin/sh\nexit 0\n"
		}
		if withApt {
			cmds["apt-get"] = "#!/bin/sh\necho \"$*\" >>" + aptLog + "\n"
		}
		for _, cmd := range lacking {
			delete(cmds, cmd)
		}
		for name, script := range cmds {
			if err := os.WriteFile(filepath.Join(bin, name), []byte(script), 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	deps := func(uid int) (string, error) {
		cmd := exec.Command("/bin/bash", filepath.Join(dir, "deps.sh"))
		if uid != 0 {
			cmd = exec.Command("setpriv", "--reuid="+strconv.Itoa(uid), "--regid="+strconv.Itoa(uid), "--clear-groups", "--", "/bin/bash", filepath.Join(dir, "deps.sh"))
		}
		cmd.Env = []string{"PATH=" + bin}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	apt := func() string {
		b, _ := os.ReadFile(aptLog)
		return string(b)
	}

	reset(true)
	if out, err := deps(0); err != nil || out != "" || apt() != "" {
		t.Errorf("everything there: %v, said %q, apt-get %q; want nothing done or said", err, out, apt())
	}
	reset(true, "bridge", "lintian", "ip")
	if out, err := deps(0); err != nil || out != "make deps: installing iproute2 lintian (for ip bridge lintian)\n" ||
		apt() != "update -qq\ninstall -y -qq --no-install-recommends iproute2 lintian\n" {
		t.Errorf("as root, ip, bridge and lintian missing: %v, said %q, apt-get %q", err, out, apt())
	}
	reset(true, "bridge", "lintian")
	want := "make deps: missing bridge lintian: run make as root, which installs them, or as root: apt-get install iproute2 lintian\n"
	if out, err := deps(nobody); err == nil || out != want || apt() != "" {
		t.Errorf("without root: %v, said %q, apt-get %q; want it to fail saying %q", err, out, apt(), want)
	}
	reset(false, "protoc")
	want = "make deps: missing protoc, and there is no apt-get: install the Debian packages protobuf-compiler or their equivalents\n"
	if out, err := deps(0); err == nil || out != want {
		t.Errorf("without apt-get: %v, said %q; want it to fail saying %q", err, out, want)
	}
	// This machine, as it is: make deps left nothing missing.
	for _, cmd := range depsList(t) {
		if _, err := exec.LookPath(cmd); err != nil {
			t.Errorf("%s is missing here, though make test runs make deps first", cmd)
		}
	}
}

// depsList returns the commands packaging/dev/deps.txt names.
func depsList(t *testing.T) []string {
	t.Helper()
	f, err := os.Open(filepath.Join(repo, "packaging/dev/deps.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var cmds []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		if fields := strings.Fields(s.Text()); len(fields) >= 2 && !strings.HasPrefix(fields[0], "#") {
			cmds = append(cmds, fields[0])
		}
	}
	return cmds
}
