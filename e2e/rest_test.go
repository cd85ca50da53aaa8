package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/quiltmesh/quilt-runtime/internal/netns"
	"github.com/quiltmesh/quilt-runtime/internal/testutil"
)

// What a leak check compares: a node's processes at rest, before and
// after the load. A baseline read while connections are still being torn
// down would count their goroutines and descriptors as the resting
// state, and hide a leak of as many; so both readings wait for
// conditions that say the node is at rest, never for a length of time.

// rest is what a node holds at rest.
type rest struct {
	Goroutines  float64 // the frontend's, from its metrics
	FrontendFDs int
	HelperFDs   int
}

// descriptors is the descriptors of both processes.
func (r rest) descriptors() [2]int { return [2]int{r.FrontendFDs, r.HelperFDs} }

// settled is how many readings in a row at rest make one: the
// descriptors must agree in all of them, and the goroutines count the
// fewest seen. A goroutine count read through the metrics counts, besides
// the goroutines at rest, a varying number of those that gather the
// metrics (the Prometheus registry runs collectors concurrently), and
// those of a connection whose socket has closed, still ending.
const settled = 20

// atRest waits until the node is at rest and returns what it holds then:
// the frontend has resynced and its helper answers (its connection for
// requests is up), the helper holds exactly the frontend's two
// connections (requests and the watch), no gRPC connection to the
// frontend is open any more (a closed client's goroutines and descriptors
// on the server's side are going), and the counts have settled (see
// settled).
func (n *node) atRest(t *testing.T, m *scraper) rest {
	t.Helper()
	waitFor(t, n.frontend, func() bool { return m.metric(t, "quilt_resyncs_total") >= 1 && m.metric(t, "quilt_helper_up") == 1 })
	r, err := n.untilRest(t, m, func(rest) bool { return true })
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// checkNoLeak waits until the node is at rest again holding no more than
// base. If it does not, the test fails, and as it ends the frontend
// prints the stack of every goroutine it has (SIGQUIT), for the log.
func (n *node) checkNoLeak(t *testing.T, m *scraper, base rest) {
	t.Helper()
	now, err := n.untilRest(t, m, func(r rest) bool {
		return r.Goroutines <= base.Goroutines && r.FrontendFDs <= base.FrontendFDs && r.HelperFDs <= base.HelperFDs
	})
	t.Logf("at rest before the load: %+v; after: %+v", base, now)
	if err == nil {
		return
	}
	t.Errorf("leak: %v", err)
	fe := n.frontend
	t.Cleanup(func() {
		stacks, err := fe.Stacks(10 * time.Second)
		t.Logf("the frontend's goroutines as the test ends (%v):\n%s", err, stacks)
	})
}

// untilRest waits, for up to 10s, until the node is at rest (see atRest)
// and what it holds then meets cond, and returns that.
func (n *node) untilRest(t *testing.T, m *scraper, cond func(rest) bool) (rest, error) {
	t.Helper()
	_, port, _ := net.SplitHostPort(n.addr)
	var last rest
	var readings []rest // in a row, at rest
	var conns, helperConns int
	err := testutil.Until(context.Background(), 10*time.Second, n.frontend, func() bool {
		conns, helperConns = tcpConns(t, n.frontend.Pid(), port), n.helperConns(t)
		now := rest{Goroutines: m.metric(t, "quilt_goroutines"), FrontendFDs: fds(t, n.frontend.Pid()), HelperFDs: fds(t, n.helper.Pid())}
		last = now
		switch {
		case conns > 0 || helperConns != 2:
			readings = readings[:0]
			return false
		case len(readings) > 0 && now.descriptors() != readings[0].descriptors():
			readings = readings[:0]
		}
		readings = append(readings, now)
		if len(readings) < settled {
			return false
		}
		readings = readings[len(readings)-settled:]
		for _, r := range readings {
			last.Goroutines = min(last.Goroutines, r.Goroutines)
		}
		return cond(last)
	})
	if err != nil {
		return last, fmt.Errorf("not at rest as wanted: %w; last reading %+v; %d gRPC connections to the frontend, the helper holds %d connections (want 0 and 2)",
			err, last, conns, helperConns)
	}
	return last, nil
}

// helperAtRest waits, for up to 10s, until the helper holds just the
// frontend's two connections and its descriptors then meet cond, and
// returns how many it has.
func (n *node) helperAtRest(t *testing.T, cond func(fds int) bool) (int, error) {
	t.Helper()
	var fd, conns int
	err := testutil.Until(context.Background(), 10*time.Second, n.helper, func() bool {
		conns, fd = n.helperConns(t), fds(t, n.helper.Pid())
		return conns == 2 && cond(fd)
	})
	if err != nil {
		return fd, fmt.Errorf("the helper is not at rest as wanted: %w; it holds %d descriptors, %d connections (want 2)", err, fd, conns)
	}
	return fd, nil
}

// scraper reads the frontend's /metrics, inside its namespace, over one
// connection it keeps open: a connection per reading would leave
// goroutines ending in the very counts it reads.
type scraper struct {
	addr string
	c    *http.Client
}

func newScraper(t *testing.T, ns, addr string) *scraper {
	dial := func(ctx context.Context, _, a string) (net.Conn, error) { return netns.Dial(ctx, ns, a, 0) }
	s := &scraper{addr: addr, c: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: dial, MaxIdleConnsPerHost: 1}}}
	t.Cleanup(s.c.CloseIdleConnections)
	return s
}

// metric reads one value.
func (s *scraper) metric(t *testing.T, name string) float64 {
	t.Helper()
	resp, err := s.c.Get("http://" + s.addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	t.Fatalf("no %s in the metrics:\n%s", name, b)
	return 0
}

// tcpConns counts the TCP sockets in pid's network namespace on the given
// local ports that are neither listening nor in TIME_WAIT: the server's
// ends of connections that are still open or being closed.
func tcpConns(t *testing.T, pid int, ports ...string) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/tcp", pid))
	if err != nil {
		t.Fatal(err)
	}
	var hex []string
	for _, p := range ports {
		n, _ := strconv.Atoi(p)
		hex = append(hex, fmt.Sprintf("%04X", n))
	}
	const listen, timeWait = "0A", "06"
	n := 0
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line) // sl local_address rem_address st ...
		if len(f) < 4 {
			continue
		}
		_, local, _ := strings.Cut(f[1], ":")
		if slices.Contains(hex, local) && f[3] != listen && f[3] != timeWait {
			n++
		}
	}
	return n
}

// helperConns counts the connections the helper has accepted and still
// holds: the connected sockets bound to its socket's path.
func (n *node) helperConns(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/unix", n.helper.Pid()))
	if err != nil {
		t.Fatal(err)
	}
	const connected = "03"
	count := 0
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line) // Num RefCount Protocol Flags Type St Inode Path
		if len(f) == 8 && f[5] == connected && f[7] == n.sock {
			count++
		}
	}
	return count
}

// fds counts a process's open file descriptors.
func fds(t *testing.T, pid int) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}
