package packaging_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A service's SystemCallFilter=, SystemCallErrorNumber=,
// SystemCallArchitectures=native and RestrictAddressFamilies= are seccomp
// filters that systemd installs just before it executes the service. With
// no systemd as PID 1 here, TestUnitsRun installs an equivalent filter
// itself, built from the unit's settings and systemd's own syscall group
// lists (systemd-analyze syscall-filter), so the binaries run under the
// syscall set their units give them.

// filterSpec is what a unit's seccomp settings allow.
type filterSpec struct {
	syscalls map[string]bool // names allowed; all others fail with errno
	errno    syscall.Errno   // SystemCallErrorNumber=
	families []uint32        // RestrictAddressFamilies= allow list; nil: any
}

// unitFilter resolves a service's settings into a filterSpec, or nil if the
// unit sets no SystemCallFilter=.
func unitFilter(t *testing.T, u *unitFile) *filterSpec {
	t.Helper()
	assignments := u.values("Service", "SystemCallFilter")
	if len(assignments) == 0 {
		return nil
	}
	if strings.HasPrefix(assignments[0], "~") {
		t.Fatalf("%s: SystemCallFilter= starts with a deny list; the test emulates allow lists only", u.name)
	}
	if u.value("Service", "SystemCallArchitectures") != "native" {
		t.Fatalf("%s: want SystemCallArchitectures=native", u.name)
	}
	spec := &filterSpec{syscalls: map[string]bool{}}
	groups := map[string][]string{}
	for _, a := range assignments {
		deny := strings.HasPrefix(a, "~")
		for _, name := range strings.Fields(strings.TrimPrefix(a, "~")) {
			for _, sc := range expandSyscalls(t, name, groups) {
				if deny {
					delete(spec.syscalls, sc)
				} else {
					spec.syscalls[sc] = true
				}
			}
		}
	}
	switch e := u.value("Service", "SystemCallErrorNumber"); e {
	case "EPERM":
		spec.errno = unix.EPERM
	default:
		t.Fatalf("%s: SystemCallErrorNumber=%q: the test knows EPERM only (without it systemd kills the process)", u.name, e)
	}
	families := map[string]uint32{"AF_UNIX": unix.AF_UNIX, "AF_INET": unix.AF_INET, "AF_INET6": unix.AF_INET6, "AF_NETLINK": unix.AF_NETLINK, "AF_VSOCK": unix.AF_VSOCK}
	for _, f := range u.list("Service", "RestrictAddressFamilies") {
		n, ok := families[f]
		if !ok {
			t.Fatalf("%s: RestrictAddressFamilies=%s: add it to the test's table", u.name, f)
		}
		spec.families = append(spec.families, n)
	}
	return spec
}

// expandSyscalls resolves a syscall name or a @group, recursively, with
// systemd's own lists.
func expandSyscalls(t *testing.T, name string, groups map[string][]string) []string {
	t.Helper()
	if !strings.HasPrefix(name, "@") {
		return []string{name}
	}
	if g, ok := groups[name]; ok {
		return g
	}
	out, err := exec.Command("systemd-analyze", "syscall-filter", "--no-pager", name).Output()
	if err != nil {
		t.Fatalf("systemd-analyze syscall-filter %s: %v", name, err)
	}
	var names []string
	for i, line := range strings.Split(string(out), "\n") {
		line = strings.TrimSpace(line)
		if i == 0 || line == "" || strings.HasPrefix(line, "#") {
			continue // the group's own name, blank lines, comments
		}
		names = append(names, expandSyscalls(t, line, groups)...)
	}
	groups[name] = names
	return names
}

// syscallNumbers maps x86-64 syscall names to numbers, read from
// golang.org/x/sys's table (the module this package already uses).
func syscallNumbers(t *testing.T) map[string]uint32 {
	t.Helper()
	if runtime.GOARCH != "amd64" {
		t.Fatalf("the seccomp emulation knows amd64 only, not %s", runtime.GOARCH)
	}
	dir, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "golang.org/x/sys").Output()
	if err != nil {
		t.Fatalf("go list golang.org/x/sys: %v", err)
	}
	b, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(dir)), "unix", "zsysnum_linux_amd64.go"))
	if err != nil {
		t.Fatal(err)
	}
	nums := map[string]uint32{}
	for _, m := range regexp.MustCompile(`(?m)^\s*SYS_(\w+)\s*=\s*(\d+)`).FindAllSubmatch(b, -1) {
		n, _ := strconv.ParseUint(string(m[2]), 10, 32)
		nums[strings.ToLower(string(m[1]))] = uint32(n)
	}
	if nums["capset"] != unix.SYS_CAPSET || nums["socket"] != unix.SYS_SOCKET {
		t.Fatalf("syscall table looks wrong: capset=%d socket=%d", nums["capset"], nums["socket"])
	}
	return nums
}

