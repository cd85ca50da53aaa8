package helper

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"syscall"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/quiltmesh/quilt-runtime/shared/policy"
	"github.com/quiltmesh/quilt-runtime/shared/wire"
)

// Routes is the helper's hold on table main: its view of the table, an
// rtnetlink socket for requests and dumps, and one joined to the IPv4
// route and link notification groups that keeps the view current. It is
// not safe for concurrent use: the server calls it under its lock.
type Routes struct {
	*view
	requests *netlink.Conn   // requests and dumps
	events   *netlink.Conn   // notifications
	raw      syscall.RawConn // events' descriptor, read without blocking
	buf      [64 << 10]byte
}

// receiveBuffer is the size of both sockets' receive buffers: room for
// the answers to a whole batch, all queued before the first is read, and
// for the notifications that arrive while a request is served. Past that
// the kernel drops notifications and says so (ENOBUFS): the view is then
// rebuilt.
const receiveBuffer = 8 << 20

// OpenRoutes joins the notification groups, then builds the view from
// dumps, so no change can fall between the two. A failure leaves the
// sockets to the process's exit.
func OpenRoutes(p policy.Policy) (*Routes, error) {
	events, err := open(&netlink.Config{Groups: 1<<(unix.RTNLGRP_IPV4_ROUTE-1) | 1<<(unix.RTNLGRP_LINK-1)})
	if err != nil {
		return nil, err
	}
	r := &Routes{view: newView(p), events: events}
	r.raw, err = events.SyscallConn()
	if err != nil {
		return nil, err
	}
	if err := r.reopen(); err != nil {
		return nil, err
	}
	if err := r.rebuild(); err != nil {
		return nil, err
	}
	return r, nil
}

