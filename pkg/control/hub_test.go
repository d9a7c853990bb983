package control

import (
	"testing"

	"github.com/hms-node/hms-node/pkg/api"
)

func delta(rev int64) *api.Delta {
	return &api.Delta{Revision: rev, Changes: []*api.Change{{Key: "services/default/x"}}}
}

func TestHubRingAndFanOut(t *testing.T) {
	h := newHub(nil, testLogger())
	h.base, h.head = 9, 9
	for rev := int64(10); rev < 10+ringSize+5; rev++ {
		h.publish(delta(rev))
	}
	if h.base != 14 || h.head != 10+ringSize+4 {
		t.Fatalf("base %d head %d", h.base, h.head)
	}
	if _, _, ok := h.subscribe(13); ok {
		t.Fatal("subscribed from a revision the ring no longer covers")
	}
	sub, backlog, ok := h.subscribe(h.head - 3)
	if !ok || len(backlog) != 3 || backlog[0].Revision != h.head-2 {
		t.Fatalf("backlog %d deltas (ok %v)", len(backlog), ok)
	}
	// A subscriber ahead of the hub (it read etcd later) gets only newer ones.
	ahead, backlog, _ := h.subscribe(h.head + 2)
	if len(backlog) != 0 {
		t.Fatal("backlog for a subscriber ahead of the hub")
	}
	for i := int64(1); i <= 3; i++ {
		h.publish(delta(h.head + 1))
	}
	if d := <-ahead.ch; d.Revision != h.head {
		t.Fatalf("ahead subscriber got %d first, want %d", d.Revision, h.head)
	}
	// A subscriber that stops reading is cut loose; the others are not held up.
	for i := 0; i < subBuffer; i++ {
		h.publish(delta(h.head + 1))
		<-ahead.ch
	}
	if !closedAfterDrain(sub.ch) {
		t.Fatal("a stalled subscriber was not cut loose")
	}
	h.unsubscribe(ahead)
	if len(h.subs) != 0 {
		t.Fatalf("%d subscriptions left", len(h.subs))
	}
}

// closedAfterDrain reads ch until it is empty and reports whether it is closed.
func closedAfterDrain(ch chan *api.Delta) bool {
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return true
			}
		default:
			return false
		}
	}
}
