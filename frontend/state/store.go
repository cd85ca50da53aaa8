package state

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"iter"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/quiltmesh/quilt-runtime/frontend/internal/group"
	"github.com/quiltmesh/quilt-runtime/frontend/ipam"
	"github.com/quiltmesh/quilt-runtime/frontend/route"
)

// SchemaVersion is the layout this code reads and writes. Open migrates a
// file of schema 1 (allocations keyed by container ID alone) to it.
const SchemaVersion = 2

// BackupSuffix is added to the state file's name for the copy of a
// schema-1 file kept before it is migrated: the file a downgrade needs.
const BackupSuffix = ".schema1"

// FileName is the state file's name inside the state directory.
const FileName = "state.db"

// Errors Open wraps, so callers and tests can tell them apart.
var (
	ErrCorrupt       = errors.New("state file is corrupt")
	ErrSchemaVersion = errors.New("state file has an unknown schema version")
	ErrLocked        = errors.New("state file is in use by another process")
)

var (
	bucketMeta   = []byte("meta")
	bucketAllocs = []byte("allocations")
	bucketRoutes = []byte("routes")
	// bucketAdopted marks the desired routes taken from the kernel when the
	// state file was new, until the agent confirms them. It is made when
	// first needed; releases before it ignore it.
	bucketAdopted = []byte("adopted")
	keySchema     = []byte("schema")
	keySubnet     = []byte("subnet")
	keyLastIP     = []byte("last_ip")
)

// Snapshot is the state as it was saved.
type Snapshot struct {
	Schema      int          // the file's schema version: SchemaVersion, or 1 until Store.Migrate
	Subnet      netip.Prefix // invalid if never configured
	LastIP      netip.Addr   // the address handed out most recently
	Allocations []ipam.Allocation
	Routes      map[netip.Prefix]string // desired routes: destination -> interface
	Adopted     map[netip.Prefix]bool   // desired routes adopted from the kernel, not yet confirmed
	Created     bool                    // the file was made by this Open: no state was found
}

// Store is an open state file. Its methods are safe for concurrent use;
// each returns once its change is durable. Changes that arrive while a
// commit is in flight share the next one: one transaction, one fsync,
// for all of them (group commit).
type Store struct {
	db      *bolt.DB
	path    string
	schema  int // the file's; changes wait for Migrate
	log     *slog.Logger
	commits *group.Group[*change]
	// beforeCommit, if set, is called before each transaction (tests).
	beforeCommit func()
}

// change is one caller's change, waiting for its transaction.
type change struct {
	write func(tx *bolt.Tx) error
	err   error
}

// Path returns the state file's path.
func (s *Store) Path() string { return s.path }

// Close closes the file.
func (s *Store) Close() error { return s.db.Close() }

// Open opens, or on the first start creates, the state file in dir, and
// returns what it holds.
func Open(dir string, log *slog.Logger) (*Store, *Snapshot, error) {
	if err := prepareDir(dir, log); err != nil {
		return nil, nil, err
	}
	path := filepath.Join(dir, FileName)
	fi, err := os.Lstat(path)
	created := errors.Is(err, os.ErrNotExist)
	switch {
	case created:
		if err := create(dir, path); err != nil {
			return nil, nil, err
		}
		log.Info("created state file", "path", path, "schema", SchemaVersion)
	case err != nil:
		return nil, nil, fmt.Errorf("state file: %w", err)
	default:
		if err := checkFile(path, fi, log); err != nil {
			return nil, nil, err
		}
	}
	db, snap, err := openDB(path)
	if err != nil {
		return nil, nil, err
	}
	snap.Created = created
	s := &Store{db: db, path: path, schema: snap.Schema, log: log}
	s.commits = group.New(s.commit)
	return s, snap, nil
}

// mmapSize is how much of the file bbolt maps from the start: far more
// than 65,536 routes take, so that a large transaction never remaps the
// file, which first copies every key and value it holds onto the heap.
// Only the pages read count towards the process's memory.
const mmapSize = 64 << 20

