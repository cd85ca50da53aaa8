package bench

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"
)

// Report is one run of the benchmark: the machine, the settings, and for
// each N every system's results. It is what `quilt-bench -o json` prints.
type Report struct {
	Started  time.Time `json:"started"`
	Seconds  float64   `json:"seconds"` // wall time of the whole run
	Machine  Machine   `json:"machine"`
	Settings Settings  `json:"settings"`
	Runs     []Scale   `json:"runs"`
	Targets  []Target  `json:"targets"`
	Error    string    `json:"error,omitempty"` // why the run stopped early
}

// Machine names the machine the figures come from.
type Machine struct {
	CPU         string     `json:"cpu"`
	Cores       int        `json:"cores"` // logical CPUs this process may run on
	MemTotalMiB int        `json:"mem_total_mib"`
	OS          string     `json:"os"`
	Kernel      string     `json:"kernel"`
	GoVersion   string     `json:"go_version"` // the runner's; each process's binary has its own in Process
	GOMAXPROCS  int        `json:"gomaxprocs"` // the runner's (its gRPC clients and the kernel floor)
	LoadStart   [3]float64 `json:"loadavg_start"`
	LoadEnd     [3]float64 `json:"loadavg_end"`
}

// Settings are the knobs of the run.
type Settings struct {
	Cluster        string   `json:"cluster"`
	NodeSubnet     string   `json:"node_subnet"` // configured, never routed
	Interface      string   `json:"interface"`
	Clients        int      `json:"clients"`      // of the concurrent workloads
	KernelBatch    int      `json:"kernel_batch"` // route messages per sendmsg in (a)'s pipelined rows
	ApplyChunk     int      `json:"apply_chunk"`  // route changes per ApplyRoutes message
	PhaseLimit     float64  `json:"phase_limit_seconds"`
	ResyncInterval float64  `json:"resync_interval_seconds"` // (b)'s and (c)'s --resync-interval
	Deletions      int      `json:"deletions"`               // routes deleted by hand, one at a time, in the drift repair row
	Veths          int      `json:"veths"`                   // extra veth interfaces in the namespace in the veth row
	Systems        []string `json:"systems"`
}

// Scale is every system's results for one N.
type Scale struct {
	N       int      `json:"n"`     // as asked
	Peers   int      `json:"peers"` // routes each workload adds and removes
	Note    string   `json:"note,omitempty"`
	Systems []System `json:"systems"`
}

// System is one of the three ways of changing routes, as measured.
type System struct {
	ID        string    `json:"id"` // a, b or c
	Name      string    `json:"name"`
	Namespace string    `json:"namespace"`
	Processes []Process `json:"processes,omitempty"`
	Results   []Result  `json:"results"`
	Error     string    `json:"error,omitempty"` // why its workloads stopped early
}

// Process is a server process of (b) or (c), as seen at the end of its run.
type Process struct {
	Name           string `json:"name"`
	PID            int    `json:"pid"`
	UID            int    `json:"uid"`
	CapEff         string `json:"cap_eff"`      // effective capabilities, as /proc/PID/status shows them
	PeakRSSKiB     int64  `json:"peak_rss_kib"` // VmHWM
	RSSKiB         int64  `json:"rss_kib"`      // VmRSS at the end
	GOMAXPROCS     int    `json:"gomaxprocs"`
	GOMAXPROCSFrom string `json:"gomaxprocs_from"` // "reported" by the process, or "derived" from its environment, CPU affinity and cgroup CPU limit
	GoVersion      string `json:"go_version"`      // the binary was built with
}

