package sdnotify

import (
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Notice is one datagram a service sent.
type Notice struct {
	At   time.Time
	Pid  int32 // the sender, from SCM_CREDENTIALS
	Text string
}

// Status returns the notice's STATUS= value, or "".
func (n Notice) Status() string {
	for _, line := range strings.Split(n.Text, "\n") {
		if s, ok := strings.CutPrefix(line, "STATUS="); ok {
			return s
		}
	}
	return ""
}

// Socket is a NOTIFY_SOCKET: a unixgram socket with SO_PASSCRED that
// collects what arrives until it is closed.
type Socket struct {
	Path string
	conn *net.UnixConn
	mu   sync.Mutex
	got  []Notice
}

// Listen binds a notification socket at path, sendable by every uid.
func Listen(path string) (*Socket, error) {
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return nil, err
	}
	err = os.Chmod(path, 0o777)
	if err == nil {
		var rc interface{ Control(func(uintptr)) error }
		rc, err = c.SyscallConn()
		if err == nil {
			rc.Control(func(fd uintptr) { err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1) })
		}
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	s := &Socket{Path: path, conn: c}
	go s.read()
	return s, nil
}

func (s *Socket) read() {
	buf, oob := make([]byte, 4096), make([]byte, 1024)
	for {
		k, oobn, _, _, err := s.conn.ReadMsgUnix(buf, oob)
		if err != nil {
			return
		}
		n := Notice{At: time.Now(), Text: string(buf[:k])}
		if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil && len(msgs) > 0 {
			if cred, err := unix.ParseUnixCredentials(&msgs[0]); err == nil {
				n.Pid = cred.Pid
			}
		}
		s.mu.Lock()
		s.got = append(s.got, n)
		s.mu.Unlock()
	}
}

// Close stops collecting.
func (s *Socket) Close() error { return s.conn.Close() }

// All returns the datagrams received so far, in order.
func (s *Socket) All() []Notice {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.got)
}

// With returns the datagrams holding the assignment kv as a whole line,
// such as "READY=1".
func (s *Socket) With(kv string) []Notice {
	var out []Notice
	for _, n := range s.All() {
		if slices.Contains(strings.Split(n.Text, "\n"), kv) {
			out = append(out, n)
		}
	}
	return out
}

// Last returns the last datagram received, if any.
func (s *Socket) Last() (Notice, bool) {
	all := s.All()
	if len(all) == 0 {
		return Notice{}, false
	}
	return all[len(all)-1], true
}
