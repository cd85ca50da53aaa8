package overlay

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// Outcome is what one TCP probe between two containers found.
type Outcome string

const (
	Reached     Outcome = "ok"          // connected, and the right container echoed our token
	Unreachable Outcome = "unreachable" // the kernel said ENETUNREACH or EHOSTUNREACH: failed fast
	Refused     Outcome = "refused"     // a RST: something answered, but not our echo server
	TimedOut    Outcome = "timeout"     // no answer at all before the deadline
	WrongPeer   Outcome = "wrong-peer"  // connected, but another container answered
	Failed      Outcome = "error"       // anything else
)

// Cell is one probe of a connectivity matrix.
type Cell struct {
	From    string  `json:"from"`
	To      string  `json:"to"`
	Outcome Outcome `json:"outcome"`
	Millis  float64 `json:"ms"`
	Error   string  `json:"error,omitempty"`
}

// Matrix is a probe from every container to every other one.
type Matrix struct {
	Containers []string `json:"containers"`
	Cells      []Cell   `json:"cells"` // row by row: from, then to; no probe of a container to itself
}

// Cell returns the probe from one container to another.
func (m *Matrix) Cell(from, to string) (Cell, bool) {
	for _, c := range m.Cells {
		if c.From == from && c.To == to {
			return c, true
		}
	}
	return Cell{}, false
}

// Call is one request the agent stand-in (or the container runtime, for
// AllocateIP) made, or one command it ran on a node.
type Call struct {
	Node    string `json:"node"`
	Call    string `json:"call"` // e.g. "QuiltRuntime.InjectRoute(10.42.2.0/24, vxlan100)" or "bridge fdb append ..."
	Success bool   `json:"success"`
	Answer  string `json:"answer,omitempty"` // the error, or what came back (an address)
}

// Route is one line of a node's IPv4 main routing table.
type Route struct {
	Line string `json:"line"`
	Ours bool   `json:"ours"` // route protocol 81: installed by quilt-route-helper
}

// NodeRoutes is a node's routing table at the end of a step.
type NodeRoutes struct {
	Node   string  `json:"node"`
	Routes []Route `json:"routes"`
}

// Check is one assertion a step made, and whether it held.
type Check struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail,omitempty"`
}

// ProbeRun is a continuous TCP probe from one container to another: a new
// connection, a token written and echoed back, every Interval.
type ProbeRun struct {
	From       string  `json:"from"`
	To         string  `json:"to"`
	IntervalMs float64 `json:"interval_ms"`
	TimeoutMs  float64 `json:"timeout_ms"`
	Probes     int     `json:"probes"`
	Failures   int     `json:"failures"`
	// MaxGapMs is the longest time between two successful probes (or
	// between the start and the first success, or the last success and the
	// end): the longest the path was not shown to work.
	MaxGapMs  float64 `json:"max_gap_ms"`
	FirstFail string  `json:"first_failure,omitempty"`
}

// Step is one stage of the scenario and what it found.
type Step struct {
	Name    string       `json:"name"`
	Title   string       `json:"title"`
	Explain string       `json:"explain"`
	Calls   []Call       `json:"calls,omitempty"`
	Routes  []NodeRoutes `json:"routes,omitempty"`
	Matrix  *Matrix      `json:"matrix,omitempty"`
	Probes  []ProbeRun   `json:"probes,omitempty"`
	Notes   []string     `json:"notes,omitempty"` // measured facts worth a line
	Checks  []Check      `json:"checks"`
	Seconds float64      `json:"seconds"`
}

// OK reports whether every check of the step held.
func (s *Step) OK() bool {
	for _, c := range s.Checks {
		if !c.OK {
			return false
		}
	}
	return true
}

// Failed returns the checks that did not hold.
func (s *Step) Failed() []Check {
	var f []Check
	for _, c := range s.Checks {
		if !c.OK {
			f = append(f, c)
		}
	}
	return f
}