// program assembles the classic BPF seccomp program for spec.
func (spec *filterSpec) program(t *testing.T) []unix.SockFilter {
	t.Helper()
	const (
		ld   = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
		jeq  = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
		jge  = unix.BPF_JMP | unix.BPF_JGE | unix.BPF_K
		ret  = unix.BPF_RET | unix.BPF_K
		nr   = 0  // offsetof(struct seccomp_data, nr)
		arch = 4  // offsetof(struct seccomp_data, arch)
		arg0 = 16 // offsetof(struct seccomp_data, args[0]), low half on little endian
	)
	deny := unix.SockFilter{Code: ret, K: unix.SECCOMP_RET_ERRNO | uint32(spec.errno)}
	allow := unix.SockFilter{Code: ret, K: unix.SECCOMP_RET_ALLOW}
	prog := []unix.SockFilter{
		{Code: ld, K: arch}, {Code: jeq, Jt: 1, K: unix.AUDIT_ARCH_X86_64}, deny, // native only
		{Code: ld, K: nr}, {Code: jge, Jf: 1, K: 0x40000000}, deny, // no x32 calls
	}
	nums := syscallNumbers(t)
	known := 0
	for name := range spec.syscalls {
		n, ok := nums[name]
		if !ok || name == "socket" && spec.families != nil {
			continue // not on x86-64 (systemd skips those too), or checked below
		}
		known++
		prog = append(prog, unix.SockFilter{Code: jeq, Jf: 1, K: n}, allow)
	}
	if spec.syscalls["socket"] && spec.families != nil {
		// socket(2) with a family off the list fails with EAFNOSUPPORT.
		prog = append(prog, unix.SockFilter{Code: jeq, Jf: uint8(2 + 2*len(spec.families)), K: unix.SYS_SOCKET}, unix.SockFilter{Code: ld, K: arg0})
		for _, f := range spec.families {
			prog = append(prog, unix.SockFilter{Code: jeq, Jf: 1, K: f}, allow)
		}
		prog = append(prog, unix.SockFilter{Code: ret, K: unix.SECCOMP_RET_ERRNO | uint32(unix.EAFNOSUPPORT)})
	}
	if known < 100 {
		t.Fatalf("only %d syscalls allowed: the filter would not let a Go program start", known)
	}
	return append(prog, deny)
}

// writeFilter stores spec's program in dir for the child to install.
func writeFilter(t *testing.T, spec *filterSpec, dir, name string) string {
	t.Helper()
	var buf bytes.Buffer
	binary.Write(&buf, binary.NativeEndian, spec.program(t))
	path := filepath.Join(dir, name+".bpf")
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// installFilterAndExec is the child mode "seccomp:FILE": install the
// program in FILE on every thread, then execute os.Args[1:] in place, as
// systemd's last steps before it executes a service. It needs
// no_new_privs, which the units set (NoNewPrivileges=yes).
func installFilterAndExec(file string) int {
	b, err := os.ReadFile(file)
	if err != nil || len(b)%8 != 0 || len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "seccomp child: bad program or no command:", err)
		return childFailed
	}
	prog := make([]unix.SockFilter, len(b)/8)
	binary.Read(bytes.NewReader(b), binary.NativeEndian, prog)
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "QUILT_PACKAGING_CHILD=") {
			env = append(env, e)
		}
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	runtime.LockOSThread()
	if _, _, errno := unix.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&fprog))); errno != 0 {
		fmt.Fprintln(os.Stderr, "seccomp child: install filter:", errno)
		return childFailed
	}
	err = syscall.Exec(os.Args[1], os.Args[1:], env)
	fmt.Fprintln(os.Stderr, "seccomp child: exec:", err)
	return childFailed
}

// TestSeccompEmulation: the emulated filter really filters, so that
// TestUnitsRun passing under it means something. Under the frontend's
// unit filter, a program that calls setuid(2) (in @privileged, denied)
// gets EPERM, and one that opens an AF_NETLINK socket gets EAFNOSUPPORT.
func TestSeccompEmulation(t *testing.T) {
	requireRoot(t)
	requireTool(t, "systemd-analyze", "setpriv")
	spec := unitFilter(t, loadUnit(t, frontendUnit))
	dir, err := os.MkdirTemp("", "quilt-pkg-seccomp-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755)
	filter := writeFilter(t, spec, dir, "frontend")
	for probe, want := range map[string]string{"setuid": "EPERM", "netlink": "EAFNOSUPPORT", "unix": "ok"} {
		cmd := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--no-new-privs", "--",
			filepath.Join(binDir, "packaging.test"), filepath.Join(binDir, "packaging.test"))
		cmd.Env = append(os.Environ(), "QUILT_PACKAGING_CHILD=seccomp:"+filter)
		// After the exec, the same binary runs the probe.
		cmd.Env = append(cmd.Env, "QUILT_PACKAGING_PROBE="+probe)
		out, err := cmd.CombinedOutput()
		if got := strings.TrimSpace(string(out)); err != nil || got != want {
			t.Errorf("probe %s under the frontend's filter: %v %q, want %q", probe, err, got, want)
		}
	}
}

// probe is run by TestSeccompEmulation under a filter: it prints the
// outcome of one syscall.
func probe(kind string) int {
	var err error
	switch kind {
	case "setuid":
		_, _, errno := unix.RawSyscall(unix.SYS_SETUID, 65534, 0, 0)
		if errno != 0 {
			err = errno
		}
	case "netlink", "unix":
		family := map[string]int{"netlink": unix.AF_NETLINK, "unix": unix.AF_UNIX}[kind]
		var fd int
		if fd, err = unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0); err == nil {
			unix.Close(fd)
		}
	}
	switch {
	case err == nil:
		fmt.Println("ok")
	case err == unix.EPERM:
		fmt.Println("EPERM")
	case err == unix.EAFNOSUPPORT:
		fmt.Println("EAFNOSUPPORT")
	default:
		fmt.Println(err)
	}
	return childOK
}