// Result is one workload on one system.
type Result struct {
	Workload     string   `json:"workload"` // a Workload ID
	Title        string   `json:"title"`
	Routes       int      `json:"routes"` // operations completed
	Of           int      `json:"of"`     // operations asked for
	Seconds      float64  `json:"seconds"`
	RoutesPerSec float64  `json:"routes_per_sec"`
	P50Ms        *float64 `json:"p50_ms,omitempty"` // per operation, as the client saw it
	P99Ms        *float64 `json:"p99_ms,omitempty"`
	Status       string   `json:"status"` // see the Status constants
	Detail       string   `json:"detail,omitempty"`
	Note         string   `json:"note,omitempty"` // printed under the table: what the figures hold
	// On (c)'s rows: time per route over that of (a)'s comparable row
	// (Workload.Kernel) and of (b)'s same row, and p50 over (b)'s p50.
	COverA    *float64 `json:"c_over_a,omitempty"`
	COverB    *float64 `json:"c_over_b,omitempty"`
	P50COverB *float64 `json:"p50_c_over_b,omitempty"`
	// On every system's rows with a Workload.Base: p50 over the p50 of
	// the base row of the same system.
	P50OverBase *float64 `json:"p50_over_base,omitempty"`
}

// Statuses of a Result.
const (
	StatusOK            = "ok"
	StatusPartial       = "partial"       // the phase limit stopped it: the figures cover Routes of Of
	StatusUnimplemented = "unimplemented" // the server answered codes.Unimplemented
	StatusError         = "error"
	StatusSkipped       = "skipped" // nothing to do, or an earlier workload failed
)

// Target is one of the figures the lead checks, read off the results.
type Target struct {
	Name   string   `json:"name"`
	N      int      `json:"n"`
	Value  *float64 `json:"value,omitempty"` // in Unit; absent when not measured
	Unit   string   `json:"unit"`            // "x", "ms" or "MiB"
	Limit  float64  `json:"limit"`
	Want   string   `json:"want"`          // "<=" or "<"
	Met    *bool    `json:"met,omitempty"` // absent when not measured
	Detail string   `json:"detail,omitempty"`
}

// Workload is one measured operation.
type Workload struct {
	ID     string
	Kernel string // (a)'s row that (c)'s is compared with; empty: none
	Base   string // the row of the same system whose p50 this one's is compared with; empty: none
	// Watch: the row measures drift repair by the helper's watch, which
	// only (c) has; (b) repairs on its periodic resync alone.
	Watch bool
	title func(peers int, s Settings) string
}

// Title is the workload's name in the table.
func (w Workload) Title(peers int, s Settings) string { return w.title(peers, s) }

func fixed(t string) func(int, Settings) string { return func(int, Settings) string { return t } }

// Workloads in the order they run and are shown. (a) runs the kernel rows,
// (b) and (c) the gRPC rows. The first gRPC row changes no route: it is
// the cost of a gRPC call alone, the floor under every per-RPC row. Each
// gRPC row after it starts from the routes the one before left (inject,
// inject again, remove; then the same with concurrent clients; then the
// batch RPC's adds; with every route in place, the drift repairs: routes
// deleted by hand one at a time, then the device bounced; the batch RPC's
// removals; last, InjectRoute again one at a time with Settings.Veths
// extra veth interfaces in the namespace).
var Workloads = []Workload{
	{ID: "kernel-add-pipelined", title: fixed("kernel add, pipelined")},
	{ID: "kernel-delete-pipelined", title: fixed("kernel delete, pipelined")},
	{ID: "kernel-add-sequential", title: fixed("kernel add, one ack each")},
	{ID: "kernel-delete-sequential", title: fixed("kernel delete, one ack each")},
	{ID: "health-sequential", title: fixed("gRPC round trip (Health.Check)")},
	{ID: "inject-sequential", Kernel: "kernel-add-sequential", title: fixed("InjectRoute, sequential")},
	{ID: "reinject-sequential", Base: "health-sequential", title: fixed("InjectRoute again (resync)")},
	{ID: "remove-sequential", Kernel: "kernel-delete-sequential", title: fixed("RemoveRoute, sequential")},
	{ID: "inject-concurrent", Kernel: "kernel-add-sequential", title: func(_ int, s Settings) string { return fmt.Sprintf("InjectRoute, %d clients", s.Clients) }},
	{ID: "remove-concurrent", Kernel: "kernel-delete-sequential", title: func(_ int, s Settings) string { return fmt.Sprintf("RemoveRoute, %d clients", s.Clients) }},
	{ID: "apply-add", Kernel: "kernel-add-pipelined", title: func(n int, _ Settings) string { return fmt.Sprintf("ApplyRoutes, %s adds", group(float64(n))) }},
	{ID: "repair-delete", Watch: true, title: fixed("repair after route del")},
	{ID: "repair-bounce", Watch: true, Kernel: "kernel-add-pipelined", title: func(_ int, s Settings) string { return fmt.Sprintf("repair after %s down, up", s.Interface) }},
	{ID: "apply-remove", Kernel: "kernel-delete-pipelined", title: func(n int, _ Settings) string { return fmt.Sprintf("ApplyRoutes, %s removes", group(float64(n))) }},
	{ID: "inject-veths", Kernel: "kernel-add-sequential", Base: "inject-sequential", title: func(_ int, s Settings) string {
		return fmt.Sprintf("InjectRoute, %s extra veths", group(float64(s.Veths)))
	}},
}

