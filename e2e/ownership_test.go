package e2e

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/quiltmesh/quilt-runtime/internal/testutil"
	"github.com/quiltmesh/quilt-runtime/shared/wire"
)

// The prefix every ownership scenario is about, and its neighbourhoods:
// what else the kernel holds around it. Each is built with ip(8) in a
// namespace of its own, where eth1 is a veth that is up and not allowed.
const prefixX = "10.42.6.0/24"

type neighbourhood struct {
	name    string
	setup   [][]string // ip arguments
	foreign bool       // a route that is not quilt's sits at exactly prefixX
	ours    []string   // routes of ours at prefixX left by an older version: their interfaces
}

func neighbourhoods() []neighbourhood {
	route := func(args ...string) []string { return append([]string{"route"}, args...) }
	return []neighbourhood{
		{name: "nothing around"},
		{name: "more-specific at .0", setup: [][]string{route("add", "10.42.6.0/26", "dev", "eth1", "proto", "static")}},
		{name: "more-specific elsewhere", setup: [][]string{route("add", "10.42.6.128/25", "dev", "eth1", "proto", "static")}},
		{name: "host route at .0", setup: [][]string{route("add", "10.42.6.0/32", "dev", "eth1", "proto", "static")}},
		{name: "blackhole, unreachable and prohibit inside", setup: [][]string{
			route("add", "blackhole", "10.42.6.64/26"), route("add", "unreachable", "10.42.6.0/25"), route("add", "prohibit", "10.42.6.192/26")}},
		{name: "covering routes", setup: [][]string{route("add", "unreachable", "10.42.0.0/16"), route("add", "10.0.0.0/8", "dev", "eth1")}},
		{name: "other table with a rule", setup: [][]string{
			route("add", prefixX, "dev", "eth1", "table", "100"), {"rule", "add", "to", prefixX, "lookup", "100", "pref", "100"}}},
		{name: "local address at .0", setup: [][]string{{"addr", "add", "10.42.6.0/32", "dev", "eth1"}}},
		{name: "foreign at another metric", foreign: true, setup: [][]string{route("add", prefixX, "dev", "eth1", "proto", "static", "metric", "100")}},
		{name: "foreign at our metric", foreign: true, setup: [][]string{route("add", prefixX, "dev", "eth1")}},
		{name: "foreign at another metric and more-specific at .0", foreign: true, setup: [][]string{
			route("add", prefixX, "dev", "eth1", "proto", "static", "metric", "100"), route("add", "10.42.6.0/26", "dev", "eth1", "proto", "static")}},
		{name: "foreign unreachable at another metric", foreign: true, setup: [][]string{route("add", "unreachable", prefixX, "metric", "50")}},
		{name: "two of ours", ours: []string{"vxlan100", "vxlan101"}, setup: [][]string{
			route("add", prefixX, "dev", "vxlan100", "proto", "81"), route("append", prefixX, "dev", "vxlan101", "proto", "81")}},
		{name: "ours with a foreign route behind", foreign: true, ours: []string{"vxlan100"}, setup: [][]string{
			route("add", prefixX, "dev", "vxlan100", "proto", "81"), route("append", prefixX, "dev", "eth1", "proto", "static")}},
		{name: "ours with a foreign route in front", foreign: true, ours: []string{"vxlan101"}, setup: [][]string{
			route("add", prefixX, "dev", "vxlan101", "proto", "81"), route("prepend", prefixX, "dev", "eth1", "proto", "static", "metric", "7")}},
	}
}

// model is what the helper must make of prefixX: our routes there by
// interface, and whether a foreign one is there too.
type model struct {
	ours    []string
	foreign bool
}

// step is one request of a scenario: an add via an interface, a delete,
// or a list (the resync's view).
type step struct {
	op     wire.Op
	ifname string
}

func (s step) String() string { return strings.TrimSpace(s.op.String() + " " + s.ifname) }

