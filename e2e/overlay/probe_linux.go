package overlay

import (
	"bufio"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// echoPort is where every container's echo server listens.
const echoPort = 7777

// ErrWrongPeer means a connection succeeded but another container, or
// something else, answered.
var ErrWrongPeer = errors.New("wrong peer answered")

// startEcho serves TCP on the container's echoPort: each connection sends
// one line, and gets back the container's ID, a space and that line.
func (c *cluster) startEcho(ct *container) error {
	l, err := listenIn(ct.ns, fmt.Sprintf(":%d", echoPort))
	if err != nil {
		return fmt.Errorf("echo server in %s: %w", ct.id, err)
	}
	c.mu.Lock()
	c.listeners = append(c.listeners, l)
	c.mu.Unlock()
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return // closed
			}
			go func() {
				defer conn.Close()
				conn.SetDeadline(time.Now().Add(5 * time.Second))
				line, err := bufio.NewReader(io64k{conn}).ReadString('\n')
				if err == nil {
					fmt.Fprintf(conn, "%s %s", ct.id, line)
				}
			}()
		}
	}()
	return nil
}

// io64k caps what an echo server reads from one connection.
type io64k struct{ c net.Conn }

func (r io64k) Read(p []byte) (int, error) { return r.c.Read(p[:min(len(p), 64<<10)]) }

// probe opens a TCP connection from inside one container to another's echo
// server, sends a random token and checks that the right container echoes
// it, all within timeout.
func probe(ctx context.Context, from, to *container, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := dialIn(ctx, from.ns, to.echoAddr(), timeout)
	if err != nil {
		return err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	var b [8]byte
	rand.Read(b[:])
	token := hex.EncodeToString(b[:])
	if _, err := fmt.Fprintf(conn, "%s\n", token); err != nil {
		return err
	}
	got, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	if want := to.id + " " + token + "\n"; got != want {
		return fmt.Errorf("%w: want %q, got %q", ErrWrongPeer, strings.TrimSpace(want), strings.TrimSpace(got))
	}
	return nil
}

// classify names what a probe's error means.
func classify(err error) Outcome {
	switch {
	case err == nil:
		return Reached
	case errors.Is(err, unix.ENETUNREACH), errors.Is(err, unix.EHOSTUNREACH):
		return Unreachable
	case errors.Is(err, unix.ECONNREFUSED):
		return Refused
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded):
		return TimedOut
	case errors.Is(err, ErrWrongPeer):
		return WrongPeer
	}
	return Failed
}

// matrixTimeout bounds each probe of a connectivity matrix. A probe that
// works takes well under a millisecond here; one the kernel refuses
// (unreachable) returns as soon as the ICMP error arrives.
const matrixTimeout = 3 * time.Second

// matrix probes from every container to every other one, all at once.
func (c *cluster) matrix(ctx context.Context) *Matrix { return c.matrixOf(ctx, c.allContainers()) }

// matrixOf probes from each of the containers to every other one of them.
func (c *cluster) matrixOf(ctx context.Context, all []*container) *Matrix {
	m := &Matrix{}
	for _, ct := range all {
		m.Containers = append(m.Containers, ct.id)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, from := range all {
		for _, to := range all {
			if from == to {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				start := time.Now()
				err := probe(ctx, from, to, matrixTimeout)
				cell := Cell{From: from.id, To: to.id, Outcome: classify(err), Millis: ms(time.Since(start))}
				if err != nil {
					cell.Error = err.Error()
				}
				mu.Lock()
				m.Cells = append(m.Cells, cell)
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	// Row by row, in container order.
	idx := map[string]int{}
	for i, id := range m.Containers {
		idx[id] = i
	}
	slices.SortFunc(m.Cells, func(a, b Cell) int {
		return cmp.Or(cmp.Compare(idx[a.From], idx[b.From]), cmp.Compare(idx[a.To], idx[b.To]))
	})
	return m
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// prober probes one path continuously until stopped.
type prober struct {
	from, to          *container
	interval, timeout time.Duration
	cancel            context.CancelFunc
	done              chan struct{}

	mu      sync.Mutex
	start   time.Time
	results []probeResult
}

type probeResult struct {
	begin, end time.Time
	err        error
}

// startProber probes from one container to another every interval (a new
// connection each time, each with its own timeout) until stop.
func startProber(ctx context.Context, from, to *container, interval, timeout time.Duration) *prober {
	ctx, cancel := context.WithCancel(ctx)
	p := &prober{from: from, to: to, interval: interval, timeout: timeout, cancel: cancel, done: make(chan struct{}), start: time.Now()}
	go func() {
		defer close(p.done)
		for ctx.Err() == nil {
			begin := time.Now()
			err := probe(ctx, from, to, timeout)
			if ctx.Err() != nil {
				return // stopped mid-probe: not a result
			}
			p.mu.Lock()
			p.results = append(p.results, probeResult{begin: begin, end: time.Now(), err: err})
			p.mu.Unlock()
			select {
			case <-ctx.Done():
			case <-time.After(time.Until(begin.Add(interval))):
			}
		}
	}()
	return p
}

// successes counts the successful probes that ended after t.
func (p *prober) successesAfter(t time.Time) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, r := range p.results {
		if r.err == nil && r.end.After(t) {
			n++
		}
	}
	return n
}

// firstSuccessAfter returns when the first successful probe that began
// after t ended.
func (p *prober) firstSuccessAfter(t time.Time) (time.Time, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, r := range p.results {
		if r.err == nil && r.begin.After(t) {
			return r.end, true
		}
	}
	return time.Time{}, false
}

// probesBetween counts the probes that ended within [a, b].
func (p *prober) probesBetween(a, b time.Time) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, r := range p.results {
		if !r.end.Before(a) && !r.end.After(b) {
			n++
		}
	}
	return n
}

// stop ends the probe and summarises it.
func (p *prober) stop() ProbeRun {
	p.cancel()
	<-p.done
	end := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	run := ProbeRun{From: p.from.id, To: p.to.id, IntervalMs: ms(p.interval), TimeoutMs: ms(p.timeout), Probes: len(p.results)}
	last := p.start
	for _, r := range p.results {
		if r.err != nil {
			run.Failures++
			if run.FirstFail == "" {
				run.FirstFail = fmt.Sprintf("%s after %.0fms: %v", classify(r.err), ms(r.end.Sub(p.start)), r.err)
			}
			continue
		}
		run.MaxGapMs = max(run.MaxGapMs, ms(r.end.Sub(last)))
		last = r.end
	}
	run.MaxGapMs = max(run.MaxGapMs, ms(end.Sub(last)))
	return run
}
