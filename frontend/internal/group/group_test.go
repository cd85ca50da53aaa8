package group

import (
	"runtime"
	"slices"
	"sync"
	"testing"
)

// TestGroupsWhatQueues: items that arrive while a run is in flight share
// the next run, in the order they came; a lone item runs at once, alone.
func TestGroupsWhatQueues(t *testing.T) {
	var runs [][]int
	entered, release := make(chan struct{}), make(chan struct{})
	var g *Group[int]
	g = New(func(items []int) {
		runs = append(runs, slices.Clone(items))
		if len(runs) == 1 {
			entered <- struct{}{}
			<-release
		}
	})
	var wg sync.WaitGroup
	wg.Go(func() { g.Do(0) })
	<-entered // the first run is in flight
	for i := 1; i <= 5; i++ {
		wg.Go(func() { g.Do(i) })
	}
	for g.Waiting() < 5 { // wait until all five are queued behind it
		runtime.Gosched()
	}
	close(release)
	wg.Wait()
	g.Do(6)
	if len(runs) != 3 || !slices.Equal(runs[0], []int{0}) || len(runs[1]) != 5 || !slices.Equal(runs[2], []int{6}) {
		t.Fatalf("runs %v, want [0], then 1-5 together, then [6] alone", runs)
	}
	slices.Sort(runs[1])
	if !slices.Equal(runs[1], []int{1, 2, 3, 4, 5}) {
		t.Fatalf("second run %v", runs[1])
	}
}
