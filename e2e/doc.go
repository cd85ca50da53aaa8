// Package e2e holds the tests that span processes: the real route helper
// and frontend binaries, started under real uids and capabilities with
// setpriv, against the real kernel inside throwaway network namespaces.
//
// The tests need root (to make namespaces and switch uids). Without root
// they skip with the reason; with CI=true they fail instead of skipping.
// Every namespace, process and socket a test makes is removed when it ends,
// whether it passed or not.
package e2e
