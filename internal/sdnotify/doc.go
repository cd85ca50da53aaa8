// Package sdnotify plays systemd's side of the notification protocol for
// the project's tests: a NOTIFY_SOCKET that records every datagram a
// service sends (READY=1, STATUS=, WATCHDOG=1, ...) with the sender's pid,
// as systemd reads it for NotifyAccess=main. It is never linked into the
// shipped binaries.
//
// It needs no privileges beyond creating a socket file; the socket is made
// writable by every uid so services under other uids can send to it.
package sdnotify
