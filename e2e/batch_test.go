package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/quiltmesh/quilt-runtime/internal/testutil"
	"github.com/quiltmesh/quilt-runtime/shared/wire"
)

// sendBatch sends one message of records and returns its answers.
func sendBatch(t *testing.T, c *net.UnixConn, reqs []wire.Record) []wire.Record {
	t.Helper()
	var msg []byte
	for _, r := range reqs {
		msg = r.Append(msg)
	}
	recs, err := exchange(c, msg)
	if err != nil || len(recs) != len(reqs) {
		t.Fatalf("batch of %d: %d answers, %v", len(reqs), len(recs), err)
	}
	return recs
}

// TestHostileBatches sends the helper batches a compromised frontend
// might: the same prefix twice, delete then add, add then delete, moves
// back and forth, and 256-record batches mixing all of them over prefixes
// with foreign routes, while another route manager adds and deletes its
// own routes at some of the same prefixes with iproute2. Every answer is
// the one the ownership rules give for the records before it; the foreign
// routes are byte for byte as they were; the other manager never finds a
// route of its own gone; and no prefix is left with two routes of ours.
func TestHostileBatches(t *testing.T) {
	ns := newNetns(t, "vxlan100", "vxlan101")
	addVeth(t, ns, "eth1")
	_, sock := startHelper(t, ns, os.Getuid(), "--allowed-interface", "vxlan100", "--allowed-interface", "vxlan101")
	c := dialHelper(t, sock)
	at := func(n int) netip.Prefix { return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 42, byte(n), 0}), 24) }

	// Foreign routes that must not change: at 10.42.10-29.0/24, of every
	// kind, in front of, behind and beside routes of ours.
	models := map[netip.Prefix]*model{}
	for i := range 40 {
		models[at(i+10)] = &model{}
	}
	fixed := [][]string{}
	for i := 10; i < 30; i++ {
		dst := at(i).String()
		switch i % 4 {
		case 0:
			fixed = append(fixed, []string{"route", "add", dst, "dev", "eth1", "proto", "static"})
		case 1:
			fixed = append(fixed, []string{"route", "add", dst, "dev", "eth1", "proto", "static", "metric", "100"})
		case 2:
			fixed = append(fixed, []string{"route", "add", "blackhole", dst, "metric", "20"})
		case 3:
			fixed = append(fixed, []string{"route", "add", dst, "dev", "vxlan100", "proto", "81"},
				[]string{"route", "append", dst, "dev", "eth1", "proto", "static"})
			models[at(i)].ours = []string{"vxlan100"}
		}
		models[at(i)].foreign = true
	}
	for _, args := range fixed {
		testutil.Run(t, "ip", append([]string{"-n", ns}, args...)...)
	}
	foreign := func() string {
		return testutil.Run(t, "ip", "-n", ns, "-4", "route", "show", "table", "all")
	}
	notOurs := func() string {
		var kept []string
		for line := range strings.Lines(foreign()) {
			if !strings.Contains(line, " proto 81 ") {
				kept = append(kept, line)
			}
		}
		return strings.Join(kept, "")
	}
	before := notOurs()

	// The handwritten batches, each answered as the records before it left
	// the prefix.
	add := func(n int, ifname string) wire.Record {
		return wire.Record{Op: wire.OpAdd, Tag: uint32(n), Dst: at(n), Ifname: ifname}
	}
	del := func(n int) wire.Record { return wire.Record{Op: wire.OpDelete, Tag: uint32(n), Dst: at(n)} }
	check := func(name string, reqs []wire.Record) {
		t.Helper()
		got := sendBatch(t, c, reqs)
		for i, r := range reqs {
			m := models[r.Dst]
			st, res := m.apply(step{r.Op, r.Ifname})
			if got[i].Status != st || got[i].Result != res || got[i].Tag != r.Tag {
				t.Fatalf("%s, record %d (%v %v %s): %v %v, want %v %v", name, i, r.Op, r.Dst, r.Ifname, got[i].Status, got[i].Result, st, res)
			}
		}
	}
	check("the same prefix twice", []wire.Record{add(30, "vxlan100"), add(30, "vxlan100")})
	check("add then delete", []wire.Record{add(31, "vxlan100"), del(31)})
	check("moves back and forth", []wire.Record{add(32, "vxlan100"), add(32, "vxlan101"), add(32, "vxlan100"), add(32, "vxlan101")})
	check("delete then add, a foreign route behind ours", []wire.Record{del(13), add(13, "vxlan101")})
	check("delete then add, nothing else there", []wire.Record{del(32), add(32, "vxlan100"), del(32), del(32)})

	// Another route manager, meanwhile: it adds its own routes at metric
	// 300 at 10.42.40-49.0/24 and at some of the prefixes above, and
	// deletes them again; if the helper ever removed one of them, its
	// delete would fail.
	ctx, stop := context.WithCancel(context.Background())
	other := make(chan error, 1)
	go func() {
		var script strings.Builder
		for _, n := range []int{40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 12, 17, 30, 33} {
			fmt.Fprintf(&script, "route add %v dev eth1 proto boot metric 300\n", at(n))
		}
		for _, n := range []int{40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 12, 17, 30, 33} {
			fmt.Fprintf(&script, "route del %v dev eth1 proto boot metric 300\n", at(n))
		}
		rounds := 0
		for ctx.Err() == nil {
			cmd := exec.Command("ip", "-n", ns, "-batch", "-")
			cmd.Stdin = strings.NewReader(script.String())
			if out, err := cmd.CombinedOutput(); err != nil {
				other <- fmt.Errorf("the other route manager, round %d: %v\n%s", rounds, err, out)
				return
			}
			rounds++
		}
		other <- nil
		t.Logf("the other route manager ran %d rounds", rounds)
	}()

	// 256-record batches over all of these prefixes, at random.
	rng := rand.New(rand.NewPCG(1, 1))
	for b := range 150 {
		var reqs []wire.Record
		for range wire.MaxBatch {
			n := 10 + rng.IntN(40)
			switch rng.IntN(3) {
			case 0:
				reqs = append(reqs, add(n, "vxlan100"))
			case 1:
				reqs = append(reqs, add(n, "vxlan101"))
			default:
				reqs = append(reqs, del(n))
			}
		}
		got := sendBatch(t, c, reqs)
		for i, r := range reqs {
			m := models[r.Dst]
			st, res := m.apply(step{r.Op, r.Ifname})
			if n := r.Dst.Addr().As4()[2]; n >= 40 || n == 12 || n == 17 || n == 30 || n == 33 {
				continue // the other manager's routes come and go: no answer to predict
			}
			if got[i].Status != st || got[i].Result != res {
				t.Fatalf("batch %d, record %d (%v %v %s): %v %v, want %v %v", b, i, r.Op, r.Dst, r.Ifname, got[i].Status, got[i].Result, st, res)
			}
		}
	}
	stop()
	if err := <-other; err != nil {
		t.Fatal(err)
	}
	if after := notOurs(); after != before {
		t.Fatalf("routes that are not ours changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	for line := range strings.Lines(testutil.Run(t, "ip", "-n", ns, "-4", "route", "show", "proto", "81")) {
		dst := strings.Fields(line)[0]
		if strings.Count(foreign(), dst+" dev vxlan") > 1 {
			t.Fatalf("two routes of ours at %s:\n%s", dst, foreign())
		}
	}
}
