// Package e2e holds the tests that span processes: the real route helper
// and frontend binaries, started under real uids and capabilities with
// setpriv, against the real kernel inside throwaway network namespaces.
//
// The tests need root (to make namespaces and switch uids). Without root
// they skip with the reason; with CI=true they fail instead of skipping.
// Every namespace, process and socket a test makes is removed when it ends,
// whether it passed or not.
//
// The tests wait on conditions (a log line, a metric, a counter, the
// kernel's tables), never for a length of time; a wait that gives up
// after its deadline (generous: for a resync, its interval and then some)
// fails the test. They judge no latency or memory figure of the machine's:
// they log them, and `make bench` measures them. A leak check compares a
// node at rest before and after its load (rest_test.go): the helper
// holding just the frontend's two connections, no client connection
// left, the counts settled.
package e2e