func workload(id string) Workload {
	for _, w := range Workloads {
		if w.ID == id {
			return w
		}
	}
	panic("bench: unknown workload " + id)
}

// result returns the system's result for a workload.
func (s *System) result(id string) *Result {
	for i := range s.Results {
		if s.Results[i].Workload == id {
			return &s.Results[i]
		}
	}
	return nil
}

// system returns the run's system by ID.
func (r *Scale) system(id string) *System {
	for i := range r.Systems {
		if r.Systems[i].ID == id {
			return &r.Systems[i]
		}
	}
	return nil
}

// measured reports whether a result has figures: it ran, whole or in part.
func (r *Result) measured() bool {
	return r != nil && (r.Status == StatusOK || r.Status == StatusPartial) && r.Routes > 0
}

func (r *Result) perRoute() float64 { return r.Seconds / float64(r.Routes) }

// ratios fills every system's p50/base column from its own rows, and
// (c)'s ratio columns from (a)'s and (b)'s rows.
func (r *Scale) ratios() {
	for _, s := range r.Systems {
		for i := range s.Results {
			res := &s.Results[i]
			base := s.result(workload(res.Workload).Base)
			if res.measured() && res.P50Ms != nil && base.measured() && base.P50Ms != nil && *base.P50Ms > 0 {
				res.P50OverBase = ptr(*res.P50Ms / *base.P50Ms)
			}
		}
	}
	a, b, c := r.system("a"), r.system("b"), r.system("c")
	if c == nil {
		return
	}
	for i := range c.Results {
		cr := &c.Results[i]
		if !cr.measured() {
			continue
		}
		if a != nil {
			if ar := a.result(workload(cr.Workload).Kernel); ar.measured() {
				cr.COverA = ptr(cr.perRoute() / ar.perRoute())
			}
		}
		if b != nil {
			if br := b.result(cr.Workload); br.measured() {
				cr.COverB = ptr(cr.perRoute() / br.perRoute())
				if cr.P50Ms != nil && br.P50Ms != nil && *br.P50Ms > 0 {
					cr.P50COverB = ptr(*cr.P50Ms / *br.P50Ms)
				}
			}
		}
	}
}

func ptr[T any](v T) *T { return &v }

// Limits of the targets of issues 7, 11 and 14 (README: Performance).
const (
	limitInjectOverSingle  = 1.1 // InjectRoute p50, (c) over (b)
	limitApplyOverKernel   = 2   // ApplyRoutes of every add, (c) over (a) pipelined
	limitReinjectOverCheck = 1.3 // re-inject p50 over Health.Check p50, (c)
	limitRepairDeleteMs    = 50  // p50 from a route deleted by hand to its return
	limitBounceMs          = 100 // every route back after a device bounce, over (a)'s adds of as many
	limitVethsOverPlain    = 1.1 // InjectRoute p50 with the extra veths over without
	limitClientsOverOne    = 4   // InjectRoute routes/s, the concurrent clients over one, on (b) and (c)
	limitHelperRSSMiB      = 16  // at 65,536 routes
	limitFrontendRSSMiB    = 40  // at 65,536 routes
	fullScale              = 65535
)

