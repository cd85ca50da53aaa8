// Command quilt-man writes the man pages of the shipped programs, gzipped,
// from the flag definitions the programs use themselves, so a page cannot
// drift from its program:
//
//   - quilt-runtime(8) and quiltctl(1): urfave/cli's own rendering (App.ToMan),
//     asked of the built binary with its hidden --generate-man-page flag;
//   - quilt-route-helper(8): the built helper's -h output (its flag.FlagSet's
//     PrintDefaults), parsed here: the helper links no CLI framework and no
//     man page code;
//   - quilt-ipam(8): the plugin's table of network configuration keys
//     (cniipam.Fields), which its parser refuses any other key against.
//
// Markdown goes through go-md2man, the renderer urfave/cli uses. Run by
// `make man` (and so `make package`); never shipped.
package main

import (
	"bytes"
	"compress/gzip"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/cpuguy83/go-md2man/v2/md2man"

	"github.com/quiltmesh/quilt-runtime/frontend/cniipam"
)

func main() {
	bin := flag.String("bin", "bin", "directory holding the built programs")
	out := flag.String("out", "bin/man", "directory the NAME.SECTION.gz pages go to")
	flag.Parse()
	if err := run(*bin, *out); err != nil {
		fmt.Fprintln(os.Stderr, "quilt-man:", err)
		os.Exit(1)
	}
}

func run(bin, out string) error {
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	var errs []error
	for _, p := range []struct {
		name    string
		section int
		render  func() ([]byte, error)
	}{
		{"quilt-runtime", 8, func() ([]byte, error) { return command(filepath.Join(bin, "quilt-runtime"), "--generate-man-page") }},
		{"quiltctl", 1, func() ([]byte, error) { return command(filepath.Join(bin, "quiltctl"), "--generate-man-page") }},
		{"quilt-route-helper", 8, func() ([]byte, error) {
			help, err := command(filepath.Join(bin, "quilt-route-helper"), "-h")
			if err != nil {
				return nil, err
			}
			flags, err := parseFlagHelp(string(help))
			if err != nil {
				return nil, err
			}
			return md2man.Render([]byte(helperPage(flags))), nil
		}},
		{"quilt-ipam", 8, func() ([]byte, error) { return md2man.Render([]byte(ipamPage())), nil }},
	} {
		roff, err := p.render()
		if err == nil {
			err = writeGzip(filepath.Join(out, fmt.Sprintf("%s.%d.gz", p.name, p.section)), roff)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s(%d): %w", p.name, p.section, err))
		}
	}
	return errors.Join(errs...)
}

// command runs a program and returns what it printed, both streams (Go's
// flag package prints -h to standard error).
func command(name string, args ...string) ([]byte, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, out)
	}
	return out, nil
}

// writeGzip writes a page compressed as Debian asks: best compression, and
// no name or time in the header, so the same page makes the same bytes.
func writeGzip(path string, b []byte) error {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return err
	}
	if _, err := zw.Write(b); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	return os.WriteFile(path, buf.Bytes(), 0o644)
}

// Flag is one flag of a Go flag.FlagSet, as PrintDefaults shows it.
type Flag struct {
	Name, Arg, Usage, Default string
}

// parseFlagHelp reads PrintDefaults output: a line "  -name [type]" per
// flag, then its usage indented by a tab, ending in "(default X)" when the
// default is not the zero value.
func parseFlagHelp(help string) ([]Flag, error) {
	var flags []Flag
	for _, line := range strings.Split(help, "\n") {
		switch {
		case strings.HasPrefix(line, "  -"):
			name, arg, _ := strings.Cut(strings.TrimPrefix(line, "  -"), " ")
			flags = append(flags, Flag{Name: name, Arg: map[string]string{"value": "VALUE", "string": "STRING", "int": "N", "": ""}[arg]})
		case strings.HasPrefix(line, "    \t") && len(flags) > 0:
			f := &flags[len(flags)-1]
			f.Usage = strings.TrimSpace(f.Usage + " " + strings.TrimSpace(line))
		}
	}
	if len(flags) == 0 {
		return nil, fmt.Errorf("no flags in the help text:\n%s", help)
	}
	for i, f := range flags {
		if u, def, ok := strings.Cut(f.Usage, " (default "); ok && strings.HasSuffix(def, ")") {
			flags[i].Usage, flags[i].Default = u, strings.Trim(strings.TrimSuffix(def, ")"), `"`)
		}
	}
	return flags, nil
}

