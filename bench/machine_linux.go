package bench

import (
	"bufio"
	"os"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// machine describes this machine for the report.
func machine() Machine {
	m := Machine{GoVersion: runtime.Version(), GOMAXPROCS: runtime.GOMAXPROCS(0), Cores: runtime.NumCPU(), LoadStart: loadavg()}
	m.CPU = firstField("/proc/cpuinfo", "model name", ":")
	if kb, err := strconv.Atoi(strings.TrimSuffix(firstField("/proc/meminfo", "MemTotal", ":"), " kB")); err == nil {
		m.MemTotalMiB = kb / 1024
	}
	m.OS = strings.Trim(firstField("/etc/os-release", "PRETTY_NAME", "="), `"`)
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		m.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	return m
}

// firstField returns the value of the first "key<sep>value" line in a file.
func firstField(path, key, sep string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), sep); ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// loadavg returns the 1, 5 and 15 minute load averages.
func loadavg() [3]float64 {
	var l [3]float64
	b, _ := os.ReadFile("/proc/loadavg")
	for i, f := range strings.Fields(string(b)) {
		if i < 3 {
			l[i], _ = strconv.ParseFloat(f, 64)
		}
	}
	return l
}
