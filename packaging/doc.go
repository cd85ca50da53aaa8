// Package packaging holds what installs quilt-runtime on a Debian 12 host
// and the tests that prove it: the systemd units (systemd/), sysusers.d and
// tmpfiles.d entries, the default configuration (default/quilt-runtime),
// the rt_protos.d name of route protocol 81, and the .deb built from them
// by nfpm (nfpm.yaml, deb/; `make package`).
//
// The tests read the shipped files themselves, so they cannot drift from
// them:
//   - units_test.go: `systemd-analyze verify` and `systemd-analyze security
//     --offline=true` on the units (each service scores at most 1.2), the
//     hardening settings SECURITY.md claims, and that the units, the
//     configuration, sysusers.d and tmpfiles.d agree with each other;
//   - unitrun_test.go: starts the real binaries with the users,
//     capabilities, environment and arguments parsed from the units, the
//     helper through socket activation, in a throwaway network namespace,
//     and drives them with a real gRPC client;
//   - seccomp_test.go: the seccomp filter systemd would install from each
//     service's SystemCallFilter= and RestrictAddressFamilies=, built and
//     installed by the test (no systemd as PID 1 here), and proof that it
//     filters;
//   - deb_test.go: builds the .deb, runs lintian, installs it with dpkg in
//     a private overlay of / (the host's dpkg database is untouched), then
//     removes and purges it; renders its man pages with `man -l`.
//
// Tests that need root (namespaces, uids, dpkg in a chroot) skip without
// it and say why; with CI=true they fail instead, as do tests whose tools
// (systemd-analyze, lintian, setpriv, ...) are missing. .ci/run installs
// them.
package packaging
