package state

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/quiltmesh/quilt-runtime/frontend/ipam"
	"github.com/quiltmesh/quilt-runtime/frontend/route"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func open(t *testing.T, dir string) (*Store, *Snapshot) {
	t.Helper()
	s, snap, err := Open(dir, quiet)
	if err != nil {
		t.Fatal(err)
	}
	return s, snap
}

// fill writes a subnet, allocations through the real allocator, and routes.
func fill(t *testing.T, s *Store, snap *Snapshot) {
	t.Helper()
	a, err := ipam.NewAllocator(ipam.DefaultOffsets, s, snap.Subnet, snap.Allocations, snap.LastIP)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.SetSubnet(netip.MustParsePrefix("10.42.1.0/24")); err != nil {
		t.Fatal(err)
	}
	for _, al := range []ipam.Allocation{{Key: ipam.Key{ContainerID: "c1"}}, {Key: ipam.Key{ContainerID: "c2", Ifname: "eth0"}},
		{Key: ipam.Key{ContainerID: "c3", Ifname: "eth1"}, Network: "quilt"}} {
		if _, _, _, err := a.Allocate(al.Key, al.Network); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := a.Release(ipam.Key{ContainerID: "c2", Ifname: "eth0"}); err != nil {
		t.Fatal(err)
	}
	err = s.ChangeRoutes(slices.Values([]route.Route{{Dst: netip.MustParsePrefix("10.42.2.0/24"), Ifname: "vxlan100"}, {Dst: netip.MustParsePrefix("10.42.3.0/24"), Ifname: "vxlan100"}}))
	if err == nil {
		err = s.ChangeRoutes(slices.Values([]route.Route{{Dst: netip.MustParsePrefix("10.42.3.0/24")}, {Dst: netip.MustParsePrefix("10.42.4.0/24"), Ifname: "vxlan200"}}))
	}
	if err != nil {
		t.Fatal(err)
	}
}

func TestRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	s, snap := open(t, dir)
	if snap.Subnet.IsValid() || len(snap.Allocations) != 0 || len(snap.Routes) != 0 {
		t.Fatalf("a new state is not empty: %+v", snap)
	}
	fill(t, s, snap)
	s.Close()

	s, snap = open(t, dir)
	defer s.Close()
	want := &Snapshot{
		Subnet: netip.MustParsePrefix("10.42.1.0/24"), LastIP: netip.MustParseAddr("10.42.1.12"),
		Allocations: []ipam.Allocation{{Key: ipam.Key{ContainerID: "c1"}, IP: netip.MustParseAddr("10.42.1.10")},
			{Key: ipam.Key{ContainerID: "c3", Ifname: "eth1"}, IP: netip.MustParseAddr("10.42.1.12"), Network: "quilt"}},
		Routes: map[netip.Prefix]string{netip.MustParsePrefix("10.42.2.0/24"): "vxlan100", netip.MustParsePrefix("10.42.4.0/24"): "vxlan200"},
	}
	if got, exp := dump(snap), dump(want); got != exp {
		t.Fatalf("after reopen:\n%s\nwant:\n%s", got, exp)
	}
	// The allocator resumes where it stopped: after .12, not at .10 or .11.
	a, err := ipam.NewAllocator(ipam.DefaultOffsets, s, snap.Subnet, snap.Allocations, snap.LastIP)
	if err != nil {
		t.Fatal(err)
	}
	if ip, _, _, err := a.Allocate(ipam.Key{ContainerID: "c4", Ifname: "eth0"}, ""); err != nil || ip.String() != "10.42.1.13" {
		t.Fatalf("after reopen: %v %v", ip, err)
	}
	for path, mode := range map[string]os.FileMode{dir: 0o700 | os.ModeDir, filepath.Join(dir, FileName): 0o600} {
		if fi, err := os.Stat(path); err != nil || fi.Mode() != mode {
			t.Errorf("%s: mode %v, want %v (%v)", path, fi.Mode(), mode, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, FileName+".new")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the temporary file was left behind: %v", err)
	}
}

func dump(s *Snapshot) string {
	var b strings.Builder
	b.WriteString("subnet " + s.Subnet.String() + " last " + s.LastIP.String() + "\n")
	for _, a := range s.Allocations {
		b.WriteString("alloc " + a.Key.String() + " " + a.IP.String() + " " + a.Network + "\n")
	}
	for _, d := range []string{"10.42.2.0/24", "10.42.3.0/24", "10.42.4.0/24"} {
		if v, ok := s.Routes[netip.MustParsePrefix(d)]; ok {
			b.WriteString("route " + d + " " + v + "\n")
		}
	}
	return b.String() + "routes " + string(rune('0'+len(s.Routes)))
}

// TestTightensModes: a state dir or file left readable by others is made
// private at start.
func TestTightensModes(t *testing.T) {
	dir := t.TempDir()
	s, _ := open(t, dir)
	s.Close()
	os.Chmod(dir, 0o755)
	os.Chmod(filepath.Join(dir, FileName), 0o644)
	s, _ = open(t, dir)
	s.Close()
	for path, mode := range map[string]os.FileMode{dir: 0o700 | os.ModeDir, filepath.Join(dir, FileName): 0o600} {
		if fi, _ := os.Stat(path); fi.Mode() != mode {
			t.Errorf("%s: mode %v, want %v", path, fi.Mode(), mode)
		}
	}
}

func TestLocked(t *testing.T) {
	dir := t.TempDir()
	s, _ := open(t, dir)
	defer s.Close()
	if _, _, err := Open(dir, quiet); !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "--state-dir") {
		t.Fatalf("a second opener: %v", err)
	}
}

