package control

import (
	"context"
	"sync"
)

// sharedReads lets streams that need a snapshot at the same moment share
// one read of the whole registry: after a control-plane restart every
// agent reconnects at once, and a read and decode of 100k keys per stream
// is what kept a connect storm from ever settling.
type sharedReads struct {
	mu   sync.Mutex // guards call
	call *readCall
}

type readCall struct {
	done chan struct{}
	v    *view
	err  error
}

// read returns a consistent view of the registry, joining a read already
// in flight. A joined view may predate the call by one read; that is safe
// because the stream then sends every delta after the view's revision.
func (r *sharedReads) read(ctx context.Context, st *store) (*view, error) {
	r.mu.Lock()
	if c := r.call; c != nil {
		r.mu.Unlock()
		select {
		case <-c.done:
			return c.v, c.err
		case <-ctx.Done():
			return nil, ctxErr(ctx)
		}
	}
	c := &readCall{done: make(chan struct{})}
	r.call = c
	r.mu.Unlock()
	// Not the caller's context: others wait on this read too.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), st.timeout)
	c.v, c.err = st.readAll(rctx)
	cancel()
	r.mu.Lock()
	r.call = nil
	r.mu.Unlock()
	close(c.done)
	return c.v, c.err
}