// ContainerInfo describes a container.
type ContainerInfo struct {
	ID        string `json:"id"`
	Namespace string `json:"namespace"`
	IP        string `json:"ip"` // with its prefix length, as AllocateIP answered
	Gateway   string `json:"gateway"`
}

// NodeInfo describes a node.
type NodeInfo struct {
	Name        string          `json:"name"`
	Namespace   string          `json:"namespace"`
	Underlay    string          `json:"underlay"`
	Subnet      string          `json:"subnet"`
	Gateway     string          `json:"gateway"`
	HelperUID   int             `json:"helper_uid"`
	FrontendUID int             `json:"frontend_uid"`
	StateDir    string          `json:"state_dir"`
	Containers  []ContainerInfo `json:"containers,omitempty"`
}

// Measurements are the figures the scenario measured.
type Measurements struct {
	ResyncIntervalSeconds float64 `json:"resync_interval_seconds"`
	// HealSeconds: from `ip route flush proto 81` on node 2 until TCP
	// works again both ways between a container on node 1 and one on node 2.
	HealSeconds float64 `json:"heal_seconds"`
	// RoutesBackSeconds: from the flush until node 2's kernel holds all
	// its routes again.
	RoutesBackSeconds float64 `json:"routes_back_seconds"`
	// Restart*: the continuous probe from node 1 to node 2 while node 2's
	// helper and frontend were killed with SIGKILL and started again.
	RestartProbes   int     `json:"restart_probes"`
	RestartFailures int     `json:"restart_failures"`
	RestartMaxGapMs float64 `json:"restart_max_gap_ms"`
	// ControlPlaneDownSeconds: from the SIGKILL until the new frontend
	// reported SERVING.
	ControlPlaneDownSeconds float64 `json:"control_plane_down_seconds"`
}

// Cleanup says what Close removed, and what it could not.
type Cleanup struct {
	Namespaces int      `json:"namespaces"`
	Processes  int      `json:"processes"`
	Leftovers  []string `json:"leftovers,omitempty"` // empty when everything went
}

// Report is the whole run, for people (Text) and machines (JSON).
type Report struct {
	Started      time.Time    `json:"started"`
	Seconds      float64      `json:"seconds"`
	Prefix       string       `json:"prefix"` // every namespace's name starts with it
	Nodes        []NodeInfo   `json:"nodes"`
	Steps        []*Step      `json:"steps"`
	Measurements Measurements `json:"measurements"`
	Cleanup      Cleanup      `json:"cleanup"`
	OK           bool         `json:"ok"`
	Error        string       `json:"error,omitempty"`
}

// WriteText writes a step for a person reading a terminal.
func (s *Step) WriteText(w io.Writer) {
	fmt.Fprintf(w, "\n== %s (%.1fs)\n", s.Title, s.Seconds)
	for _, line := range strings.Split(strings.TrimSpace(s.Explain), "\n") {
		fmt.Fprintf(w, "   %s\n", line)
	}
	if len(s.Calls) > 0 {
		fmt.Fprintln(w, "\n   what was asked:")
		for _, c := range s.Calls {
			ans := "ok"
			if !c.Success {
				ans = "FAILED"
			}
			if c.Answer != "" {
				ans += ": " + c.Answer
			}
			fmt.Fprintf(w, "     %-6s %s -> %s\n", c.Node, c.Call, ans)
		}
	}
	for _, nr := range s.Routes {
		fmt.Fprintf(w, "\n   %s routing table (* = ours, route protocol 81):\n", nr.Node)
		for _, r := range nr.Routes {
			mark := " "
			if r.Ours {
				mark = "*"
			}
			fmt.Fprintf(w, "     %s %s\n", mark, r.Line)
		}
	}
	if s.Matrix != nil {
		fmt.Fprintln(w, "\n   connectivity (row: from, column: to; TCP connect and echo):")
		s.Matrix.WriteText(w, "     ")
	}
	for _, p := range s.Probes {
		fmt.Fprintf(w, "\n   probe %s -> %s every %.0fms (timeout %.0fms): %d probes, %d failed, longest gap between successes %.0fms\n",
			p.From, p.To, p.IntervalMs, p.TimeoutMs, p.Probes, p.Failures, p.MaxGapMs)
		if p.FirstFail != "" {
			fmt.Fprintf(w, "     first failure: %s\n", p.FirstFail)
		}
	}
	for _, n := range s.Notes {
		fmt.Fprintf(w, "\n   %s\n", n)
	}
	fmt.Fprintln(w)
	for _, c := range s.Checks {
		mark := "PASS"
		if !c.OK {
			mark = "FAIL"
		}
		if c.Detail != "" {
			fmt.Fprintf(w, "   %s %s: %s\n", mark, c.Name, c.Detail)
		} else {
			fmt.Fprintf(w, "   %s %s\n", mark, c.Name)
		}
	}
}