// targets reads the lead's figures off the runs.
func targets(runs []Scale, set Settings) []Target {
	var ts []Target
	add := func(t Target, v *float64, detail string) {
		t.Value, t.Detail = v, detail
		if v != nil {
			var met bool
			switch t.Want {
			case "<":
				met = *v < t.Limit
			case "<=":
				met = *v <= t.Limit
			case ">=":
				met = *v >= t.Limit
			}
			t.Met = &met
		}
		ts = append(ts, t)
	}
	get := func(r *Scale, sys, id string) *Result {
		if s := r.system(sys); s != nil {
			return s.result(id)
		}
		return nil
	}
	// why says why a result has no figure.
	why := func(res *Result) string {
		switch {
		case res == nil:
			return "not run"
		case res.Status == StatusPartial:
			return fmt.Sprintf("partial: %d of %d routes", res.Routes, res.Of)
		case res.measured():
			return ""
		case res.Detail != "":
			return res.Status + ": " + res.Detail
		}
		return res.Status
	}
	// whole is a result's time in ms, if it ran to the end.
	whole := func(res *Result) *float64 {
		if res.measured() && res.Status == StatusOK {
			return ptr(res.Seconds * 1e3)
		}
		return nil
	}
	for i := range runs {
		r := &runs[i]
		if r.system("c") == nil {
			continue // every target is about the product
		}
		n := group(float64(r.Peers))
		c := get(r, "c", "inject-sequential")
		reason := why(c)
		if c.measured() {
			reason = "(b): " + why(get(r, "b", "inject-sequential"))
		}
		t := Target{Name: "InjectRoute p50, (c) over (b)", N: r.Peers, Unit: "x", Limit: limitInjectOverSingle, Want: "<="}
		add(t, c.ratioP50(), whyNil(c.ratioP50(), reason))

		c, a := get(r, "c", "apply-add"), get(r, "a", "kernel-add-pipelined")
		var v *float64
		if c.measured() && c.Status == StatusOK && a.measured() {
			v = ptr(c.perRoute() / a.perRoute())
		}
		reason = why(c)
		if reason == "" {
			reason = "(a): " + why(a)
		}
		add(Target{Name: fmt.Sprintf("ApplyRoutes of %s adds, (c) over (a) pipelined", n), N: r.Peers, Unit: "x", Limit: limitApplyOverKernel, Want: "<="},
			v, whyNil(v, reason))

		c = get(r, "c", "reinject-sequential")
		reason = why(c)
		if c.measured() {
			reason = "Health.Check: " + why(get(r, "c", "health-sequential"))
		}
		add(Target{Name: "InjectRoute again (resync) p50 over Health.Check p50, (c)", N: r.Peers, Unit: "x", Limit: limitReinjectOverCheck, Want: "<="},
			c.ratioBase(), whyNil(c.ratioBase(), reason))

		c, v = get(r, "c", "repair-delete"), nil
		if c.measured() && c.P50Ms != nil {
			v = c.P50Ms
		}
		add(Target{Name: "repair after route del p50, (c)", N: r.Peers, Unit: "ms", Limit: limitRepairDeleteMs, Want: "<"}, v, whyNil(v, why(c)))

		// The bounce's limit is 100 ms plus the kernel floor for as many
		// routes, measured in the same run.
		c = get(r, "c", "repair-bounce")
		v, reason = whole(c), why(c)
		t = Target{Name: fmt.Sprintf("every route back after %s down, up, (c)", set.Interface), N: r.Peers, Unit: "ms", Limit: limitBounceMs, Want: "<"}
		floor := whole(a)
		if floor != nil {
			t.Limit += *floor
		}
		switch {
		case v == nil:
		case floor == nil:
			reason = fmt.Sprintf("took %s, but no kernel floor to add to the limit: (a): %s", fmtValue(*v, "ms"), why(a))
			v = nil
		default:
			reason = fmt.Sprintf("%s plus (a)'s pipelined add of %s routes, %s", fmtValue(limitBounceMs, "ms"), n, fmtValue(*floor, "ms"))
		}
		add(t, v, reason)

		c = get(r, "c", "inject-veths")
		reason = why(c)
		if c.measured() {
			reason = "without them: " + why(get(r, "c", "inject-sequential"))
		}
		add(Target{Name: fmt.Sprintf("InjectRoute p50 with %s extra veths over without, (c)", group(float64(set.Veths))), N: r.Peers, Unit: "x",
			Limit: limitVethsOverPlain, Want: "<="}, c.ratioBase(), whyNil(c.ratioBase(), reason))

		// Concurrent clients over one, in routes/s: the one-process
		// baseline's too, since the limit is on both.
		for _, sys := range []string{"b", "c"} {
			one, many := get(r, sys, "inject-sequential"), get(r, sys, "inject-concurrent")
			v, reason = nil, why(many)
			if reason == "" {
				reason = "one client: " + why(one)
			}
			if one.measured() && many.measured() {
				v = ptr(one.perRoute() / many.perRoute())
			}
			add(Target{Name: fmt.Sprintf("InjectRoute routes/s, %d clients over one, (%s)", set.Clients, sys), N: r.Peers, Unit: "x",
				Limit: limitClientsOverOne, Want: ">="}, v, whyNil(v, reason))
		}

		if r.Peers == 255 {
			c = get(r, "c", "apply-add")
			v = whole(c)
			add(Target{Name: "ApplyRoutes of 255 adds, (c)", N: r.Peers, Unit: "ms", Limit: 5, Want: "<"}, v, whyNil(v, why(c)))
			for _, id := range []string{"inject-sequential", "reinject-sequential"} {
				c = get(r, "c", id)
				v = whole(c)
				add(Target{Name: workload(id).Title(255, set) + " of 255 peers, (c)", N: r.Peers, Unit: "ms", Limit: 30, Want: "<"}, v, whyNil(v, why(c)))
			}
		}
		for _, p := range []struct {
			name  string
			limit float64
		}{{HelperBin, limitHelperRSSMiB}, {FrontendBin, limitFrontendRSSMiB}} {
			v = nil
			detail := ""
			if r.Peers < fullScale {
				detail = "the target is for 65,536 routes"
			}
			if s := r.system("c"); s != nil {
				for _, pr := range s.Processes {
					if pr.Name == p.name && pr.PeakRSSKiB > 0 {
						v = ptr(float64(pr.PeakRSSKiB) / 1024)
					}
				}
			}
			if v == nil {
				detail = ""
			}
			add(Target{Name: "peak RSS of " + p.name + ", (c)", N: r.Peers, Unit: "MiB", Limit: p.limit, Want: "<"}, v, detail)
		}
	}
	return ts
}