func TestRefusesBadDirs(t *testing.T) {
	if _, _, err := Open("relative/dir", quiet); err == nil || !strings.Contains(err.Error(), "absolute") {
		t.Errorf("relative dir: %v", err)
	}
	f := filepath.Join(t.TempDir(), "file")
	os.WriteFile(f, nil, 0o600)
	if _, _, err := Open(f, quiet); err == nil {
		t.Errorf("a file as the dir: accepted")
	}
	if os.Geteuid() == 0 {
		dir := t.TempDir()
		os.Chown(dir, 12345, 12345)
		if _, _, err := Open(dir, quiet); err == nil || !strings.Contains(err.Error(), "uid 12345") {
			t.Errorf("someone else's dir: %v", err)
		}
	}
}

// TestRefusesBadFiles: every kind of damaged or foreign state file stops
// the start with a clear error and is left byte for byte as it was.
func TestRefusesBadFiles(t *testing.T) {
	good := func(t *testing.T) []byte {
		dir := t.TempDir()
		s, snap := open(t, dir)
		fill(t, s, snap)
		s.Close()
		b, err := os.ReadFile(filepath.Join(dir, FileName))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}(t)
	// rewrite makes a bbolt file with one change to a good state.
	rewrite := func(t *testing.T, f func(tx *bolt.Tx) error) []byte {
		path := filepath.Join(t.TempDir(), FileName)
		os.WriteFile(path, good, 0o600)
		db, err := bolt.Open(path, 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := db.Update(f); err != nil {
			t.Fatal(err)
		}
		db.Close()
		b, _ := os.ReadFile(path)
		return b
	}
	put := func(bucket, k, v string) func(tx *bolt.Tx) error {
		return func(tx *bolt.Tx) error { return tx.Bucket([]byte(bucket)).Put([]byte(k), []byte(v)) }
	}
	flip := func(off int) []byte {
		b := bytes.Clone(good)
		for i := off; i < off+64 && i < len(b); i++ {
			b[i] ^= 0xa5
		}
		return b
	}
	for _, tc := range []struct {
		name string
		file []byte
		want error
		says string
	}{
		{"empty", []byte{}, ErrCorrupt, "empty"},
		{"text", []byte("subnet=10.42.1.0/24\n"), ErrCorrupt, "not a quilt-runtime state file"},
		{"zeros", make([]byte, 16384), ErrCorrupt, ""},
		{"truncated", good[:4096+100], ErrCorrupt, ""},
		{"both meta pages damaged", func() []byte { b := flip(16); copy(b[4096+16:], flip(4096 + 16)[4096+16:4096+80]); return b }(), ErrCorrupt, ""},
		{"future schema", rewrite(t, put("meta", "schema", "3")), ErrSchemaVersion, `"3"`},
		{"no schema", rewrite(t, func(tx *bolt.Tx) error { return tx.Bucket([]byte("meta")).Delete([]byte("schema")) }), ErrCorrupt, "schema"},
		{"no meta bucket", rewrite(t, func(tx *bolt.Tx) error { return tx.DeleteBucket([]byte("meta")) }), ErrCorrupt, "meta"},
		{"no routes bucket", rewrite(t, func(tx *bolt.Tx) error { return tx.DeleteBucket([]byte("routes")) }), ErrCorrupt, "bucket"},
		{"bad subnet", rewrite(t, put("meta", "subnet", "10.42.1.1/24")), ErrCorrupt, "subnet"},
		{"bad last ip", rewrite(t, put("meta", "last_ip", "fd00::1")), ErrCorrupt, "last_ip"},
		{"bad allocation", rewrite(t, put("allocations", "c9/eth0", `{"ip":"10.42.1.300"}`)), ErrCorrupt, "c9"},
		{"allocation without a slash", rewrite(t, put("allocations", "c9", `{"ip":"10.42.1.9"}`)), ErrCorrupt, "c9"},
		{"allocation of schema 1", rewrite(t, put("allocations", "c9/", "10.42.1.9")), ErrCorrupt, "c9"},
		{"allocation with unknown fields", rewrite(t, put("allocations", "c9/", `{"ip":"10.42.1.9","x":1}`)), ErrCorrupt, "c9"},
		{"allocation with trailing data", rewrite(t, put("allocations", "c9/", `{"ip":"10.42.1.9"}{}`)), ErrCorrupt, "c9"},
		{"bad route", rewrite(t, put("routes", "10.42.9.1/24", "vxlan100")), ErrCorrupt, "10.42.9.1/24"},
		{"bad interface", rewrite(t, put("routes", "10.42.9.0/24", "")), ErrCorrupt, "10.42.9.0/24"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, FileName)
			if err := os.WriteFile(path, tc.file, 0o600); err != nil {
				t.Fatal(err)
			}
			s, _, err := Open(dir, quiet)
			if err == nil {
				s.Close()
				t.Fatal("accepted")
			}
			msg := err.Error()
			if !errors.Is(err, tc.want) || !strings.Contains(msg, path) || !strings.Contains(msg, tc.says) || strings.Contains(msg, "\n") {
				t.Fatalf("got %q, want %v naming %s and %q", msg, tc.want, path, tc.says)
			}
			if after, _ := os.ReadFile(path); !bytes.Equal(after, tc.file) {
				t.Fatal("the refused file was changed")
			}
		})
	}
}

