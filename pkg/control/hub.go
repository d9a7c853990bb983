package control

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/hms-node/hms-node/pkg/api"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

const (
	// ringSize is how many recent revisions a replica keeps decoded, so a
	// reconnecting agent resumes with deltas instead of a snapshot.
	ringSize = 4096
	// subBuffer is how many deltas a stream may fall behind before it is
	// cut loose and re-synced with a snapshot (it never blocks the others).
	subBuffer = 1024
)

// hub is the one etcd watch of a replica: it decodes every revision once
// into a Delta, keeps the recent ones in a ring and fans them out to the
// agent streams.
type hub struct {
	cli *clientv3.Client
	log *slog.Logger
	// observe, when set, sees every delta the watch decodes (replays
	// included) before the streams do; it feeds the revocation set.
	observe func(*api.Delta)
	// resync, when set, is called after history was compacted past the
	// watch (observe missed changes): it reloads what observe feeds.
	resync func()

	// mu guards the fields below.
	mu   sync.Mutex
	ring []*api.Delta // recent deltas, oldest first, revisions increasing
	// base: every change with a revision in (base, head] is in ring.
	base, head int64
	subs       map[*subscription]struct{}
}

// subscription is one stream's feed of deltas. ch is closed when the
// stream fell behind (or the hub lost history); it must re-sync.
type subscription struct {
	ch    chan *api.Delta
	after int64 // only deltas after this revision are sent
}

func newHub(cli *clientv3.Client, log *slog.Logger) *hub {
	return &hub{cli: cli, log: log, subs: map[*subscription]struct{}{}}
}

// start primes the ring: it watches from up to ringSize revisions back, so
// agents that saw a revision before this replica started can resume.
func (h *hub) start(ctx context.Context, timeout time.Duration) (int64, error) {
	octx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	resp, err := h.cli.Get(octx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return 0, err
	}
	from := max(1, resp.Header.Revision-ringSize+1)
	h.mu.Lock()
	h.base, h.head = from-1, from-1
	h.mu.Unlock()
	return from, nil
}

// run watches the registry prefix from revision from until ctx ends. An
// outage (etcd lost its leader, every member down) is logged once, then
// re-watched with backoff from where the hub stopped.
func (h *hub) run(ctx context.Context, from int64) error {
	backoff, failing := 200*time.Millisecond, false
	for ctx.Err() == nil {
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		next, err := h.watch(wctx, from, func() {
			if failing {
				h.log.Info("registry watch recovered", "revision", from)
				failing, backoff = false, 200*time.Millisecond
			}
		})
		cancel()
		from = next
		if err != nil && !failing && ctx.Err() == nil {
			h.log.Warn("registry watch failed; re-watching until etcd is back", "err", err)
			failing = true
		}
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		if failing {
			backoff = min(2*backoff, 2*time.Second)
		}
	}
	return nil
}

// watch consumes one watch; it returns the revision to watch from next.
// ok is called on every healthy response.
func (h *hub) watch(ctx context.Context, from int64, ok func()) (int64, error) {
	wch := h.cli.Watch(ctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(from), clientv3.WithPrevKV(), clientv3.WithCreatedNotify())
	for resp := range wch {
		if resp.CompactRevision > 0 {
			h.log.Warn("registry history compacted past the watch; re-syncing agents",
				"from", from, "compacted", resp.CompactRevision)
			h.reset(resp.CompactRevision - 1)
			if h.resync != nil {
				h.resync()
			}
			return resp.CompactRevision, nil
		}
		if err := resp.Err(); err != nil {
			return from, err
		}
		ok()
		for _, d := range h.decode(resp.Events) {
			if h.observe != nil {
				h.observe(d)
			}
			h.publish(d)
			from = d.Revision + 1
		}
	}
	return from, ctx.Err()
}

// decode groups events by revision (one transaction = one revision).
func (h *hub) decode(evs []*clientv3.Event) []*api.Delta {
	var out []*api.Delta
	for _, ev := range evs {
		rev := ev.Kv.ModRevision
		if n := len(out); n == 0 || out[n-1].Revision != rev {
			out = append(out, &api.Delta{Revision: rev})
		}
		c, err := h.change(ev)
		if err != nil {
			h.log.Warn("skipping undecodable registry change", "key", string(ev.Kv.Key), "err", err)
			continue
		}
		if c != nil {
			d := out[len(out)-1]
			d.Changes = append(d.Changes, c)
		}
	}
	return out
}

func (h *hub) change(ev *clientv3.Event) (*api.Change, error) {
	if ev.Type == mvccpb.PUT {
		return decodeChange(string(ev.Kv.Key), ev.Kv.Value, ev.Kv.ModRevision)
	}
	// A deletion carries the object as it was, so agents know what left.
	var c *api.Change
	var err error
	if ev.PrevKv != nil {
		c, err = decodeChange(string(ev.Kv.Key), ev.PrevKv.Value, ev.PrevKv.ModRevision)
	} else {
		c, err = decodeChange(string(ev.Kv.Key), nil, 0)
	}
	if c != nil {
		c.Deleted = true
	}
	return c, err
}

// publish appends d to the ring and hands it to every subscription; one
// that cannot take it is cut loose.
func (h *hub) publish(d *api.Delta) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if d.Revision <= h.head {
		return // a re-watch replayed it
	}
	h.head = d.Revision
	if len(d.Changes) > 0 {
		if len(h.ring) == ringSize {
			h.base = h.ring[0].Revision
			h.ring[0] = nil
			h.ring = h.ring[1:]
		}
		h.ring = append(h.ring, d)
	}
	if len(d.Changes) == 0 {
		return
	}
	for sub := range h.subs {
		if d.Revision <= sub.after {
			continue
		}
		select {
		case sub.ch <- d:
		default:
			h.dropLocked(sub)
		}
	}
}

// reset forgets all history up to rev and re-syncs every subscription.
func (h *hub) reset(rev int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ring, h.base, h.head = nil, rev, rev
	for sub := range h.subs {
		h.dropLocked(sub)
	}
}

func (h *hub) dropLocked(sub *subscription) {
	delete(h.subs, sub)
	close(sub.ch)
}

// subscribe returns the deltas after revision after that the ring holds and
// a subscription for the later ones, or ok=false when the ring no longer
// covers after (the caller then sends a snapshot).
func (h *hub) subscribe(after int64) (sub *subscription, backlog []*api.Delta, ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if after < h.base {
		return nil, nil, false
	}
	for _, d := range h.ring {
		if d.Revision > after {
			backlog = append(backlog, d)
		}
	}
	sub = &subscription{ch: make(chan *api.Delta, subBuffer), after: max(after, h.head)}
	h.subs[sub] = struct{}{}
	return sub, backlog, true
}

// unsubscribe ends sub (a no-op if the hub already dropped it).
func (h *hub) unsubscribe(sub *subscription) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.subs[sub]; ok {
		h.dropLocked(sub)
	}
}