func (r *Result) ratioP50() *float64 {
	if r == nil {
		return nil
	}
	return r.P50COverB
}

func (r *Result) ratioBase() *float64 {
	if r == nil {
		return nil
	}
	return r.P50OverBase
}

func whyNil(v *float64, why string) string {
	if v != nil {
		return ""
	}
	return strings.TrimSpace(why)
}

// WriteText prints the report as tables for a terminal.
func (rep *Report) WriteText(w io.Writer) error {
	m, s := rep.Machine, rep.Settings
	var b strings.Builder
	fmt.Fprintf(&b, "quilt-bench  %s, took %s\n", rep.Started.UTC().Format("2006-01-02 15:04 UTC"), (time.Duration(rep.Seconds * 1e9)).Round(time.Second))
	fmt.Fprintf(&b, "machine   %s, %d cores, %d MiB; %s, kernel %s; runner %s, GOMAXPROCS %d\n", m.CPU, m.Cores, m.MemTotalMiB, m.OS, m.Kernel, m.GoVersion, m.GOMAXPROCS)
	fmt.Fprintf(&b, "          load average %.2f at the start, %.2f at the end (other work on the machine skews every figure)\n", m.LoadStart[0], m.LoadEnd[0])
	fmt.Fprintf(&b, "settings  cluster %s, node subnet %s (never routed), dev %s; %d concurrent clients; %d messages per sendmsg in (a)'s pipelined rows;\n",
		s.Cluster, s.NodeSubnet, s.Interface, s.Clients, s.KernelBatch)
	fmt.Fprintf(&b, "          ApplyRoutes: %d changes per message; each workload stops after %s; (b) and (c) run --resync-interval %s\n",
		s.ApplyChunk, time.Duration(s.PhaseLimit*1e9), time.Duration(s.ResyncInterval*1e9))
	b.WriteString("systems   (a) kernel floor: raw rtnetlink from the runner, in its own namespace with vxlan100\n")
	b.WriteString("          (b) one process: quilt-bench-single as root, gRPC + state file + rtnetlink (no helper hop)\n")
	b.WriteString("          (c) privilege-separated: quilt-runtime (unprivileged uid) -> Unix socket -> quilt-route-helper (nobody, CAP_NET_ADMIN only)\n")
	b.WriteString("          routes/s and time cover the whole workload; p50/p99 are per RPC (per message for (a)) as the client saw it;\n")
	b.WriteString("          c/a and c/b: (c)'s time per route over (a)'s (one-ack rows for the per-RPC workloads, pipelined rows for ApplyRoutes) and (b)'s\n")
	b.WriteString("          p50/base: p50 over that of the same system's base row (re-inject: Health.Check; extra veths: InjectRoute, sequential)\n")
	fmt.Fprintf(&b, "          repair rows, (c) only ((b) has no watch): %d routes (at most N) deleted with RTM_DELROUTE, one at a time, p50/p99 until each is back;\n", s.Deletions)
	fmt.Fprintf(&b, "          then %s set down and up, time until every route is back (the kernel flushes them without a notification)\n", s.Interface)
	if _, err := io.WriteString(w, b.String()); err != nil {
		return err
	}
	for _, r := range rep.Runs {
		if err := r.writeText(w, s); err != nil {
			return err
		}
	}
	if len(rep.Targets) > 0 {
		fmt.Fprintln(w, "\ntargets (read off the tables above; not asserted anywhere)")
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, t := range rep.Targets {
			val, verdict := "-", "not measured"
			if t.Value != nil {
				val = fmtValue(*t.Value, t.Unit)
				verdict = map[bool]string{true: "met", false: "MISSED"}[*t.Met]
			}
			if t.Detail != "" {
				verdict += " (" + t.Detail + ")"
			}
			fmt.Fprintf(tw, "  N=%s\t%s\t%s\ttarget %s %s\t%s\n", group(float64(t.N)), t.Name, val, t.Want, fmtValue(t.Limit, t.Unit), verdict)
		}
		tw.Flush()
	}
	if rep.Error != "" {
		fmt.Fprintf(w, "\nthe run stopped early: %s\n", rep.Error)
	}
	return nil
}

