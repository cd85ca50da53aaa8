package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

// memStore records what the allocator saves and can be told to fail. Unit
// tests only: frontend/state's tests run the allocator on the real file.
type memStore struct {
	mu     sync.Mutex
	subnet netip.Prefix
	allocs map[string]netip.Addr
	last   netip.Addr
	fail   error
}

func (m *memStore) SetSubnet(p netip.Prefix) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return m.fail
	}
	m.subnet, m.last = p, netip.Addr{}
	return nil
}

func (m *memStore) PutAllocation(al Allocation) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return m.fail
	}
	m.allocs[al.Key.String()], m.last = al.IP, al.IP
	return nil
}

func (m *memStore) DeleteAllocations(keys ...Key) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return m.fail
	}
	for _, k := range keys {
		delete(m.allocs, k.String())
	}
	return nil
}

var subnet1 = netip.MustParsePrefix("10.42.1.0/24")

func newAlloc(t *testing.T, o Offsets) (*Allocator, *memStore) {
	t.Helper()
	st := &memStore{allocs: map[string]netip.Addr{}}
	a, err := NewAllocator(o, st, netip.Prefix{}, nil, netip.Addr{})
	if err != nil {
		t.Fatal(err)
	}
	if changed, err := a.SetSubnet(subnet1); err != nil || !changed {
		t.Fatal(changed, err)
	}
	return a, st
}

func mustAlloc(t *testing.T, a *Allocator, id string) netip.Addr {
	t.Helper()
	ip, _, _, err := a.Allocate(Key{ContainerID: id}, "")
	if err != nil {
		t.Fatalf("allocate %s: %v", id, err)
	}
	return ip
}

func TestPool(t *testing.T) {
	p, err := NewPool(subnet1, DefaultOffsets)
	if err != nil {
		t.Fatal(err)
	}
	if p.Gateway.String() != "10.42.1.1" || p.Range() != "10.42.1.10-10.42.1.254" || p.Capacity() != 245 {
		t.Fatalf("default pool: %+v capacity %d", p, p.Capacity())
	}
	for a, want := range map[string]bool{"10.42.1.0": false, "10.42.1.1": false, "10.42.1.9": false, "10.42.1.10": true,
		"10.42.1.254": true, "10.42.1.255": false, "10.42.2.10": false} {
		if got := p.Allocatable(netip.MustParseAddr(a)); got != want {
			t.Errorf("Allocatable(%s) = %v", a, got)
		}
	}
	// A gateway inside the range is skipped and not counted.
	p, _ = NewPool(subnet1, Offsets{Gateway: 20, First: 10, Last: 29})
	if p.Capacity() != 19 || p.Allocatable(netip.MustParseAddr("10.42.1.20")) {
		t.Fatalf("gateway inside the range: capacity %d", p.Capacity())
	}
	// A /16 node subnet: offsets are host numbers, not last octets.
	p, err = NewPool(netip.MustParsePrefix("10.42.0.0/16"), Offsets{Gateway: 1, First: 256, Last: 65534})
	if err != nil || p.First.String() != "10.42.1.0" || p.Last.String() != "10.42.255.254" {
		t.Fatalf("/16: %+v %v", p, err)
	}
}

func TestOffsetsCheck(t *testing.T) {
	for _, tc := range []struct {
		o    Offsets
		bits int
		ok   bool
	}{
		{DefaultOffsets, 24, true},
		{Offsets{1, 2, 2}, 30, true},
		{DefaultOffsets, 25, false},          // 254 is past a /25's broadcast
		{Offsets{0, 10, 254}, 24, false},     // the network address as gateway
		{Offsets{255, 10, 254}, 24, false},   // the broadcast address as gateway
		{Offsets{1, 0, 254}, 24, false},      // the network address in the range
		{Offsets{1, 10, 255}, 24, false},     // the broadcast address in the range
		{Offsets{1, 1, 1}, 24, false},        // only the gateway
		{Offsets{1, 2, 2}, 31, false},        // no room
		{Offsets{1, 2, 2}, 0, false},         // nonsense
		{Offsets{1, 100, 10}, 24, false},     // reversed
		{Offsets{1, 10, 1 << 20}, 24, false}, /* huge */
	} {
		if err := tc.o.Check(tc.bits); (err == nil) != tc.ok {
			t.Errorf("%+v /%d: %v", tc.o, tc.bits, err)
		}
	}
}

