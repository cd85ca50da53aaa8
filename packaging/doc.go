// Package packaging holds what installs quilt-runtime on a Debian 12 host
// and the tests that prove it: the systemd units (systemd/), sysusers.d and
// tmpfiles.d entries, the default configuration (default/quilt-runtime),
// the rt_protos.d name of route protocol 81, and the .deb built from them
// by nfpm (nfpm.yaml, deb/; `make package`).
//
// The tests read the shipped files themselves, so they cannot drift from
// them:
//   - units_test.go: `systemd-analyze verify` and `systemd-analyze security
//     --offline=true` on the units (each service scores at most 1.1), the
//     hardening settings SECURITY.md claims, and that the units, the
//     configuration, sysusers.d and tmpfiles.d agree with each other;
//   - unitrun_test.go: starts the real binaries with the users,
//     capabilities, environment and arguments parsed from the units, both
//     through socket activation and the frontend as Type=notify (the test
//     reads its NOTIFY_SOCKET), in a throwaway network namespace, and
//     drives them with a real gRPC client;
//   - maint_test.go: postinst's calls to systemd, against stand-ins, on a
//     first install and on upgrades (the gRPC socket is never restarted);
//   - seccomp_test.go: the seccomp filter systemd would install from each
//     service's SystemCallFilter= and RestrictAddressFamilies=, built and
//     installed by the test (no systemd as PID 1 here), and proof that it
//     filters;
//   - run_test.go: `make run` (packaging/dev/run.sh) stopped every way
//     (timeout, Ctrl-C, signals to make or to the script, a closed
//     terminal, SIGKILL and the next run's sweep) leaves nothing behind;
//   - deb_test.go: builds the .deb, runs lintian, installs it with dpkg in
//     a private overlay of / (the host's dpkg database is untouched), then
//     removes and purges it; renders its man pages with `man -l`;
//   - deps_test.go: make deps' script (dev/deps.sh, dev/deps.txt) against
//     stand-ins of the commands it looks for and of apt-get.
//
// Tests that need root (namespaces, uids, dpkg in a chroot) skip without
// it and say why; with CI=true they fail instead, as do tests whose tools
// (systemd-analyze, lintian, setpriv, ...) are missing. make deps
// installs them (packaging/dev/deps.txt).
package packaging
