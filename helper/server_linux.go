package helper

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/quiltmesh/quilt-runtime/shared/policy"
	"github.com/quiltmesh/quilt-runtime/shared/wire"
)

// Server answers route requests from allowed peers.
type Server struct {
	mu        sync.Mutex // one message's route operations at a time
	Policy    policy.Policy
	Routes    *Routes
	AllowUIDs []uint32 // peers admitted by SO_PEERCRED uid
	Log       *slog.Logger
}

// Listen returns the SOCK_SEQPACKET socket systemd handed over (LISTEN_PID,
// LISTEN_FDS=1, fd 3), or else a new one at path with mode 0660, made so by
// the umask rather than by a chmod after the fact.
func Listen(path string) (*net.UnixListener, error) {
	if os.Getenv("LISTEN_PID") == fmt.Sprint(os.Getpid()) {
		f := os.NewFile(3, "systemd-socket")
		l, err := net.FileListener(f)
		f.Close()
		if ul, ok := l.(*net.UnixListener); ok && os.Getenv("LISTEN_FDS") == "1" && ul.Addr().Network() == "unixpacket" {
			return ul, nil
		}
		return nil, fmt.Errorf("socket activation: want LISTEN_FDS=1 and a Unix SOCK_SEQPACKET socket, got %q, %v (%v)", os.Getenv("LISTEN_FDS"), l, err)
	}
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		os.Remove(path) // left by a helper that was killed
	}
	defer unix.Umask(unix.Umask(0o117))
	return net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
}

// Limits: connections served at once (later ones wait in the listen
// backlog, so open descriptors stay bounded), and how long one may idle.
const maxConns, idleTimeout = 16, 30 * time.Second

// Serve accepts connections until l fails or is closed.
func (s *Server) Serve(l *net.UnixListener) error {
	slots := make(chan struct{}, maxConns)
	for {
		slots <- struct{}{}
		c, err := l.AcceptUnix()
		if err != nil {
			return err
		}
		go func() { s.serveConn(c); <-slots }()
	}
}

// serveConn checks the peer, then answers one request at a time until the
// peer leaves, idles out, or breaks framing (wrong size or version).
func (s *Server) serveConn(c *net.UnixConn) {
	defer c.Close()
	var cred *unix.Ucred
	raw, err := c.SyscallConn()
	if err == nil {
		raw.Control(func(fd uintptr) { cred, err = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) })
	}
	if err != nil || cred == nil {
		s.Log.Warn("refused connection: no peer credentials", "err", err)
		return
	}
	peer := slog.Group("peer", "pid", cred.Pid, "uid", cred.Uid, "gid", cred.Gid)
	if !slices.Contains(s.AllowUIDs, cred.Uid) {
		s.Log.Warn("refused connection: uid not allowed", peer)
		return
	}
	buf := make([]byte, wire.MaxBatch*wire.Size+1) // one spare byte shows an oversized message
	for {
		c.SetDeadline(time.Now().Add(idleTimeout))
		n, err := c.Read(buf)
		if err != nil {
			return
		}
		reqs, errs, err := wire.DecodeRequests(buf[:n])
		for _, msg := range s.handle(reqs, errs, peer) {
			if _, err := c.Write(msg); err != nil {
				return
			}
		}
		if err != nil {
			s.Log.Warn("closed connection: broken framing", peer, "err", err)
			return
		}
	}
}

// handle re-checks well-formed requests against the policy, carries them
// out, logs for audit every kernel change and every refusal (not the
// requests that found everything as asked: unchanged, absent), and
// returns the reply messages.
func (s *Server) handle(reqs []wire.Record, errs []error, peer slog.Attr) [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	if reqs[0].Op == wire.OpList && errs[0] == nil { // our routes, MaxBatch to a message, then done
		recs, err := s.Routes.List(reqs[0].Tag)
		var out [][]byte
		for i, r := range append(recs, reply(reqs[0], wire.ResultDone, err)) {
			if i%wire.MaxBatch == 0 {
				out = append(out, nil)
			}
			out[len(out)-1] = r.Append(out[len(out)-1])
		}
		return out
	}
	decoded := slices.Clone(errs) // malformed records are answered, not logged
	for i, req := range reqs {
		if errs[i] == nil && req.Op == wire.OpAdd {
			errs[i] = errors.Join(s.Policy.CheckPrefix(req.Dst), s.Policy.CheckInterface(req.Ifname))
		} else if errs[i] == nil && req.Op == wire.OpDelete {
			errs[i] = s.Policy.CheckPrefix(req.Dst)
		}
	}
	res := s.Routes.Apply(reqs, errs)
	out := make([]byte, 0, len(reqs)*wire.Size)
	for i, req := range reqs {
		rep := reply(req, res[i], errs[i])
		if out = rep.Append(out); decoded[i] == nil && req.Op != wire.OpHello && rep.Result != wire.ResultUnchanged && rep.Result != wire.ResultAbsent {
			s.Log.Info("route "+req.Op.String(), "dst", req.Dst, "dev", req.Ifname, peer, "result", rep.Result, "status", rep.Status, "errno", rep.Errno, "err", errs[i])
		}
	}
	return [][]byte{out}
}

// reply answers req with a result, or with the status code of err: only
// the code and the errno cross the boundary, the detail stays in our log.
func reply(req wire.Record, res wire.Result, err error) wire.Record {
	rep := wire.Record{Op: req.Op, Tag: req.Tag, Result: res}
	if err != nil {
		var errno unix.Errno
		rep.Result, rep.Status = 0, wire.StatusKernel
		if !errors.As(err, &rep.Status) && errors.As(err, &errno) {
			rep.Errno = uint32(errno)
		}
	}
	return rep
}