func TestParseFlags(t *testing.T) {
	for in, want := range map[string][2]uint32{"10-254": {10, 254}, ".10-.254": {10, 254}, "5-5": {5, 5}} {
		f, l, err := ParseRange(in)
		if err != nil || f != want[0] || l != want[1] {
			t.Errorf("ParseRange(%q) = %d, %d, %v", in, f, l, err)
		}
	}
	for _, bad := range []string{"", "10", "10-", "-254", "254-10", "a-b", "10.42.1.10-10.42.1.254", "10 - 254", "-1-5"} {
		if _, _, err := ParseRange(bad); err == nil || !strings.Contains(err.Error(), "FIRST-LAST") {
			t.Errorf("ParseRange(%q): %v", bad, err)
		}
	}
	if g, err := ParseGateway(".1"); err != nil || g != 1 {
		t.Errorf("ParseGateway(.1) = %d, %v", g, err)
	}
	for _, bad := range []string{"", "x", "10.42.1.1", "-1"} {
		if _, err := ParseGateway(bad); err == nil {
			t.Errorf("ParseGateway(%q) accepted", bad)
		}
	}
}

func TestCheckID(t *testing.T) {
	for _, ok := range []string{"a", "0", "c0ffee", strings.Repeat("f", 64), strings.Repeat("x", MaxIDLen), "pod_1.web-2", "A-b_C.d"} {
		if err := CheckID(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", " ", "a b", "-a", ".a", "_a", "a/b", "../x", "a\n", "a\x00", "é", strings.Repeat("x", MaxIDLen+1), strings.Repeat("y", 1<<20), "a;rm"} {
		err := CheckID(bad)
		if !errors.Is(err, ErrContainerID) || strings.ContainsAny(err.Error(), "\n\x00") || len(err.Error()) > 300 || !strings.Contains(err.Error(), "container_id") {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

func TestAllocateIdempotentAndRelease(t *testing.T) {
	a, st := newAlloc(t, DefaultOffsets)
	ip1 := mustAlloc(t, a, "c1")
	if ip1.String() != "10.42.1.10" {
		t.Fatalf("first address %v, want 10.42.1.10 as the request document shows", ip1)
	}
	ip, pool, existing, err := a.Allocate(Key{ContainerID: "c1"}, "")
	if err != nil || ip != ip1 || !existing || pool.Gateway.String() != "10.42.1.1" || pool.Subnet != subnet1 {
		t.Fatalf("again: %v %+v %v %v", ip, pool, existing, err)
	}
	if ip2 := mustAlloc(t, a, "c2"); ip2.String() != "10.42.1.11" {
		t.Fatalf("second address %v", ip2)
	}
	if got, ok, err := a.Release(Key{ContainerID: "c1"}); err != nil || !ok || got != ip1 {
		t.Fatalf("release: %v %v %v", got, ok, err)
	}
	if _, ok, err := a.Release(Key{ContainerID: "c1"}); err != nil || ok {
		t.Fatalf("release twice: %v %v", ok, err)
	}
	if _, ok := st.allocs["c1"]; ok || len(st.allocs) != 1 {
		t.Fatalf("store after release: %v", st.allocs)
	}
	// Handed out in turn: the released .10 is not reused at once.
	if ip3 := mustAlloc(t, a, "c3"); ip3.String() != "10.42.1.12" {
		t.Fatalf("third address %v, want .12", ip3)
	}
	if a.Count() != 2 || len(a.List()) != 2 || a.List()[0].ContainerID != "c2" {
		t.Fatalf("list %v", a.List())
	}
}

func TestExhaustionAndWrap(t *testing.T) {
	a, _ := newAlloc(t, Offsets{Gateway: 1, First: 10, Last: 12})
	for i, want := range []string{"10.42.1.10", "10.42.1.11", "10.42.1.12"} {
		if ip := mustAlloc(t, a, fmt.Sprint("c", i)); ip.String() != want {
			t.Fatalf("c%d got %v want %s", i, ip, want)
		}
	}
	_, _, _, err := a.Allocate(Key{ContainerID: "c3"}, "")
	if !errors.Is(err, ErrExhausted) || !strings.Contains(err.Error(), "10.42.1.0/24") || !strings.Contains(err.Error(), "10.42.1.10-10.42.1.12") {
		t.Fatalf("exhausted: %v", err)
	}
	// Still idempotent when full; a release makes room and wraps to it.
	if _, _, existing, err := a.Allocate(Key{ContainerID: "c1"}, ""); err != nil || !existing {
		t.Fatalf("existing when full: %v", err)
	}
	a.Release(Key{ContainerID: "c1"})
	if ip := mustAlloc(t, a, "c3"); ip.String() != "10.42.1.11" {
		t.Fatalf("after wrap: %v", ip)
	}
}

func TestSubnetChanges(t *testing.T) {
	a, st := newAlloc(t, DefaultOffsets)
	if changed, err := a.SetSubnet(subnet1); err != nil || changed {
		t.Fatalf("same subnet: %v %v", changed, err)
	}
	mustAlloc(t, a, "c1")
	mustAlloc(t, a, "c2")
	_, err := a.SetSubnet(netip.MustParsePrefix("10.42.7.0/24"))
	if !errors.Is(err, ErrSubnetInUse) || !strings.Contains(err.Error(), "10.42.1.0/24") || !strings.Contains(err.Error(), "2 container IPs") {
		t.Fatalf("move with live allocations: %v", err)
	}
	a.Release(Key{ContainerID: "c1"})
	a.Release(Key{ContainerID: "c2"})
	if changed, err := a.SetSubnet(netip.MustParsePrefix("10.42.7.0/24")); err != nil || !changed || st.subnet.String() != "10.42.7.0/24" {
		t.Fatalf("move when empty: %v %v %v", changed, err, st.subnet)
	}
	if ip := mustAlloc(t, a, "c1"); ip.String() != "10.42.7.10" {
		t.Fatalf("first address in the new subnet: %v", ip)
	}
}

func TestNoSubnet(t *testing.T) {
	a, err := NewAllocator(DefaultOffsets, &memStore{allocs: map[string]netip.Addr{}}, netip.Prefix{}, nil, netip.Addr{})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := a.Allocate(Key{ContainerID: "c1"}, ""); !errors.Is(err, ErrNoSubnet) {
		t.Fatalf("allocate before a subnet: %v", err)
	}
	if _, _, _, err := a.Allocate(Key{ContainerID: "bad id"}, ""); !errors.Is(err, ErrContainerID) {
		t.Fatalf("a bad ID is refused first: %v", err)
	}
}

// A store that fails changes nothing in memory either.
func TestStoreFailureChangesNothing(t *testing.T) {
	a, st := newAlloc(t, DefaultOffsets)
	mustAlloc(t, a, "c1")
	st.fail = errors.New("disk full")
	if _, _, _, err := a.Allocate(Key{ContainerID: "c2"}, ""); err == nil {
		t.Fatal("allocation acknowledged without being saved")
	}
	if _, _, err := a.Release(Key{ContainerID: "c1"}); err == nil {
		t.Fatal("release acknowledged without being saved")
	}
	st.fail = nil
	if a.Count() != 1 || mustAlloc(t, a, "c2").String() != "10.42.1.11" {
		t.Fatalf("after failures: %v", a.List())
	}
}

func TestResume(t *testing.T) {
	saved := []Allocation{{Key: Key{ContainerID: "c1"}, IP: netip.MustParseAddr("10.42.1.10")}, {Key: Key{ContainerID: "c2"}, IP: netip.MustParseAddr("10.42.1.200")}}
	a, err := NewAllocator(DefaultOffsets, &memStore{allocs: map[string]netip.Addr{}}, subnet1, saved, netip.MustParseAddr("10.42.1.200"))
	if err != nil {
		t.Fatal(err)
	}
	if ip := mustAlloc(t, a, "c3"); ip.String() != "10.42.1.201" {
		t.Fatalf("resumes after the last address handed out: %v", ip)
	}
	if ip, _, existing, _ := a.Allocate(Key{ContainerID: "c2"}, ""); ip.String() != "10.42.1.200" || !existing {
		t.Fatalf("saved allocation lost: %v", ip)
	}
	for name, allocs := range map[string][]Allocation{
		"duplicate address": {{Key: Key{ContainerID: "c1"}, IP: netip.MustParseAddr("10.42.1.10")}, {Key: Key{ContainerID: "c2"}, IP: netip.MustParseAddr("10.42.1.10")}},
		"outside subnet":    {{Key: Key{ContainerID: "c1"}, IP: netip.MustParseAddr("10.42.2.10")}},
		"the gateway":       {{Key: Key{ContainerID: "c1"}, IP: netip.MustParseAddr("10.42.1.1")}},
		"network address":   {{Key: Key{ContainerID: "c1"}, IP: netip.MustParseAddr("10.42.1.0")}},
		"bad container ID":  {{Key: Key{ContainerID: "a b"}, IP: netip.MustParseAddr("10.42.1.10")}},
		"bad interface":     {{Key: Key{"c1", "a/b"}, IP: netip.MustParseAddr("10.42.1.10")}},
		"bad network":       {{Key: Key{"c1", "eth0"}, IP: netip.MustParseAddr("10.42.1.10"), Network: "a b"}},
		"one key twice":     {{Key: Key{"c1", "eth0"}, IP: netip.MustParseAddr("10.42.1.10")}, {Key: Key{"c1", "eth0"}, IP: netip.MustParseAddr("10.42.1.11")}},
	} {
		if _, err := NewAllocator(DefaultOffsets, &memStore{}, subnet1, allocs, netip.Addr{}); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := NewAllocator(DefaultOffsets, &memStore{}, netip.Prefix{}, saved, netip.Addr{}); err == nil {
		t.Error("allocations without a subnet accepted")
	}
}

// TestConcurrentAllocate: 64 goroutines at once get 64 distinct addresses,
// and asking again gives each the same one.
func TestConcurrentAllocate(t *testing.T) {
	a, st := newAlloc(t, DefaultOffsets)
	var wg sync.WaitGroup
	got := make([]netip.Addr, 64)
	errs := make([]error, 64)
	for i := range 64 {
		wg.Go(func() { got[i], _, _, errs[i] = a.Allocate(Key{ContainerID: fmt.Sprint("c", i)}, "") })
	}
	wg.Wait()
	seen := map[netip.Addr]int{}
	for i, ip := range got {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if j, dup := seen[ip]; dup {
			t.Fatalf("c%d and c%d both got %v", i, j, ip)
		}
		seen[ip] = i
		if !ip.IsValid() || !subnet1.Contains(ip) || st.allocs[fmt.Sprint("c", i)] != ip {
			t.Fatalf("c%d: %v, saved %v", i, ip, st.allocs[fmt.Sprint("c", i)])
		}
	}
	for i := range 64 {
		wg.Go(func() {
			if ip, _, existing, err := a.Allocate(Key{ContainerID: fmt.Sprint("c", i)}, ""); ip != got[i] || !existing || err != nil {
				t.Errorf("c%d again: %v %v %v", i, ip, existing, err)
			}
		})
	}
	wg.Wait()
}

// FuzzCheckID: accepted IDs are short and of the allowed characters;
// every refusal is one short line.
func FuzzCheckID(f *testing.F) {
	for _, s := range []string{"web-1", "", "-a", "a b", strings.Repeat("x", 129), "é"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		err := CheckID(id)
		if err == nil && (len(id) > MaxIDLen || strings.Trim(id, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-") != "") {
			t.Fatalf("accepted %q", id)
		}
		if err != nil && (strings.ContainsAny(err.Error(), "\n\r\x00") || len(err.Error()) > 300) {
			t.Fatalf("message for %q: %q", id, err)
		}
	})
}

// TestInterfaces: allocations are keyed by container and interface, as
// CNI's ADD asks: one container with two interfaces gets two addresses,
// each as idempotent and as separately released as a container's.
func TestInterfaces(t *testing.T) {
	a, st := newAlloc(t, DefaultOffsets)
	eth0, eth1, whole := Key{"c1", "eth0"}, Key{"c1", "eth1"}, Key{ContainerID: "c1"}
	ip0, _, _, err := a.Allocate(eth0, "quilt")
	if err != nil {
		t.Fatal(err)
	}
	ip1, _, _, err := a.Allocate(eth1, "quilt")
	if err != nil || ip1 == ip0 {
		t.Fatalf("second interface: %v %v (first %v)", ip1, err, ip0)
	}
	ipw := mustAlloc(t, a, "c1")
	if ipw == ip0 || ipw == ip1 {
		t.Fatalf("the container as a whole shares %v", ipw)
	}
	if again, _, existing, err := a.Allocate(eth1, "other"); again != ip1 || !existing || err != nil {
		t.Fatalf("eth1 again: %v %v %v", again, existing, err)
	}
	if st.allocs["c1/eth0"] != ip0 || st.allocs["c1/eth1"] != ip1 || st.allocs["c1"] != ipw {
		t.Fatalf("saved: %v", st.allocs)
	}
	if got, ok, err := a.Release(eth0); got != ip0 || !ok || err != nil {
		t.Fatalf("release eth0: %v %v %v", got, ok, err)
	}
	list := a.List()
	if len(list) != 2 || list[0].Key != eth1 || list[0].Network != "quilt" || list[1].Key != whole || list[1].Network != "" {
		t.Fatalf("after releasing eth0: %+v", list)
	}
	for _, bad := range []Key{{"c1", "a/b"}, {"c1", "a:b"}, {"c1", "."}, {"c1", ".."}, {"c1", "eth 0"}, {"c1", "é"},
		{"c1", strings.Repeat("x", 16)}, {"c1", "a\x00"}, {"c1", "a\n"}} {
		if _, _, _, err := a.Allocate(bad, ""); !errors.Is(err, ErrIfname) || !strings.Contains(err.Error(), "interface_name") {
			t.Errorf("%q: %v", bad.Ifname, err)
		}
		if _, _, err := a.Release(bad); !errors.Is(err, ErrIfname) {
			t.Errorf("release %q: %v", bad.Ifname, err)
		}
	}
	if _, _, _, err := a.Allocate(Key{"c2", strings.Repeat("x", MaxIfnameLen)}, ""); err != nil {
		t.Errorf("a 15-byte name: %v", err)
	}
	if _, _, _, err := a.Allocate(Key{"c2", "eth0"}, "-net"); !errors.Is(err, ErrNetwork) {
		t.Errorf("bad network name: %v", err)
	}
	if a.Count() != 3 {
		t.Fatalf("refusals changed the allocations: %v", a.List())
	}
}

// TestCollect: CNI's GC releases the network's allocations the runtime no
// longer lists, only once they are older than the grace period, and never
// another network's or those made without one.
func TestCollect(t *testing.T) {
	a, st := newAlloc(t, DefaultOffsets)
	clock := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	a.now = func() time.Time { return clock }
	must := func(k Key, network string) netip.Addr {
		t.Helper()
		ip, _, _, err := a.Allocate(k, network)
		if err != nil {
			t.Fatal(err)
		}
		return ip
	}
	live, gone := Key{"live", "eth0"}, Key{"gone", "eth0"}
	must(live, "quilt")
	goneIP := must(gone, "quilt")
	must(Key{"gone", "eth0x"}, "other")
	mustAlloc(t, a, "admin")
	clock = clock.Add(time.Minute)
	young := must(Key{"young", "eth0"}, "quilt")
	keep := map[Key]bool{live: true}

	// Made within the grace period: kept.
	got, err := a.Collect("quilt", keep, clock.Add(-30*time.Second))
	if err != nil || len(got) != 1 || got[0].Key != gone || got[0].IP != goneIP || got[0].Network != "quilt" {
		t.Fatalf("collect: %+v %v", got, err)
	}
	if _, ok := st.allocs["gone/eth0"]; ok || a.Count() != 4 {
		t.Fatalf("after collect: saved %v, live %v", st.allocs, a.List())
	}
	got, err = a.Collect("quilt", keep, clock)
	if err != nil || len(got) != 1 || got[0].IP != young {
		t.Fatalf("collect past the grace period: %+v %v", got, err)
	}
	// Nothing left to collect of quilt: no write, no error.
	st.fail = errors.New("disk full")
	if got, err := a.Collect("quilt", keep, clock); err != nil || got != nil {
		t.Fatalf("nothing to collect: %+v %v", got, err)
	}
	if _, err := a.Collect("other", nil, clock); err == nil || a.Count() != 3 {
		t.Fatalf("a failed write released in memory: %v %v", err, a.List())
	}
	st.fail = nil
	for _, bad := range []string{"", "a b", "-x"} {
		if _, err := a.Collect(bad, nil, clock); !errors.Is(err, ErrNetwork) {
			t.Errorf("network %q: %v", bad, err)
		}
	}
	got, err = a.Collect("other", nil, clock)
	if err != nil || len(got) != 1 || a.Count() != 2 {
		t.Fatalf("collect other: %+v %v %v", got, err, a.List())
	}
}

// barrierStore holds every allocation's write until n of them are in
// flight at once.
type barrierStore struct {
	memStore
	n       int
	mu      sync.Mutex
	waiting int
	all     chan struct{}
}

func (b *barrierStore) PutAllocation(al Allocation) error {
	b.mu.Lock()
	if b.waiting++; b.waiting == b.n {
		close(b.all)
	}
	b.mu.Unlock()
	select {
	case <-b.all:
	case <-time.After(10 * time.Second):
		return errors.New("the other writes never came: the allocator wrote one at a time")
	}
	return b.memStore.PutAllocation(al)
}

// TestAllocationsWriteTogether: the allocator does not hold its lock while
// the store writes, so concurrent allocations reach the store together
// (and can share its commit); the same key asked for at once gets one
// address, answered only once it is saved.
func TestAllocationsWriteTogether(t *testing.T) {
	st := &barrierStore{memStore: memStore{allocs: map[string]netip.Addr{}}, n: 8, all: make(chan struct{})}
	a, err := NewAllocator(DefaultOffsets, st, subnet1, nil, netip.Addr{})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	got := make([]netip.Addr, 16)
	existing := make([]bool, 16)
	for i := range 16 { // 8 containers, each asked for twice at once
		wg.Go(func() {
			var err error
			if got[i], _, existing[i], err = a.Allocate(Key{ContainerID: fmt.Sprint("c", i%8)}, ""); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	fresh := 0
	for i := range 16 {
		if got[i] != got[i%8] || st.allocs[fmt.Sprint("c", i%8)] != got[i] {
			t.Fatalf("c%d: %v and %v, saved %v", i%8, got[i%8], got[i], st.allocs[fmt.Sprint("c", i%8)])
		}
		if !existing[i] {
			fresh++
		}
	}
	if fresh != 8 || a.Count() != 8 {
		t.Fatalf("%d answers said new, %d allocations; want 8 of each", fresh, a.Count())
	}
}