// openDB opens the file and reads it whole. bbolt panics on some corrupt
// pages, and a page past the end of a truncated file faults: both are
// turned into ErrCorrupt, in this goroutine, where they can be caught.
func openDB(path string) (db *bolt.DB, snap *Snapshot, err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: %v", ErrCorrupt, p)
		}
		if err != nil && db != nil {
			db.Close()
		}
		if errors.Is(err, ErrCorrupt) || errors.Is(err, ErrSchemaVersion) {
			err = fmt.Errorf("state file %s: %w; it was left untouched: restore it from a backup, or move it aside to start with empty state (its allocations and routes are then forgotten)", path, err)
		}
	}()
	db, err = bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, FreelistType: bolt.FreelistMapType, InitialMmapSize: mmapSize})
	if err != nil {
		return nil, nil, openError(path, err)
	}
	snap, err = load(db)
	return db, snap, err
}

// allocKey is an allocation's key in the file: the container ID, a slash
// and the interface name, which is empty for an allocation QuiltAdmin
// made for the container as a whole. Neither half may hold a slash.
func allocKey(k ipam.Key) []byte { return []byte(k.ContainerID + "/" + k.Ifname) }

// allocValue is an allocation's value in the file, as JSON.
type allocValue struct {
	IP      string `json:"ip"`
	Network string `json:"network,omitempty"` // the CNI network that made it
}

// parseAlloc reads one allocation record strictly: the key's two halves,
// a JSON object with exactly the known fields and nothing after it, and an
// IPv4 address. The allocator checks the names themselves.
func parseAlloc(k, v []byte) (ipam.Allocation, error) {
	id, ifname, ok := strings.Cut(string(k), "/")
	var av allocValue
	dec := json.NewDecoder(bytes.NewReader(v))
	dec.DisallowUnknownFields()
	err := dec.Decode(&av)
	ip, ipErr := netip.ParseAddr(av.IP)
	if !ok || err != nil || dec.More() || ipErr != nil || !ip.Is4() {
		return ipam.Allocation{}, fmt.Errorf("%w: allocation %q -> %q", ErrCorrupt, k, v)
	}
	return ipam.Allocation{Key: ipam.Key{ContainerID: id, Ifname: ifname}, IP: ip, Network: av.Network}, nil
}

// Migrate rewrites a file of an older schema (Snapshot.Schema) as the
// current one, in one transaction: a crash leaves the old file or the new
// one, whole. Open has read and checked every record by then; the caller
// calls Migrate once it has accepted the snapshot too (the allocator's own
// checks), so a file refused for any reason is left as it was. It first
// keeps a copy of the old file beside it (state.db.schema1): the file a
// downgrade needs. Schema 1 keyed allocations by the container ID alone,
// each value an address; it becomes the container's allocation without an
// interface. The store takes no change before the file is migrated.
func (s *Store) Migrate(snap *Snapshot) error {
	if s.schema == SchemaVersion {
		return nil
	}
	backup := s.path + BackupSuffix
	if err := s.db.View(func(tx *bolt.Tx) error { return writeCopy(tx, backup) }); err != nil {
		return fmt.Errorf("state file %s: keep a copy of it as %s before migrating it to schema %d: %w; nothing was changed", s.path, backup, SchemaVersion, err)
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		if err := tx.DeleteBucket(bucketAllocs); err != nil {
			return err
		}
		allocs, err := tx.CreateBucket(bucketAllocs)
		for _, al := range snap.Allocations {
			if err != nil {
				return err
			}
			var v []byte
			if v, err = json.Marshal(allocValue{IP: al.IP.String(), Network: al.Network}); err == nil {
				err = allocs.Put(allocKey(al.Key), v)
			}
		}
		if err != nil {
			return err
		}
		return tx.Bucket(bucketMeta).Put(keySchema, []byte(strconv.Itoa(SchemaVersion)))
	})
	if err != nil {
		return fmt.Errorf("state file %s: migrate from schema %d to %d: %w; the file is as it was (a copy is in %s)", s.path, s.schema, SchemaVersion, err, backup)
	}
	s.log.Info("migrated the state file to the current schema; the old file is kept beside it for a downgrade",
		"path", s.path, "from", s.schema, "to", SchemaVersion, "allocations", len(snap.Allocations), "copy", backup)
	s.schema = SchemaVersion
	return nil
}