// FuzzLoad: whatever bytes are in the state file, Open returns an error or
// a snapshot, never panics, and never changes a file it refuses.
func FuzzLoad(f *testing.F) {
	dir := f.TempDir()
	s, snap, err := Open(dir, quiet)
	if err != nil {
		f.Fatal(err)
	}
	s.ChangeRoutes(slices.Values([]route.Route{{Dst: netip.MustParsePrefix("10.42.2.0/24"), Ifname: "vxlan100"}}))
	s.SetSubnet(netip.MustParsePrefix("10.42.1.0/24"))
	s.PutAllocation(ipam.Allocation{Key: ipam.Key{ContainerID: "c1", Ifname: "eth0"}, IP: netip.MustParseAddr("10.42.1.10"), Network: "quilt"})
	_ = snap
	s.Close()
	good, _ := os.ReadFile(filepath.Join(dir, FileName))
	f.Add(good)
	f.Add(good[:8192])
	f.Add(schema1File(f, f.TempDir()))
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 1<<20 {
			return
		}
		dir := t.TempDir()
		path := filepath.Join(dir, FileName)
		os.WriteFile(path, b, 0o600)
		s, _, err := Open(dir, quiet)
		if err == nil {
			s.Close()
			return
		}
		if after, _ := os.ReadFile(path); !bytes.Equal(after, b) {
			t.Fatalf("refused (%v) but changed", err)
		}
	})
}