// escape keeps markdown from reading a value's characters as markup.
func escape(s string) string {
	return strings.NewReplacer(`\`, `\\`, "*", `\*`, "_", `\_`, "`", "\\`", "<", `\<`).Replace(s)
}

func helperPage(flags []Flag) string {
	var b strings.Builder
	b.WriteString(`% quilt-route-helper 8

# NAME

quilt-route-helper - the privileged half of quilt-runtime: the node's overlay routes, with CAP_NET_ADMIN alone

# SYNOPSIS

quilt-route-helper --allow-uid USER [OPTION]...

# DESCRIPTION

quilt-route-helper adds, moves, deletes and lists the node's overlay routes for quilt-runtime(8), its only client, and tells it at once when they change by another hand, over a Unix SOCK_SEQPACKET socket of fixed-size binary records. It accepts only peers whose SO_PEERCRED uid is that of the one user --allow-uid names, re-checks every request against its own flags, and touches only routes of its own route protocol (81, "quilt") in the main table: /24s (--node-prefix-len) inside --cluster-cidr, via an interface on --allowed-interface.

It must be started with CAP_NET_ADMIN as its only capability, as a user and group other than root, with no_new_privs, and refuses to run otherwise. Its systemd unit, quilt-route-helper.service, started by quilt-route-helper.socket, does this; the package's /etc/default/quilt-runtime adds QUILT_HELPER_ARGS to its command line.

# OPTIONS

Flags may be written with one dash or two.

`)
	for _, f := range flags {
		fmt.Fprintf(&b, "**--%s**", f.Name)
		if f.Arg != "" {
			fmt.Fprintf(&b, " *%s*", f.Arg)
		}
		fmt.Fprintf(&b, "\n: %s", escape(f.Usage))
		if f.Default != "" {
			fmt.Fprintf(&b, " (default: %s)", escape(f.Default))
		}
		b.WriteString("\n\n")
	}
	b.WriteString(`# FILES

*/run/quilt/route-helper.sock*
: its socket, made by systemd (quilt-route-helper.socket), mode 0660, group quilt-route

# SEE ALSO

quilt-runtime(8), quiltctl(1), /usr/share/doc/quilt-runtime/SECURITY.md
`)
	return b.String()
}

func ipamPage() string {
	var b strings.Builder
	b.WriteString(`% quilt-ipam 8

# NAME

quilt-ipam - CNI IPAM plugin: container addresses from quilt-runtime

# SYNOPSIS

CNI_COMMAND=ADD|DEL|CHECK|GC|STATUS|VERSION CNI_CONTAINERID=ID CNI_IFNAME=IF CNI_NETNS=PATH CNI_PATH=DIRS quilt-ipam < network-configuration

# DESCRIPTION

quilt-ipam is an IPAM plugin of the Container Network Interface, specification 1.1. A container runtime's main plugin, such as the reference bridge plugin, runs it with the command in the environment and the network configuration on standard input; quilt-ipam asks quilt-runtime(8) over its Unix socket and prints the result, or a CNI error, as JSON on standard output.

ADD gives the container's interface an address of the node's subnet, keyed by container ID and interface name: the result holds the address, the gateway and a route to the cluster CIDR via the gateway, and the same ADD again returns the same address. DEL releases it (an unknown allocation is not an error). CHECK verifies the allocation is the prevResult's address. GC releases the network's allocations not among cni.dev/valid-attachments, once older than gcGracePeriod. STATUS fails while quilt-runtime or its route helper is unavailable, the node has no subnet yet, or its range is exhausted.

# CONFIGURATION

The keys of the network configuration's "ipam" object; any other key is refused (code 2).

`)
	for _, f := range cniipam.Fields {
		fmt.Fprintf(&b, "**%s**\n: %s (default: %s)\n\n", f.Name, escape(f.Usage), escape(f.Default))
	}
	b.WriteString(`# EXIT STATUS AND ERRORS

0 on success. On failure, exit status 1 and a CNI error on standard output with its code: 1 an unsupported cniVersion, 2 an unknown "ipam" key, 4 a missing or invalid CNI_CONTAINERID or CNI_IFNAME, 6 configuration that is not JSON, 7 a bad value, 11 quilt-runtime did not answer within the timeout or the node has no subnet yet (try again later), 50 STATUS: not available, 100 the node's address range is exhausted.

# FILES

*/usr/lib/cni/quilt-ipam*
: the plugin; runtimes that look in /opt/cni/bin need a link there

*/usr/share/doc/quilt-runtime/examples/10-quilt.conflist*
: an example network configuration for the reference bridge plugin

# SEE ALSO

quilt-runtime(8), quiltctl(1), cnitool(1), https://github.com/containernetworking/cni/blob/main/SPEC.md
`)
	return b.String()
}