// parseAllocV1 reads an allocation record of schema 1: the container ID
// (no slash) and its address.
func parseAllocV1(k, v []byte) (ipam.Allocation, error) {
	ip, err := netip.ParseAddr(string(v))
	if err != nil || !ip.Is4() || bytes.IndexByte(k, '/') >= 0 {
		return ipam.Allocation{}, fmt.Errorf("%w: allocation %q -> %q", ErrCorrupt, k, v)
	}
	return ipam.Allocation{Key: ipam.Key{ContainerID: string(k)}, IP: ip}, nil
}

// writeCopy writes a consistent copy of the open file to path (0600,
// fsynced, put in place by a rename).
func writeCopy(tx *bolt.Tx, path string) error {
	tmp := path + ".new"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = tx.WriteTo(f)
	if err == nil {
		err = f.Sync()
	}
	if err = errors.Join(err, f.Close()); err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		err = syncDir(filepath.Dir(path))
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// prepareDir makes the state directory if needed and checks it is ours
// and private.
func prepareDir(dir string, log *slog.Logger) error {
	if !filepath.IsAbs(dir) {
		return fmt.Errorf("state dir %q: want an absolute path", dir)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("state dir %s is not a directory", dir)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("state dir %s belongs to uid %d, not to this process's uid %d: chown it to the frontend's user", dir, st.Uid, os.Geteuid())
	}
	if fi.Mode().Perm() != 0o700 {
		log.Warn("state dir was not private; made it 0700", "path", dir, "mode", fi.Mode().Perm())
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("state dir: %w", err)
		}
	}
	return nil
}

// checkFile refuses anything at the state file's path but a non-empty
// regular file of ours, and makes it 0600.
func checkFile(path string, fi os.FileInfo, log *slog.Logger) error {
	switch st, _ := fi.Sys().(*syscall.Stat_t); {
	case !fi.Mode().IsRegular():
		return fmt.Errorf("state file %s is not a regular file (%v): %w", path, fi.Mode().Type(), ErrCorrupt)
	case fi.Size() == 0:
		return fmt.Errorf("state file %s is empty, though only complete files are ever put there: %w; move it aside to start with empty state", path, ErrCorrupt)
	case st != nil && int(st.Uid) != os.Geteuid():
		return fmt.Errorf("state file %s belongs to uid %d, not to this process's uid %d: chown it to the frontend's user", path, st.Uid, os.Geteuid())
	case fi.Mode().Perm() != 0o600:
		log.Warn("state file was not private; made it 0600", "path", path, "mode", fi.Mode().Perm())
		if err := os.Chmod(path, 0o600); err != nil {
			return fmt.Errorf("state file: %w", err)
		}
	}
	return nil
}