// schema1File writes a state file as schema 1 laid it out (allocations
// keyed by container ID, each value an address) into dir, and returns it.
func schema1File(tb testing.TB, dir string) []byte {
	tb.Helper()
	path := filepath.Join(dir, FileName)
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		tb.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for bucket, kvs := range map[string][]string{
			"meta":        {"schema", "1", "subnet", "10.42.1.0/24", "last_ip", "10.42.1.12"},
			"allocations": {"c1", "10.42.1.10", "web-2", "10.42.1.12"},
			"routes":      {"10.42.2.0/24", "vxlan100"},
		} {
			b, err := tx.CreateBucket([]byte(bucket))
			for i := 0; err == nil && i < len(kvs); i += 2 {
				err = b.Put([]byte(kvs[i]), []byte(kvs[i+1]))
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err = errors.Join(err, db.Close()); err != nil {
		tb.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// TestMigratesSchema1: a file of schema 1 keeps every allocation, route
// and setting across the upgrade: Open reads it without writing, Migrate
// rewrites it as the current schema after keeping a copy of the old file,
// and the migrated file reopens with the same state and takes new
// allocations with interface names.
func TestMigratesSchema1(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, FileName)
	old := schema1File(t, dir)
	want := "subnet 10.42.1.0/24 last 10.42.1.12\nalloc c1 10.42.1.10 \nalloc web-2 10.42.1.12 \nroute 10.42.2.0/24 vxlan100\nroutes 1"

	s, snap := open(t, dir)
	if got := dump(snap); got != want || snap.Schema != 1 {
		t.Fatalf("schema 1 read as (schema %d):\n%s\nwant:\n%s", snap.Schema, got, want)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(after, old) {
		t.Fatal("Open changed the file before Migrate")
	}
	if err := s.SetSubnet(netip.MustParsePrefix("10.42.1.0/24")); err == nil {
		t.Fatal("a change was taken before the file was migrated")
	}
	if err := s.Migrate(snap); err != nil {
		t.Fatal(err)
	}
	if err := s.Migrate(snap); err != nil {
		t.Fatalf("a second Migrate: %v", err)
	}
	s.Close()

	// The copy is the old file's state, still of schema 1.
	backup, err := bolt.Open(path+BackupSuffix, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	backup.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket([]byte("meta")).Get([]byte("schema")); string(v) != "1" {
			t.Errorf("the copy has schema %q", v)
		}
		if v := tx.Bucket([]byte("allocations")).Get([]byte("web-2")); string(v) != "10.42.1.12" {
			t.Errorf("the copy lost web-2: %q", v)
		}
		return nil
	})
	backup.Close()
	if fi, err := os.Stat(path + BackupSuffix); err != nil || fi.Mode() != 0o600 {
		t.Fatalf("copy: %v %v", fi, err)
	}

	s, snap = open(t, dir)
	defer s.Close()
	if got := dump(snap); got != want || snap.Schema != SchemaVersion {
		t.Fatalf("migrated file read as (schema %d):\n%s\nwant:\n%s", snap.Schema, got, want)
	}
	a, err := ipam.NewAllocator(ipam.DefaultOffsets, s, snap.Subnet, snap.Allocations, snap.LastIP)
	if err != nil {
		t.Fatal(err)
	}
	if ip, _, existing, err := a.Allocate(ipam.Key{ContainerID: "web-2"}, ""); err != nil || !existing || ip.String() != "10.42.1.12" {
		t.Fatalf("web-2 after the migration: %v %v %v", ip, existing, err)
	}
	if ip, _, existing, err := a.Allocate(ipam.Key{ContainerID: "web-2", Ifname: "eth0"}, "quilt"); err != nil || existing || ip.String() != "10.42.1.13" {
		t.Fatalf("web-2 eth0: %v %v %v", ip, existing, err)
	}
}

// TestRefusesBadSchema1: a schema-1 file with a bad record is refused as
// any other, left byte for byte as it was, and no copy is made.
func TestRefusesBadSchema1(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, FileName)
	schema1File(t, dir)
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("allocations")).Put([]byte("c1/eth0"), []byte("10.42.1.11"))
	})
	if err = errors.Join(err, db.Close()); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(path)
	if s, _, err := Open(dir, quiet); !errors.Is(err, ErrCorrupt) {
		if s != nil {
			s.Close()
		}
		t.Fatalf("a slash in a schema-1 key: %v", err)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(after, before) {
		t.Fatal("the refused file was changed")
	}
	if _, err := os.Stat(path + BackupSuffix); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a copy was made of a refused file: %v", err)
	}
}