func (r *Scale) writeText(w io.Writer, set Settings) error {
	fmt.Fprintf(w, "\nN = %s peers", group(float64(r.Peers)))
	if r.Note != "" {
		fmt.Fprintf(w, " (%s)", r.Note)
	}
	fmt.Fprintln(w)
	t := &table{right: []bool{false, false, true, true, true, true, true, true, true, true, true}}
	t.add("workload", "system", "routes", "time", "routes/s", "p50", "p99", "c/a", "c/b", "c/b p50", "p50/base")
	for _, wl := range Workloads {
		first := true
		for _, s := range r.Systems {
			res := s.result(wl.ID)
			if res == nil {
				continue
			}
			title := ""
			if first {
				title, first = wl.Title(r.Peers, set), false
			}
			if !res.measured() {
				detail := res.Status
				if res.Detail != "" {
					detail += ": " + clip(res.Detail, 100)
				}
				t.span(detail, title, "("+s.ID+")")
				continue
			}
			routes := group(float64(res.Routes))
			if res.Status == StatusPartial {
				routes = fmt.Sprintf("%s of %s", routes, group(float64(res.Of)))
			}
			t.add(title, "("+s.ID+")", routes, fmtDur(res.Seconds), group(res.RoutesPerSec), fmtMs(res.P50Ms), fmtMs(res.P99Ms),
				fmtX(res.COverA), fmtX(res.COverB), fmtX(res.P50COverB), fmtX(res.P50OverBase))
		}
	}
	if err := t.write(w); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, s := range r.Systems {
		for _, p := range s.Processes {
			fmt.Fprintf(tw, "  (%s) %s\tpeak RSS %s\tGOMAXPROCS %d (%s)\tuid %d, CapEff %s\t%s\n", s.ID, p.Name,
				fmtValue(float64(p.PeakRSSKiB)/1024, "MiB"), p.GOMAXPROCS, p.GOMAXPROCSFrom, p.UID, p.CapEff, p.GoVersion)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, s := range r.Systems {
		for _, res := range s.Results {
			if res.Note != "" && res.measured() {
				fmt.Fprintf(w, "  (%s) %s: %s\n", s.ID, res.Title, res.Note)
			}
		}
	}
	for _, s := range r.Systems {
		if s.Error != "" {
			fmt.Fprintf(w, "  (%s) stopped early: %s\n", s.ID, s.Error)
		}
	}
	return nil
}

// table lines up cells in columns; a row may end in a text that spans the
// columns after its cells and takes no part in their widths.
type table struct {
	right []bool // right-aligned columns
	rows  []row
}

type row struct {
	cells []string
	span  string
}

func (t *table) add(cells ...string)            { t.rows = append(t.rows, row{cells: cells}) }
func (t *table) span(s string, cells ...string) { t.rows = append(t.rows, row{cells: cells, span: s}) }

func (t *table) write(w io.Writer) error {
	var width []int
	for _, r := range t.rows {
		for i, c := range r.cells {
			if i >= len(width) {
				width = append(width, 0)
			}
			width[i] = max(width[i], utf8.RuneCountInString(c))
		}
	}
	var b strings.Builder
	for _, r := range t.rows {
		var line strings.Builder
		for i, c := range r.cells {
			pad := strings.Repeat(" ", width[i]-utf8.RuneCountInString(c))
			if i > 0 {
				line.WriteString("  ")
			}
			if i < len(t.right) && t.right[i] {
				line.WriteString(pad + c)
			} else {
				line.WriteString(c + pad)
			}
		}
		if r.span != "" {
			line.WriteString("  " + r.span)
		}
		b.WriteString(strings.TrimRight(line.String(), " ") + "\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func fmtValue(v float64, unit string) string {
	switch unit {
	case "x":
		return fmt.Sprintf("%.2fx", v)
	case "ms":
		return fmtDur(v / 1e3)
	}
	return fmt.Sprintf("%.1f %s", v, unit)
}

func fmtX(v *float64) string {
	if v == nil {
		return ""
	}
	return fmt.Sprintf("%.2fx", *v)
}

func fmtMs(v *float64) string {
	if v == nil {
		return "-"
	}
	return fmtDur(*v / 1e3)
}

// fmtDur shows seconds with three significant digits in a fitting unit.
func fmtDur(sec float64) string {
	switch {
	case sec < 1e-3:
		return sig3(sec*1e6) + "µs"
	case sec < 1:
		return sig3(sec*1e3) + "ms"
	}
	return sig3(sec) + "s"
}

func sig3(v float64) string {
	switch {
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}

// group rounds to an integer with thousands separators: 65535 is 65,535.
func group(v float64) string {
	s := strconv.FormatFloat(v, 'f', 0, 64)
	for i := len(s) - 3; i > 0 && s[i-1] != '-'; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

func clip(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
