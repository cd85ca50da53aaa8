package bench

import (
	"bufio"
	"bytes"
	"debug/buildinfo"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/quiltmesh/quilt-runtime/internal/testutil"
)

// proc is a server process of (b) or (c), running in its namespace.
type proc struct {
	*testutil.Proc
	name string // the program, as in the table
	bin  string
	log  string // its stdout and stderr
}

// startProc runs bin in the namespace, behind the prefix (setpriv and its
// options, or nothing). `ip netns exec` and setpriv both exec, so the pid
// is the program's own; info checks that. The program writes its output
// straight to its log file, never through this process.
func startProc(ns, name, bin, logPath string, prefix []string, args ...string) (*proc, error) {
	f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer f.Close() // the child has its own copy
	argv := append(append([]string{"netns", "exec", ns}, prefix...), bin)
	cmd := exec.Command("ip", append(argv, args...)...)
	cmd.Stdout, cmd.Stderr = f, f
	// If the runner dies, so does a child that kept our credentials;
	// setpriv's children lose this on their uid change, and the next run's
	// sweep of stale namespaces kills them.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	p, err := testutil.Start(cmd)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	return &proc{Proc: p, name: name, bin: bin, log: logPath}, nil
}

// tail returns the last lines of the process's log.
func (p *proc) tail(lines int) string {
	b, _ := os.ReadFile(p.log)
	all := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(all[max(0, len(all)-lines):], "\n")
}

// logHas reports whether the process's log holds s.
func (p *proc) logHas(s string) bool {
	b, _ := os.ReadFile(p.log)
	return bytes.Contains(b, []byte(s))
}

// info reads what /proc shows of the running process: its uid, effective
// capabilities and memory high-water mark; its GOMAXPROCS as it reported
// it (reported > 0), or else derived; and the Go version of its binary.
func (p *proc) info(reported int) (Process, error) {
	pr := Process{Name: p.name, PID: p.Pid()}
	if p.Exited() {
		return pr, fmt.Errorf("%s exited before it was measured: %v; its last words:\n%s", p.name, p.Err(), p.tail(10))
	}
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pr.PID))
	if err != nil || filepath.Clean(exe) != filepath.Clean(p.bin) {
		return pr, fmt.Errorf("pid %d runs %q, not %s (%v): the figures would be another process's", pr.PID, exe, p.bin, err)
	}
	st, err := readStatus(pr.PID)
	if err != nil {
		return pr, err
	}
	if f := strings.Fields(st["Uid"]); len(f) > 0 {
		pr.UID, _ = strconv.Atoi(f[0])
	}
	pr.CapEff = st["CapEff"]
	pr.PeakRSSKiB, pr.RSSKiB = kib(st["VmHWM"]), kib(st["VmRSS"])
	if reported > 0 {
		pr.GOMAXPROCS, pr.GOMAXPROCSFrom = reported, "reported"
	} else {
		pr.GOMAXPROCS, pr.GOMAXPROCSFrom = deriveGOMAXPROCS(pr.PID)
	}
	if bi, err := buildinfo.ReadFile(p.bin); err == nil {
		pr.GoVersion = bi.GoVersion
	}
	return pr, nil
}

// readStatus returns /proc/PID/status as key -> value.
func readStatus(pid int) (map[string]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	m := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok {
			m[k] = strings.TrimSpace(v)
		}
	}
	return m, nil
}

// kib parses "1234 kB".
func kib(s string) int64 {
	n, _ := strconv.ParseInt(strings.TrimSuffix(s, " kB"), 10, 64)
	return n
}

var gomaxprocsAttr = regexp.MustCompile(`\bgomaxprocs=(\d+)\b`)

// reportedGOMAXPROCS finds the gomaxprocs=N a process logged at start
// (quilt-bench-single does; the product's binaries do not, yet).
func (p *proc) reportedGOMAXPROCS() int {
	b, _ := os.ReadFile(p.log)
	if m := gomaxprocsAttr.FindSubmatch(b); m != nil {
		n, _ := strconv.Atoi(string(m[1]))
		return n
	}
	return 0
}

// deriveGOMAXPROCS works out the Go runtime's default GOMAXPROCS for a
// process from outside, as Go 1.25 and later choose it: $GOMAXPROCS if
// set; else the CPUs it may run on, lowered to its cgroup's CPU limit
// (rounded up, at least 2) when that is lower.
func deriveGOMAXPROCS(pid int) (int, string) {
	env, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	for _, kv := range bytes.Split(env, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("GOMAXPROCS=")); ok {
			if n, err := strconv.Atoi(string(v)); err == nil && n > 0 {
				return n, "derived: $GOMAXPROCS"
			}
		}
	}
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(pid, &set); err != nil {
		return 0, "unknown: " + err.Error()
	}
	n, from := set.Count(), "derived: CPU affinity"
	if limit := cgroupCPULimit(pid); limit > 0 && int(math.Ceil(limit)) < n {
		n, from = max(2, int(math.Ceil(limit))), "derived: cgroup CPU limit"
	}
	return n, from
}

// cgroupCPULimit returns the lowest CPU bandwidth limit (in CPUs) on the
// process's cgroup and its ancestors, cgroup v2 or v1; 0 means none.
func cgroupCPULimit(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return 0
	}
	limit := 0.0
	lower := func(quota, period float64) {
		if quota > 0 && period > 0 && (limit == 0 || quota/period < limit) {
			limit = quota / period
		}
	}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 {
			continue
		}
		var roots []string
		switch {
		case f[0] == "0" && f[1] == "":
			roots = []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"}
		case slices.Contains(strings.Split(f[1], ","), "cpu"):
			roots = []string{"/sys/fs/cgroup/" + f[1], "/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpu,cpuacct"}
		default:
			continue
		}
		for _, root := range roots {
			for dir := filepath.Join(root, f[2]); strings.HasPrefix(dir, root); dir = filepath.Dir(dir) {
				if m, err := os.ReadFile(filepath.Join(dir, "cpu.max")); err == nil {
					if q := strings.Fields(string(m)); len(q) == 2 && q[0] != "max" {
						quota, _ := strconv.ParseFloat(q[0], 64)
						period, _ := strconv.ParseFloat(q[1], 64)
						lower(quota, period)
					}
				}
				q, qerr := os.ReadFile(filepath.Join(dir, "cpu.cfs_quota_us"))
				pe, perr := os.ReadFile(filepath.Join(dir, "cpu.cfs_period_us"))
				if qerr == nil && perr == nil {
					quota, _ := strconv.ParseFloat(strings.TrimSpace(string(q)), 64)
					period, _ := strconv.ParseFloat(strings.TrimSpace(string(pe)), 64)
					lower(quota, period)
				}
				if dir == root {
					break
				}
			}
		}
	}
	return limit
}