// create writes an empty state file of the current schema under a
// temporary name, then renames it into place and syncs the directory, so
// that a crash never leaves a half-made state.db.
func create(dir, path string) error {
	tmp := path + ".new"
	os.Remove(tmp) // left by a crash during a first start
	db, err := bolt.Open(tmp, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return fmt.Errorf("create state file: %w", err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucket(bucketMeta)
		if err == nil {
			err = meta.Put(keySchema, []byte(strconv.Itoa(SchemaVersion)))
		}
		for _, b := range [][]byte{bucketAllocs, bucketRoutes} {
			if err == nil {
				_, err = tx.CreateBucket(b)
			}
		}
		return err
	})
	if err = errors.Join(err, db.Close()); err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		err = syncDir(dir)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("create state file %s: %w", path, err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// openError explains why bbolt could not open the file.
func openError(path string, err error) error {
	switch {
	case errors.Is(err, bolterrors.ErrTimeout):
		return fmt.Errorf("state file %s: %w (is another quilt-runtime using the same --state-dir?)", path, ErrLocked)
	case errors.As(err, new(*fs.PathError)) || errors.As(err, new(syscall.Errno)):
		return fmt.Errorf("state file %s: %w", path, err) // the system's, not the file's
	}
	// bbolt's own checks: bad meta pages, a wrong size, a foreign format.
	return fmt.Errorf("%w or not a quilt-runtime state file (%v)", ErrCorrupt, err)
}

// load reads and checks every record of the file.
func load(db *bolt.DB) (*Snapshot, error) {
	snap := &Snapshot{Routes: map[netip.Prefix]string{}, Adopted: map[netip.Prefix]bool{}}
	err := db.View(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if meta == nil {
			return fmt.Errorf("%w: no meta bucket", ErrCorrupt)
		}
		switch v := string(meta.Get(keySchema)); v {
		case strconv.Itoa(SchemaVersion):
			snap.Schema = SchemaVersion
		case "1":
			snap.Schema = 1
		case "":
			return fmt.Errorf("%w: no schema version", ErrCorrupt)
		default:
			return fmt.Errorf("%w %q; this quilt-runtime reads version %d and migrates version 1 (was it written by a newer release? run that release, downgrades are not supported)", ErrSchemaVersion, v, SchemaVersion)
		}
		var err error
		if v := meta.Get(keySubnet); v != nil {
			if snap.Subnet, err = netip.ParsePrefix(string(v)); err != nil || !snap.Subnet.Addr().Is4() || snap.Subnet != snap.Subnet.Masked() {
				return fmt.Errorf("%w: subnet %q", ErrCorrupt, v)
			}
		}
		if v := meta.Get(keyLastIP); v != nil {
			if snap.LastIP, err = netip.ParseAddr(string(v)); err != nil || !snap.LastIP.Is4() {
				return fmt.Errorf("%w: last_ip %q", ErrCorrupt, v)
			}
		}
		allocs, routes := tx.Bucket(bucketAllocs), tx.Bucket(bucketRoutes)
		if allocs == nil || routes == nil {
			return fmt.Errorf("%w: missing bucket", ErrCorrupt)
		}
		parse := parseAlloc
		if snap.Schema == 1 {
			parse = parseAllocV1
		}
		err = allocs.ForEach(func(k, v []byte) error {
			al, err := parse(k, v)
			snap.Allocations = append(snap.Allocations, al)
			return err
		})
		if err != nil {
			return err
		}
		err = routes.ForEach(func(k, v []byte) error {
			dst, err := netip.ParsePrefix(string(k))
			if err != nil || !dst.Addr().Is4() || dst != dst.Masked() || len(v) == 0 || len(v) > 15 {
				return fmt.Errorf("%w: route %q -> %q", ErrCorrupt, k, v)
			}
			snap.Routes[dst] = string(v)
			return nil
		})
		adopted := tx.Bucket(bucketAdopted)
		if err != nil || adopted == nil {
			return err
		}
		return adopted.ForEach(func(k, v []byte) error {
			dst, err := netip.ParsePrefix(string(k))
			if _, desired := snap.Routes[dst]; err != nil || !desired || len(v) != 0 {
				return fmt.Errorf("%w: adopted %q is not a desired route", ErrCorrupt, k)
			}
			snap.Adopted[dst] = true
			return nil
		})
	})
	return snap, err
}

// update writes one change to the meta, allocations and routes buckets;
// it returns once the change is on disk.
func (s *Store) update(f func(meta, allocs, routes *bolt.Bucket) error) error {
	if s.schema != SchemaVersion {
		return fmt.Errorf("save state to %s: the file is of schema %d and not migrated yet", s.path, s.schema)
	}
	return s.write(func(tx *bolt.Tx) error {
		return f(tx.Bucket(bucketMeta), tx.Bucket(bucketAllocs), tx.Bucket(bucketRoutes))
	})
}

// write has the next commit carry a change, and returns once it is on
// disk, or why not.
func (s *Store) write(f func(tx *bolt.Tx) error) error {
	c := &change{write: f}
	s.commits.Do(c)
	if c.err != nil {
		return fmt.Errorf("save state to %s: %w", s.path, c.err)
	}
	return nil
}

// commit writes the changes that queued together in one transaction. A
// change whose own writes fail is answered with that error alone, and
// the others are committed without it; a failed commit fails them all.
func (s *Store) commit(changes []*change) {
	for len(changes) > 0 {
		if s.beforeCommit != nil {
			s.beforeCommit()
		}
		failed := -1
		err := s.db.Update(func(tx *bolt.Tx) error {
			for i, c := range changes {
				if err := c.write(tx); err != nil {
					failed = i
					return err
				}
			}
			return nil
		})
		if failed < 0 {
			for _, c := range changes {
				c.err = err
			}
			return
		}
		changes[failed].err = err
		changes = slices.Delete(changes, failed, failed+1)
	}
}

// SetSubnet records the node subnet and forgets the last address handed out.
func (s *Store) SetSubnet(p netip.Prefix) error {
	return s.update(func(meta, _, _ *bolt.Bucket) error {
		return errors.Join(meta.Put(keySubnet, []byte(p.String())), meta.Delete(keyLastIP))
	})
}

// PutAllocation records an allocation, and its address as the last
// handed out.
func (s *Store) PutAllocation(al ipam.Allocation) error {
	v, err := json.Marshal(allocValue{IP: al.IP.String(), Network: al.Network})
	if err != nil {
		return err
	}
	return s.update(func(meta, allocs, _ *bolt.Bucket) error {
		return errors.Join(allocs.Put(allocKey(al.Key), v), meta.Put(keyLastIP, []byte(al.IP.String())))
	})
}

// DeleteAllocations forgets allocations, in one transaction.
func (s *Store) DeleteAllocations(keys ...ipam.Key) error {
	return s.update(func(_, allocs, _ *bolt.Bucket) error {
		for _, k := range keys {
			if err := allocs.Delete(allocKey(k)); err != nil {
				return err
			}
		}
		return nil
	})
}

// ChangeRoutes applies changes to the desired routes in one transaction,
// a removal where Ifname is empty; a change to an adopted route confirms
// it (its mark goes). The sequence is read once, before the call returns.
// The routes are written in key order: bbolt inserts into an in-memory
// page that is split only at commit, so keys in order are appended, and
// keys out of order would be shifted in one by one (quadratic for a large
// batch).
func (s *Store) ChangeRoutes(changes iter.Seq[route.Route]) error {
	return s.changeRoutes(false, changes)
}

// AdoptRoutes records routes found in the kernel as desired and marks them
// adopted, in one transaction.
func (s *Store) AdoptRoutes(changes iter.Seq[route.Route]) error {
	return s.changeRoutes(true, changes)
}

func (s *Store) changeRoutes(adopt bool, changes iter.Seq[route.Route]) error {
	// The keys, one after another in one buffer, each change's value, and
	// their order: a large batch costs a few bytes a route here, not an
	// allocation each, and the caller's changes are not held.
	var keys []byte
	var ends []int32
	var vals []uint16 // index in values; a removal's is none
	var values [][]byte
	const none = ^uint16(0)
	for c := range changes {
		keys = c.Dst.AppendTo(keys)
		ends = append(ends, int32(len(keys)))
		v := none
		if !c.IsRemoval() {
			i := slices.IndexFunc(values, func(b []byte) bool { return string(b) == c.Ifname })
			if i < 0 {
				i = len(values)
				values = append(values, []byte(c.Ifname)) // bbolt keeps values, not copies, until the commit
			}
			v = uint16(i)
		}
		vals = append(vals, v)
	}
	key := func(i int32) []byte {
		if i == 0 {
			return keys[:ends[0]]
		}
		return keys[ends[i-1]:ends[i]]
	}
	order := make([]int32, len(ends))
	for i := range order {
		order[i] = int32(i)
	}
	slices.SortStableFunc(order, func(a, b int32) int { return bytes.Compare(key(a), key(b)) })
	return s.write(func(tx *bolt.Tx) error {
		routes := tx.Bucket(bucketRoutes)
		adopted := tx.Bucket(bucketAdopted)
		if adopt && adopted == nil {
			var err error
			if adopted, err = tx.CreateBucket(bucketAdopted); err != nil {
				return err
			}
		}
		for _, i := range order {
			var err error
			if vals[i] == none {
				err = routes.Delete(key(i))
			} else {
				err = routes.Put(key(i), values[vals[i]])
			}
			switch {
			case err != nil:
			case adopt:
				err = adopted.Put(key(i), nil)
			case adopted != nil:
				err = adopted.Delete(key(i))
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
}