// TestGroupCommit: route and allocation changes that arrive while a
// commit is in flight share the next one, and each is on disk when its
// call returns.
func TestGroupCommit(t *testing.T) {
	dir := t.TempDir()
	s, _, err := Open(dir, quiet)
	if err != nil {
		t.Fatal(err)
	}
	var commits atomic.Int32
	held := make(chan struct{})
	s.beforeCommit = func() {
		if commits.Add(1) == 1 { // hold the first until nine changes queue behind it
			close(held)
			for s.commits.Waiting() < 9 {
				runtime.Gosched()
			}
		}
	}
	peer := func(i int) netip.Prefix {
		return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 42, byte(2 + i), 0}), 24)
	}
	var wg sync.WaitGroup
	errs := make([]error, 10)
	wg.Go(func() { errs[0] = s.ChangeRoutes(slices.Values([]route.Route{{Dst: peer(0), Ifname: "vxlan100"}})) })
	<-held
	for i := 1; i < 10; i++ {
		wg.Go(func() {
			if i%2 == 0 {
				errs[i] = s.ChangeRoutes(slices.Values([]route.Route{{Dst: peer(i), Ifname: "vxlan100"}}))
			} else {
				errs[i] = s.PutAllocation(ipam.Allocation{Key: ipam.Key{ContainerID: fmt.Sprint("c", i)}, IP: netip.AddrFrom4([4]byte{10, 42, 1, byte(10 + i)})})
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if got := commits.Load(); got != 2 {
		t.Fatalf("10 changes took %d commits, want 2: the first, and the nine that queued behind it", got)
	}
	s.Close()
	s, snap, err := Open(dir, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if len(snap.Routes) != 5 || len(snap.Allocations) != 5 {
		t.Fatalf("after reopening: %d routes, %d allocations; want 5 of each", len(snap.Routes), len(snap.Allocations))
	}
}

// TestGroupCommitFailure: a change whose own write fails is refused alone;
// the others of its commit are written.
func TestGroupCommitFailure(t *testing.T) {
	s, _, err := Open(t.TempDir(), quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	bad := errors.New("refused")
	ok := &change{write: func(tx *bolt.Tx) error {
		return tx.Bucket(bucketRoutes).Put([]byte("10.42.2.0/24"), []byte("vxlan100"))
	}}
	refused := &change{write: func(*bolt.Tx) error { return bad }}
	s.commit([]*change{refused, ok})
	if !errors.Is(refused.err, bad) || ok.err != nil {
		t.Fatalf("refused: %v, ok: %v", refused.err, ok.err)
	}
	s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketRoutes).Get([]byte("10.42.2.0/24")); string(v) != "vxlan100" {
			t.Errorf("the good change is not written: %q", v)
		}
		return nil
	})
}
