// Package group runs work in groups: while one run is in flight, the items
// that arrive wait, and the next run takes all of them at once. A lone
// item runs at once, so nobody waits for company; under load each run
// costs its fixed price (an fsync, a round trip to the route helper) once
// for everything that queued behind the one before.
//
// It needs no privileges and has no knobs.
package group

import "sync"

// Group runs items through its run function, many to a run, one run at a
// time. The zero value is not usable: make one with New.
type Group[T any] struct {
	run func([]T)

	mu    sync.Mutex
	queue []waiter[T]
	busy  bool // a run is in flight, or about to start
}

// waiter is a queued item and how its caller hears back: false when
// another caller's run has done it, true when it is to run the next group
// itself.
type waiter[T any] struct {
	item T
	done chan bool
}

// New returns a group whose runs call run with the items gathered, in the
// order they arrived. run must not call Do on the same group.
func New[T any](run func([]T)) *Group[T] { return &Group[T]{run: run} }

// Waiting returns how many items wait for the next run.
func (g *Group[T]) Waiting() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.queue)
}

// Do has item run, together with whatever else is queued when its run
// starts, and returns once that run has finished. The caller that finds
// no run in flight runs the group itself; when its run ends, the first
// caller queued meanwhile runs the next, so no caller runs more than one.
func (g *Group[T]) Do(item T) {
	w := waiter[T]{item: item, done: make(chan bool, 1)}
	g.mu.Lock()
	g.queue = append(g.queue, w)
	lead := !g.busy
	g.busy = true
	g.mu.Unlock()
	if !lead && !<-w.done {
		return
	}
	g.mu.Lock()
	batch := g.queue
	g.queue = nil
	g.mu.Unlock()
	items := make([]T, len(batch))
	for i, b := range batch {
		items[i] = b.item
	}
	g.run(items)
	for _, b := range batch {
		if b.done != w.done {
			b.done <- false
		}
	}
	g.mu.Lock()
	if len(g.queue) > 0 {
		g.queue[0].done <- true
	} else {
		g.busy = false
	}
	g.mu.Unlock()
}
