// Package state keeps the node's durable state: its subnet, its container
// allocations and the set of routes the agent asked for, in one file,
// state.db, under the frontend's state directory (--state-dir).
//
// The file is a go.etcd.io/bbolt database, the transactional embedded store
// etcd and containerd use: every change is written in one transaction,
// copy-on-write and fsynced before the call returns, so a process killed at
// any instant leaves either the state before the change or the state after
// it, never a mix. Changes that arrive while a commit is in flight share
// the next transaction (group commit), so concurrent callers pay one fsync
// between them. The first start creates the file under a temporary name
// and renames it into place once it holds its schema version, so state.db
// either does not exist or is complete.
//
// Layout of schema 2 (text keys and values, readable with the bbolt
// command):
//
//	meta         schema = "2", subnet = "10.42.1.0/24", last_ip = "10.42.1.12"
//	allocations  "container ID/interface" -> {"ip":"10.42.1.10","network":"quilt"}
//	             "container ID/" -> {"ip":"10.42.1.11"} (QuiltAdmin, no interface, no CNI network)
//	routes       "10.42.2.0/24" -> "vxlan100"
//	adopted      "10.42.2.0/24" -> "" (made when first needed: routes taken
//	             from the kernel when the file was new, until the agent
//	             confirms them)
//
// Schema 1 keyed allocations by container ID alone ("c1" -> "10.42.1.10").
// Open reads such a file without writing it; Store.Migrate, called once
// the caller has accepted the snapshot, keeps a copy of it as
// state.db.schema1 and rewrites it as schema 2 in one transaction, each
// allocation becoming the container's allocation without an interface.
//
// Open refuses, with a message saying what to do, a file of an unknown
// schema version, a file that is corrupt or not ours, and a file another
// process holds; it never starts afresh over existing state, and never
// writes a file it refuses. The directory
// must belong to the process's uid; it is made 0700 and the file 0600.
//
// The package needs no privileges.
package state
