package mtls

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// Backoff bounds for failed renewals: the first retry comes soon, later ones
// are spaced out, and none waits past a quarter of what remains of the
// current certificate's life, so retries stay well before expiry.
const (
	retryMin      = 500 * time.Millisecond
	retryMax      = 30 * time.Second
	retryFloorGap = 50 * time.Millisecond
)

// Rotator keeps a certificate for ID fresh: a new key and certificate at
// half-life, swapped in atomically, so the old certificate serves until the
// new one is in and no instant is left without a valid certificate.
// Established connections are unaffected; new handshakes get the new one.
type Rotator struct {
	// ID is the SPIFFE ID to request.
	ID string
	// Issue obtains a certificate chain (PEM, leaf first) for a DER CSR,
	// e.g. over the control-plane API or straight from a CA.
	Issue func(ctx context.Context, csrDER []byte) (chainPEM []byte, err error)
	// OnRotate, when set, is called after each renewal has been swapped in
	// (not for the first certificate), e.g. to retire pooled connections.
	OnRotate func(old, new *x509.Certificate)
	// Log receives renewals and failures; nil discards.
	Log *slog.Logger

	cur     atomic.Pointer[tls.Certificate]
	started atomic.Bool
	wg      sync.WaitGroup
}

// Start obtains the first certificate synchronously, returning its error,
// then renews in a goroutine until ctx ends. Wait joins that goroutine.
func (r *Rotator) Start(ctx context.Context) error {
	if r.Issue == nil {
		return errors.New("rotator: Issue is nil")
	}
	if _, err := ParseID(r.ID); err != nil {
		return fmt.Errorf("rotator: %w", err)
	}
	if !r.started.CompareAndSwap(false, true) {
		return errors.New("rotator: already started")
	}
	c, err := r.obtain(ctx)
	if err != nil {
		r.started.Store(false)
		return fmt.Errorf("rotator %s: first certificate: %w", r.ID, err)
	}
	r.cur.Store(c)
	r.log().Info("certificate issued", "id", r.ID, "serial", serialHex(c.Leaf), "not_after", c.Leaf.NotAfter)
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		r.renewLoop(ctx, time.Now())
	}()
	return nil
}

// Wait blocks until the renewal goroutine has exited (after Start's ctx
// ends). It returns at once if Start never succeeded.
func (r *Rotator) Wait() { r.wg.Wait() }

// Certificate returns the current certificate, or nil before Start. It is
// safe for concurrent use.
func (r *Rotator) Certificate() *tls.Certificate { return r.cur.Load() }

// Leaf returns the current certificate's parsed leaf, or nil before Start.
func (r *Rotator) Leaf() *x509.Certificate {
	if c := r.cur.Load(); c != nil {
		return c.Leaf
	}
	return nil
}

// GetCertificate serves the current certificate to tls.Config.
func (r *Rotator) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return r.current()
}

// GetClientCertificate presents the current certificate from tls.Config.
func (r *Rotator) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return r.current()
}

func (r *Rotator) current() (*tls.Certificate, error) {
	c := r.cur.Load()
	if c == nil {
		return nil, fmt.Errorf("rotator %s: no certificate yet", r.ID)
	}
	return c, nil
}

// renewLoop renews at half of the remaining life measured from when the
// current certificate arrived (NotBefore is backdated for skew, so it would
// skew the half-life too).
func (r *Rotator) renewLoop(ctx context.Context, got time.Time) {
	backoff := retryMin
	for {
		leaf := r.cur.Load().Leaf
		wait := leaf.NotAfter.Sub(got) / 2
		wait -= time.Since(got)
		if !r.sleep(ctx, wait) {
			return
		}
		for {
			c, err := r.obtain(ctx)
			if err == nil {
				old := r.cur.Swap(c)
				got, backoff = time.Now(), retryMin
				r.log().Info("certificate rotated", "id", r.ID, "old_serial", serialHex(old.Leaf),
					"new_serial", serialHex(c.Leaf), "not_after", c.Leaf.NotAfter)
				if r.OnRotate != nil {
					r.OnRotate(old.Leaf, c.Leaf)
				}
				break
			}
			if ctx.Err() != nil {
				return
			}
			d := retryDelay(backoff, time.Until(leaf.NotAfter))
			backoff = min(backoff*2, retryMax)
			r.log().Warn("certificate renewal failed; retrying", "id", r.ID, "err", err,
				"retry_in", d, "expires_in", time.Until(leaf.NotAfter).Round(time.Millisecond))
			if !r.sleep(ctx, d) {
				return
			}
		}
	}
}

// retryDelay jitters backoff and keeps it within a quarter of the time left.
func retryDelay(backoff, left time.Duration) time.Duration {
	d := backoff/2 + rand.N(backoff/2+1)
	if q := left / 4; d > q {
		d = max(q, retryFloorGap)
	}
	return d
}

// sleep waits d or until ctx ends; it reports whether to go on.
func (r *Rotator) sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// obtain makes a fresh key and CSR, has it issued, and checks the result.
func (r *Rotator) obtain(ctx context.Context) (*tls.Certificate, error) {
	key, err := NewKey()
	if err != nil {
		return nil, err
	}
	csr, err := NewCSR(key, r.ID)
	if err != nil {
		return nil, err
	}
	chain, err := r.Issue(ctx, csr)
	if err != nil {
		return nil, err
	}
	c, err := KeyPair(chain, key)
	if err != nil {
		return nil, err
	}
	id, err := idOf(c.Leaf)
	if err != nil {
		return nil, err
	}
	if id.String() != r.ID {
		return nil, fmt.Errorf("issued certificate is for %s, want %s", id, r.ID)
	}
	if !time.Now().Before(c.Leaf.NotAfter) {
		return nil, fmt.Errorf("issued certificate already expired at %s", c.Leaf.NotAfter)
	}
	return c, nil
}

func (r *Rotator) log() *slog.Logger {
	if r.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return r.Log
}

func serialHex(c *x509.Certificate) string { return fmt.Sprintf("%x", c.SerialNumber) }
