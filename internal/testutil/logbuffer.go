package testutil

import (
	"bytes"
	"io"
	"sync"
)

// LogBuffer keeps what a process writes while a test reads it; it is safe
// for concurrent use. If Tee is set, every write goes to it too (a log
// file, for people), and a failure there is ignored: the buffer is what
// the checks read.
type LogBuffer struct {
	Tee io.Writer
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.Tee != nil {
		b.Tee.Write(p)
	}
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *LogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Len is how many bytes have been written so far.
func (b *LogBuffer) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Len()
}
