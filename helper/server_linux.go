package helper

import (
	"cmp"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/quiltmesh/quilt-runtime/shared/wire"
)

// Server answers requests from allowed peers, and tells a watcher what
// changes at the node subnets.
type Server struct {
	Routes   *Routes
	AllowUID uint32 // the peer admitted, by its SO_PEERCRED uid
	Log      *slog.Logger

	mu      sync.Mutex // guards Routes and watcher: one message at a time
	watcher *watcher   // the newest watch, if any
}

// Limits: connections served at once (later ones wait in the listen
// backlog, so open descriptors stay bounded), and how long a connection
// may idle or a write may block.
const (
	maxConns    = 16
	idleTimeout = 30 * time.Second
)

// maxEvents is the most changed prefixes the watcher is told about one by
// one; past that it is told to compare every route.
const maxEvents = 4 * wire.MaxBatch

// Listen returns the socket systemd handed over (fd 3, the first),
// or else a new one at path with mode 0660, made so by the umask rather
// than by a chmod after the fact.
func Listen(path string) (*net.UnixListener, error) {
	if os.Getenv("LISTEN_PID") == strconv.Itoa(os.Getpid()) {
		f := os.NewFile(3, "systemd-socket")
		defer f.Close()
		l, err := net.FileListener(f)
		ul, ok := l.(*net.UnixListener)
		if err != nil || !ok || ul.Addr().Network() != "unixpacket" {
			return nil, fmt.Errorf("socket activation: want fd 3 a Unix SOCK_SEQPACKET socket (%v)", err)
		}
		return ul, nil
	}
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		os.Remove(path) // left by a helper that was killed
	}
	old := unix.Umask(0o117)
	defer unix.Umask(old)
	return net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
}

// Serve accepts connections until l fails, and meanwhile keeps the view
// current from the kernel's notifications. If those fail, it stops.
func (s *Server) Serve(l *net.UnixListener) error {
	go func() {
		err := s.Routes.raw.Read(s.kernelChanged)
		s.Log.Error("stopping: kernel notifications failed", "err", err)
		l.Close()
	}()
	slots := make(chan struct{}, maxConns)
	for {
		slots <- struct{}{}
		c, err := l.AcceptUnix()
		if err != nil {
			return err
		}
		go func() {
			s.serveConn(c)
			<-slots
		}()
	}
}

// kernelChanged runs whenever notifications are queued: the view catches
// up, and the watcher learns what changed. It returns false, to be called
// again.
func (s *Server) kernelChanged(uintptr) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.Routes.sync(); err != nil {
		s.Log.Warn("route table view out of date", "err", err)
	}
	s.publish()
	return false
}

// serveConn checks the peer, then answers one message at a time until the
// peer leaves, idles out, breaks framing, or asks to watch.
func (s *Server) serveConn(c *net.UnixConn) {
	defer c.Close()
	raw, _ := c.SyscallConn() // fails only on a closed connection, and then so does Control
	var cred *unix.Ucred
	var err error
	cerr := raw.Control(func(fd uintptr) {
		cred, err = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	})
	if err := cmp.Or(cerr, err); err != nil {
		s.Log.Warn("refused connection: no peer credentials", "err", err)
		return
	}
	peer := slog.Group("peer", "pid", cred.Pid, "uid", cred.Uid, "gid", cred.Gid)
	if cred.Uid != s.AllowUID {
		s.Log.Warn("refused connection: uid not allowed", peer)
		return
	}
	buf := make([]byte, wire.MaxBatch*wire.Size+1) // one byte more shows an oversized message
	for {
		c.SetDeadline(time.Now().Add(idleTimeout))
		n, err := c.Read(buf)
		if err != nil {
			return
		}
		reqs, err := wire.DecodeRequests(buf[:n])
		if reqs[0].Op == wire.OpWatch && reqs[0].Status == wire.StatusOK {
			s.watch(c, reqs[0])
			return
		}
		for _, msg := range s.handle(reqs, peer) {
			c.Write(msg) // a failure shows at the next read
		}
		if err != nil {
			s.Log.Warn("closed connection: broken framing", peer, "err", err)
			return
		}
	}
}