// apply returns what the helper must answer to s, and changes m as the
// helper must change the kernel: the ownership rules of helper/view_linux.go,
// written again independently.
func (m *model) apply(s step) (wire.Status, wire.Result) {
	switch {
	case s.op == wire.OpList:
		return wire.StatusOK, wire.ResultDone
	case s.op == wire.OpDelete && len(m.ours) > 0:
		m.ours = nil
		return wire.StatusOK, wire.ResultDeleted
	case s.op == wire.OpDelete && m.foreign:
		return wire.StatusNotOwned, wire.ResultNone
	case s.op == wire.OpDelete:
		return wire.StatusOK, wire.ResultAbsent
	case m.foreign:
		return wire.StatusConflict, wire.ResultNone
	case len(m.ours) == 0:
		m.ours = []string{s.ifname}
		return wire.StatusOK, wire.ResultCreated
	case slices.Equal(m.ours, []string{s.ifname}):
		return wire.StatusOK, wire.ResultUnchanged
	}
	m.ours = []string{s.ifname}
	return wire.StatusOK, wire.ResultMoved
}

// scene is one neighbourhood built in its own namespace with a helper.
type scene struct {
	t       *testing.T
	ns      string
	call    func(wire.Record) []wire.Record
	n       neighbourhood
	foreign string // every route of the namespace that is not ours, as `ip route show table all` prints them, sorted
}

func newScene(t *testing.T, n neighbourhood) *scene {
	ns := newNetns(t, "vxlan100", "vxlan101")
	addVeth(t, ns, "eth1")
	_, sock := startHelper(t, ns, os.Getuid(), "--allowed-interface", "vxlan100", "--allowed-interface", "vxlan101")
	c := dialHelper(t, sock)
	s := &scene{t: t, ns: ns, n: n, call: func(r wire.Record) []wire.Record {
		recs, err := exchange(c, r.Append(nil))
		if err != nil {
			t.Fatalf("%v %v %q: %v", r.Op, r.Dst, r.Ifname, err)
		}
		return recs
	}}
	for _, args := range n.setup {
		testutil.Run(t, "ip", append([]string{"-n", ns}, args...)...)
	}
	s.foreign = s.notOurs()
	return s
}

// table returns every IPv4 route of the namespace, in every table, one
// per line, sorted, and its rules. (IPv6 is left out: the kernel adds
// link-local routes of its own as addresses settle.)
func (s *scene) table() []string {
	var lines []string
	for line := range strings.Lines(testutil.Run(s.t, "ip", "-n", s.ns, "-4", "route", "show", "table", "all")) {
		lines = append(lines, strings.TrimSpace(line))
	}
	lines = append(lines, "rules: "+strings.Join(strings.Fields(testutil.Run(s.t, "ip", "-n", s.ns, "rule")), " "))
	slices.Sort(lines)
	return lines
}

// notOurs is the table without our routes.
func (s *scene) notOurs() string {
	lines := slices.DeleteFunc(s.table(), func(l string) bool { return strings.Contains(l, " proto 81 ") })
	return strings.Join(lines, "\n")
}

