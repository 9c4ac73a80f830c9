package bench

import (
	"sync"
	"time"
)

// afterRestart stops every etcd member and starts them again (data kept),
// then writes markers: how long from etcd being healthy until each
// observer programmed them.
func (p *simPoint) afterRestart() {
	t := p.t
	before := p.relists()
	p.etcd.stop(t)
	time.Sleep(time.Second)
	p.etcd.start(t)
	back := time.Now()
	macs := p.markers("restart")
	for i, ob := range p.obs {
		r := &p.res.Observers[i]
		at, err := waitMarkers(ob, macs[i])
		if err != nil {
			r.RelistTimedOut = true
			t.Log(err)
			continue
		}
		r.RestartBackMs = ms(at.Sub(back))
		r.RestartRelists = countSince(ob.relists(), before[i])
		t.Logf("%s: current %.0f ms after etcd's restart (%d re-lists logged)", ob.name, r.RestartBackMs, r.RestartRelists)
	}
	p.settle()
}

// afterCompaction cuts each observer off etcd (underlay down, its
// connections killed), writes markers, compacts etcd past them and brings
// the underlay back: the observer's watch resumes from a compacted
// revision and must list everything again.
func (p *simPoint) afterCompaction() {
	t := p.t
	before := p.relists()
	for _, ob := range p.obs {
		if err := ob.setUnderlay(false, p.ul.IP); err != nil {
			t.Fatal(err)
		}
	}
	macs := p.markers("compact")
	if _, err := p.etcd.compact(); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	for _, ob := range p.obs {
		if err := ob.setUnderlay(true, p.ul.IP); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	for i, ob := range p.obs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := &p.res.Observers[i]
			if at, err := ob.waitConnected(p.ul.IP, relistWait); err == nil {
				r.CompactReconnMs = ms(at.Sub(back))
			}
			at, err := waitMarkers(ob, macs[i])
			if err != nil {
				r.RelistTimedOut = true
				t.Log(err)
				return
			}
			r.CompactBackMs = ms(at.Sub(back))
			r.CompactRelists = countSince(ob.relists(), before[i])
		}()
	}
	wg.Wait()
	for i, ob := range p.obs {
		r := p.res.Observers[i]
		t.Logf("%s: reconnected %.0f ms after its underlay came back, current at %.0f ms (%d re-lists logged)",
			ob.name, r.CompactReconnMs, r.CompactBackMs, r.CompactRelists)
	}
	p.settle()
}

func (p *simPoint) relists() []int {
	out := make([]int, len(p.obs))
	for i, ob := range p.obs {
		out[i] = ob.relists()
	}
	return out
}

// countSince is now-before, or -1 when either was not counted.
func countSince(now, before int) int {
	if now < 0 || before < 0 {
		return -1
	}
	return now - before
}