// handle answers one message in place: a hello, a list, or a batch of
// adds and deletes, then audits it.
func (s *Server) handle(reqs []wire.Record, peer slog.Attr) [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	defer s.publish()
	var out batcher
	var err error
	first := &reqs[0]
	switch {
	case first.Status == wire.StatusOK && first.Op == wire.OpHello:
	case first.Status == wire.StatusOK && first.Op == wire.OpList:
		err = s.Routes.List(first, out.add)
	default:
		err = s.Routes.Apply(reqs) // adds and deletes; it skips the records refused already
	}
	if err != nil {
		s.Log.Warn("route requests failed", peer, "err", err)
	}
	for _, r := range reqs {
		out.add(r)
	}
	s.audit(reqs, peer)
	return out.msgs
}

// audit logs what one message changed and refused, in one line that has
// an entry for each such record. A batch of 256 takes one line, not 256,
// so journald's rate limit drops none of them. A record that changed
// nothing gets no entry.
func (s *Server) audit(reqs []wire.Record, peer slog.Attr) {
	var entries []string
	for _, r := range reqs {
		if r.Status != wire.StatusOK || r.Result == wire.ResultCreated ||
			r.Result == wire.ResultMoved || r.Result == wire.ResultDeleted {
			entries = append(entries, fmt.Sprintf("%v %v dev=%s result=%v status=%v errno=%d",
				r.Op, r.Dst, r.Ifname, r.Result, r.Status, r.Errno))
		}
	}
	if len(entries) > 0 {
		s.Log.Info("route requests", peer, "records", strings.Join(entries, ", "))
	}
}

// batcher encodes records into messages of at most wire.MaxBatch.
type batcher struct {
	msgs [][]byte
	n    int
}

func (b *batcher) add(r wire.Record) {
	if b.n%wire.MaxBatch == 0 {
		b.msgs = append(b.msgs, nil)
	}
	last := len(b.msgs) - 1
	b.msgs[last] = r.Append(b.msgs[last])
	b.n++
}

// watcher is the peer that asked, last, to be told what changes.
type watcher struct {
	conn *net.UnixConn
	tag  uint32
}

// watch tells the peer to compare every route once (a resync event), makes
// it the watcher, replacing an older one, and holds the connection until
// the peer leaves or sends anything (it must not).
func (s *Server) watch(c *net.UnixConn, req wire.Record) {
	w := &watcher{conn: c, tag: req.Tag}
	s.mu.Lock()
	if s.watcher != nil {
		s.watcher.conn.Close()
	}
	s.watcher = w
	s.Routes.resync = true
	s.publish()
	s.mu.Unlock()
	c.SetDeadline(time.Time{})
	c.Read(make([]byte, 1))
	s.mu.Lock()
	if s.watcher == w {
		s.watcher = nil
	}
	s.mu.Unlock()
}

// publish tells the watcher what changed in the view: an event for each
// prefix, or a resync event when it must compare everything. It never
// queues, and waits at most a millisecond for each message: a watcher
// whose socket stays full is closed, and its next watch begins with a
// resync.
func (s *Server) publish() {
	w := s.watcher
	var out batcher
	switch {
	case w == nil:
	case s.Routes.resync || len(s.Routes.changed) > maxEvents:
		out.add(wire.Record{Op: wire.OpWatch, Tag: w.tag, Result: wire.ResultResync})
	default:
		for dst := range s.Routes.changed {
			out.add(wire.Record{Op: wire.OpWatch, Tag: w.tag, Dst: dst, Result: wire.ResultChanged})
		}
	}
	s.Routes.changed = map[netip.Prefix]bool{} // not clear: that would keep the room of the largest burst
	s.Routes.resync = false
	for _, msg := range out.msgs {
		w.conn.SetWriteDeadline(time.Now().Add(time.Millisecond))
		_, err := w.conn.Write(msg)
		if err != nil {
			w.conn.Close()
			return
		}
	}
}