// expect is the whole table the model says the kernel holds.
func (s *scene) expect(m *model) string {
	lines := strings.Split(s.foreign, "\n")
	for _, ifname := range m.ours {
		lines = append(lines, prefixX+" dev "+ifname+" proto 81 scope link")
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// do sends s to the helper and checks the answer and the table against m.
// golden also compares the whole table with the model's text.
func (sc *scene) do(m *model, s step, golden bool) {
	t := sc.t
	t.Helper()
	dst := netip.MustParsePrefix(prefixX)
	req := wire.Record{Op: s.op, Tag: 5, Dst: dst, Ifname: s.ifname}
	if s.op == wire.OpList {
		req = wire.Record{Op: wire.OpList, Tag: 5}
	}
	status, result := m.apply(s)
	recs := sc.call(req)
	last := recs[len(recs)-1]
	if last.Status != status || last.Result != result {
		t.Fatalf("%s: %s: answered %v %v, want %v %v\n%s", sc.n.name, s, last.Status, last.Result, status, result, sc.notOurs())
	}
	if s.op == wire.OpList {
		var listed []string
		for _, r := range recs[:len(recs)-1] {
			if r.Dst == dst {
				listed = append(listed, r.Ifname)
			}
		}
		if slices.Sort(listed); !slices.Equal(listed, m.ours) {
			t.Fatalf("%s: list shows ours via %v at %s, want %v", sc.n.name, listed, prefixX, m.ours)
		}
	}
	if got := sc.notOurs(); got != sc.foreign {
		t.Fatalf("%s: %s changed a route that is not ours:\nbefore:\n%s\nafter:\n%s", sc.n.name, s, sc.foreign, got)
	}
	got := strings.Join(sc.table(), "\n")
	if n := strings.Count(got, prefixX+" dev vxlan"); n > 1 && s.op != wire.OpList {
		t.Fatalf("%s: %s left %d routes of ours at %s:\n%s", sc.n.name, s, n, prefixX, got)
	}
	if want := sc.expect(m); golden && got != want {
		t.Fatalf("%s: after %s the table is:\n%s\nwant:\n%s", sc.n.name, s, got, want)
	}
}

// reset puts the neighbourhood's own routes of ours back, and nothing else.
func (sc *scene) reset(m *model) {
	testutil.Run(sc.t, "ip", "-n", sc.ns, "route", "flush", "table", "main", "proto", "81")
	for _, args := range sc.n.setup {
		if slices.Contains(args, "81") {
			args = slices.Clone(args)
			args[1] = "append" // beside a foreign route at our metric, if there is one
			testutil.Run(sc.t, "ip", append([]string{"-n", sc.ns}, args...)...)
		}
	}
	*m = model{ours: slices.Sorted(slices.Values(sc.n.ours)), foreign: sc.n.foreign}
}

// TestOwnershipGolden drives the real helper through inject, re-inject,
// move, remove and a resync's list in every neighbourhood, comparing the
// whole table with the expected text after every step; then replays each
// neighbourhood's steps in random orders, checking after every request
// that no route that is not ours changed, that at most one of ours is at
// the prefix, and that the answer is the one the rules give.
func TestOwnershipGolden(t *testing.T) {
	requireRoot(t)
	inject := step{wire.OpAdd, "vxlan100"}
	move := step{wire.OpAdd, "vxlan101"}
	remove := step{op: wire.OpDelete}
	resync := step{op: wire.OpList}
	rng := rand.New(rand.NewPCG(11, 0))
	for _, n := range neighbourhoods() {
		t.Run(n.name, func(t *testing.T) {
			sc := newScene(t, n)
			var m model
			sc.reset(&m)
			sc.do(&m, resync, true)
			for _, s := range []step{inject, inject, move, move, resync, remove, remove, resync} {
				sc.do(&m, s, true)
			}
			steps := []step{inject, inject, move, remove, resync, {wire.OpAdd, "vxlan100"}}
			for range 12 {
				sc.reset(&m)
				order := slices.Clone(steps)
				rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
				for _, s := range order {
					sc.do(&m, s, false)
				}
				sc.do(&m, resync, true)
			}
		})
	}
}

// ExampleModel is the rule table the tests check the helper against.
func Example_model() {
	for _, n := range []model{{}, {ours: []string{"vxlan100"}}, {foreign: true}, {ours: []string{"vxlan100", "vxlan101"}}} {
		for _, s := range []step{{wire.OpAdd, "vxlan100"}, {wire.OpAdd, "vxlan101"}, {op: wire.OpDelete}} {
			m := model{ours: slices.Clone(n.ours), foreign: n.foreign}
			st, res := m.apply(s)
			fmt.Printf("ours %v foreign %v, %s: %v %v\n", n.ours, n.foreign, s, st, res)
		}
	}
	// Output:
	// ours [] foreign false, add vxlan100: ok created
	// ours [] foreign false, add vxlan101: ok created
	// ours [] foreign false, delete: ok absent
	// ours [vxlan100] foreign false, add vxlan100: ok unchanged
	// ours [vxlan100] foreign false, add vxlan101: ok moved
	// ours [vxlan100] foreign false, delete: ok deleted
	// ours [] foreign true, add vxlan100: conflict none
	// ours [] foreign true, add vxlan101: conflict none
	// ours [] foreign true, delete: not-owned none
	// ours [vxlan100 vxlan101] foreign false, add vxlan100: ok moved
	// ours [vxlan100 vxlan101] foreign false, add vxlan101: ok moved
	// ours [vxlan100 vxlan101] foreign false, delete: ok deleted
}