// WriteText writes the matrix as a table, each line starting with indent.
func (m *Matrix) WriteText(w io.Writer, indent string) {
	width := len(Unreachable)
	for _, c := range m.Containers {
		width = max(width, len(c))
	}
	row := func(first string, cells []string) {
		line := fmt.Sprintf("%s%-*s", indent, width, first)
		for _, c := range cells {
			line += fmt.Sprintf("  %-*s", width, c)
		}
		fmt.Fprintln(w, strings.TrimRight(line, " "))
	}
	row("from \\ to", m.Containers)
	for _, from := range m.Containers {
		var cells []string
		for _, to := range m.Containers {
			v := "-"
			if c, ok := m.Cell(from, to); ok {
				v = string(c.Outcome)
			}
			cells = append(cells, v)
		}
		row(from, cells)
	}
}

// WriteText writes the nodes and containers, then every step, then the
// measurements and the cleanup.
func (r *Report) WriteText(w io.Writer) {
	r.WriteHeader(w)
	for _, s := range r.Steps {
		s.WriteText(w)
	}
	r.WriteSummary(w)
}

// WriteHeader writes the nodes and their containers.
func (r *Report) WriteHeader(w io.Writer) {
	fmt.Fprintf(w, "Three Quilt nodes on one machine, each a network namespace (names start with %s)\n", r.Prefix)
	for _, n := range r.Nodes {
		fmt.Fprintf(w, "  %s: underlay %s, container subnet %s (gateway %s on quilt0); helper uid %d with CAP_NET_ADMIN only, frontend uid %d with no capabilities\n",
			n.Name, n.Underlay, n.Subnet, n.Gateway, n.HelperUID, n.FrontendUID)
	}
}

// WriteSummary writes the measurements, the cleanup and the verdict.
func (r *Report) WriteSummary(w io.Writer) {
	m := r.Measurements
	fmt.Fprintln(w, "\n== Measured")
	fmt.Fprintf(w, "   heal after `ip route flush proto 81` on node2: TCP works again both ways after %.2fs (routes back after %.2fs; resync interval %.0fs)\n",
		m.HealSeconds, m.RoutesBackSeconds, m.ResyncIntervalSeconds)
	fmt.Fprintf(w, "   SIGKILL and restart of node2's helper and frontend: %d probes node1 -> node2, %d failed, longest gap between successes %.0fms; control plane back after %.2fs\n",
		m.RestartProbes, m.RestartFailures, m.RestartMaxGapMs, m.ControlPlaneDownSeconds)
	fmt.Fprintf(w, "\n== Cleanup: removed %d namespaces (their interfaces with them) and %d processes", r.Cleanup.Namespaces, r.Cleanup.Processes)
	if len(r.Cleanup.Leftovers) > 0 {
		fmt.Fprintf(w, "; LEFT BEHIND: %s", strings.Join(r.Cleanup.Leftovers, ", "))
	}
	fmt.Fprintln(w)
	if r.OK {
		fmt.Fprintf(w, "\nPASS: every check held (%.1fs)\n", r.Seconds)
	} else {
		fmt.Fprintf(w, "\nFAIL: %s\n", r.Error)
	}
}