// open dials rtnetlink with a receive buffer past the system's limit
// (SO_RCVBUFFORCE, which CAP_NET_ADMIN allows).
func open(config *netlink.Config) (*netlink.Conn, error) {
	c, err := netlink.Dial(unix.NETLINK_ROUTE, config)
	if err != nil {
		return nil, err
	}
	if err := c.SetReadBuffer(receiveBuffer); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// Apply carries out a batch of adds and deletes in order, each deciding
// on the view as the records before it left it (view.plan), and answers
// each in place: its Status, Result and, for a kernel refusal, Errno.
// Records answered already (malformed) are skipped. Records for distinct
// prefixes go to the kernel together, in one round; a prefix named again
// starts the next round. The error is what went wrong beyond a record's
// own refusal: the view could not be rebuilt, or the socket broke.
func (r *Routes) Apply(reqs []wire.Record) error {
	var err error
	var round []int
	for i := range reqs {
		if reqs[i].Status != wire.StatusOK {
			continue
		}
		if slices.ContainsFunc(round, func(j int) bool { return reqs[j].Dst == reqs[i].Dst }) {
			err = cmp.Or(err, r.run(round, reqs))
			round = nil
		}
		round = append(round, i)
	}
	return cmp.Or(err, r.run(round, reqs))
}

// run carries out one round of records for distinct prefixes. The view
// first catches up with the kernel. Then creates, appends and plain
// deletes go to the kernel in one sendmsg, and the deletes that complete
// a move follow in a second, only for moves whose new route the kernel
// accepted, so no prefix is ever left without a route of ours.
func (r *Routes) run(round []int, reqs []wire.Record) error {
	if err := r.sync(); err != nil {
		for _, i := range round {
			fail(&reqs[i], err)
		}
		return err
	}
	var first, then []step
	for _, i := range round {
		now, later := r.plan(i, &reqs[i])
		first = append(first, now...)
		then = append(then, later...)
	}
	err := r.send(first, reqs)
	then = slices.DeleteFunc(then, func(s step) bool { return reqs[s.record].Status != wire.StatusOK })
	return cmp.Or(err, r.send(then, reqs))
}

// send sends the steps in one sendmsg, of which only the last asks for an
// ack: the kernel carries out a sendmsg's requests in order and answers
// each refusal, so when the last step's answer has come, every refusal
// has. A refusal fails its step's record, and marks the view stale in case
// it was wrong. If the socket fails, no step is known to have succeeded:
// every one fails, and the socket is replaced, its unread answers with it.
func (r *Routes) send(steps []step, reqs []wire.Record) error {
	if len(steps) == 0 {
		return nil
	}
	var msgs []netlink.Message
	for _, s := range steps {
		msgs = append(msgs, s.msg)
	}
	msgs[len(msgs)-1].Header.Flags |= netlink.Acknowledge
	sent, err := r.requests.SendMessages(msgs)
	answers := map[uint32]error{} // by sequence number: nil for an ack, or a refusal's errno
	for err == nil {
		var got []netlink.Message
		got, err = r.requests.Receive()
		var oe *netlink.OpError
		switch {
		case errors.As(err, &oe) && oe.Sequence != 0: // a refusal; a failure of the socket has no number
			answers[oe.Sequence] = oe.Err
			err = nil
		case err == nil && len(got) != 1:
			err = errors.New("not one answer")
		case err == nil:
			answers[got[0].Header.Sequence] = nil
		}
		if _, done := answers[sent[len(sent)-1].Header.Sequence]; done {
			break
		}
	}
	for k, s := range steps {
		failure := err // then no answer can be trusted
		if err == nil {
			failure = answers[sent[k].Header.Sequence]
		}
		if failure != nil {
			fail(&reqs[s.record], failure)
			r.stale = true
		}
	}
	if err != nil {
		r.reopen()
	}
	return err
}

// fail answers req with a kernel refusal: its errno, if it has one, is
// all that crosses the boundary.
func fail(req *wire.Record, err error) {
	req.Status = wire.StatusKernel
	req.Result = wire.ResultNone
	var errno unix.Errno
	if errors.As(err, &errno) {
		req.Errno = uint32(errno)
	}
}

// List rebuilds the view, the backstop against any drift, hands each
// route of ours to each as a list record, and answers req with the end
// of the list (ResultDone), or a failure.
func (r *Routes) List(req *wire.Record, each func(wire.Record)) error {
	req.Result = wire.ResultDone
	err := r.rebuild()
	if err != nil {
		fail(req, err)
		return err
	}
	for dst, here := range r.routes {
		for _, rt := range here {
			if rt.ours() {
				each(wire.Record{Op: wire.OpList, Result: wire.ResultRoute, Tag: req.Tag, Dst: dst,
					Ifname: r.links[rt.oif]})
			}
		}
	}
	return nil
}

// sync applies every queued notification, then rebuilds a stale view and
// has the watcher compare every route.
func (r *Routes) sync() error {
	r.drain()
	if !r.stale {
		return nil
	}
	r.resync = true
	return r.rebuild()
}

// drain applies every notification queued on the events socket, without
// blocking. The kernel queues a change's notification before it answers
// the request that made it, so after drain the view holds every change
// the kernel made before drain began.
func (r *Routes) drain() {
	err := r.raw.Control(func(fd uintptr) {
		for {
			n, _, err := unix.Recvfrom(int(fd), r.buf[:], unix.MSG_DONTWAIT)
			if errors.Is(err, unix.EAGAIN) {
				return
			}
			if err != nil {
				r.stale = true // ENOBUFS: notifications were lost; the rebuild drains the rest
				return
			}
			var m netlink.Message
			err = m.UnmarshalBinary(r.buf[:n])
			if err != nil || int(m.Header.Length) != n {
				r.stale = true // the kernel sends one message per notification
				continue
			}
			r.handle(m)
		}
	})
	if err != nil {
		r.stale = true
	}
}

// rebuild replaces the view's links and routes with the kernel's, from two
// dumps. Notifications queued meanwhile are applied after it; each is
// idempotent, so those the dumps already saw change nothing. Routes via a
// link that is down are left out: the kernel is removing them, without
// notifications. The dumps answer the helper's own socket, so nothing in
// them is news for the watcher.
func (r *Routes) rebuild() error {
	r.drain()
	clear(r.routes)
	clear(r.links)
	clear(r.index)
	r.stale = false
	routes, _ := binary.Append(nil, binary.NativeEndian, unix.RtMsg{Family: unix.AF_INET, Table: unix.RT_TABLE_MAIN})
	err := r.dump(unix.RTM_GETLINK, make([]byte, unix.SizeofIfInfomsg))
	if err == nil {
		err = r.dump(unix.RTM_GETROUTE, routes) // under strict checking, Table filters
	}
	if err == nil && r.stale {
		err = errors.New("a message the helper cannot read")
	}
	if err != nil {
		r.stale = true
		r.reopen() // and the rest of the dump with it
		return fmt.Errorf("dump: %w", err)
	}
	r.dropDown()
	return nil
}

// dump sends a dump request and applies every message of the answer. On
// a failure the rest of the answer is left unread: the caller replaces the
// socket.
func (r *Routes) dump(typ netlink.HeaderType, data []byte) error {
	_, err := r.requests.Send(netlink.Message{
		Header: netlink.Header{Type: typ, Flags: netlink.Request | netlink.Dump},
		Data:   data,
	})
	if err != nil {
		return err
	}
	for m, err := range r.requests.ReceiveIter() {
		if err != nil {
			return err
		}
		r.handle(m)
	}
	return nil
}

// reopen replaces the request socket, and its unread answers with it: in
// strict mode, so the kernel filters dumps by table and explains its
// refusals. If that fails, the closed socket fails the next request, which
// tries again.
func (r *Routes) reopen() error {
	if r.requests != nil {
		r.requests.Close()
	}
	c, err := open(&netlink.Config{Strict: true})
	if err != nil {
		return err
	}
	r.requests = c
	r.self = c.PID()
	return nil
}
