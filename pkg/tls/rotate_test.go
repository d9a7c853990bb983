package mtls

import (
	"context"
	"crypto/x509"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const rotTTL = 2 * time.Second

// rotation is one OnRotate call.
type rotation struct {
	old, new *x509.Certificate
	at       time.Time
}

// newRotator returns a rotator for id issued by ca with rotTTL, whose
// issuer fails when fail reports true for the call number (from 1).
func newRotator(t *testing.T, ca *CA, id, node string, fail func(n int) bool) (*Rotator, <-chan rotation) {
	rots := make(chan rotation, 64)
	var calls atomic.Int32
	r := &Rotator{
		ID: id,
		Issue: func(ctx context.Context, csr []byte) ([]byte, error) {
			if n := int(calls.Add(1)); fail != nil && fail(n) {
				return nil, errors.New("control plane unavailable")
			}
			return ca.Issue(IssueRequest{CSR: csr, ID: id, Node: node, TTL: rotTTL})
		},
		OnRotate: func(old, new *x509.Certificate) { rots <- rotation{old, new, time.Now()} },
		Log:      slog.New(slog.NewTextHandler(testWriter{t}, nil)),
	}
	return r, rots
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// watch polls r.Certificate() until stop and reports every serial seen and
// every instant without a valid certificate.
func watch(r *Rotator, stop <-chan struct{}) func() (serials map[string]bool, gaps int) {
	var mu sync.Mutex
	serials, gaps := map[string]bool{}, 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			c := r.Certificate()
			mu.Lock()
			if c == nil || !time.Now().Before(c.Leaf.NotAfter) {
				gaps++
			} else {
				serials[serialHex(c.Leaf)] = true
			}
			mu.Unlock()
			time.Sleep(200 * time.Microsecond)
		}
	}()
	return func() (map[string]bool, int) { <-done; mu.Lock(); defer mu.Unlock(); return serials, gaps }
}

func TestRotatorRenewsAtHalfLife(t *testing.T) {
	ca := newTestCA(t, td)
	v := verifierFor(ca)
	srvID, cliID := WorkloadID(td, "default", "server"), WorkloadID(td, "default", "client")
	srv, srvRots := newRotator(t, ca, srvID, "node-s", nil)
	cli, cliRots := newRotator(t, ca, cliID, "node-c", nil)
	if cli.Certificate() != nil || cli.Leaf() != nil {
		t.Fatal("certificate before Start")
	}
	if _, err := cli.GetClientCertificate(nil); err == nil {
		t.Fatal("GetClientCertificate before Start succeeded")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer func() { cancel(); srv.Wait(); cli.Wait() }()
	start := time.Now()
	for _, r := range []*Rotator{srv, cli} {
		if err := r.Start(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := cli.Start(ctx); err == nil {
		t.Fatal("second Start succeeded")
	}
	stop := make(chan struct{})
	results := watch(cli, stop)
	firstCli, firstSrv := cli.Leaf(), srv.Leaf()

	addr, accepted := serve(t, ServerConfig(srv.GetCertificate, v, nil))
	old, err := dial(t, addr, ClientConfig(cli.GetClientCertificate, v, ExpectID(srvID)))
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if r := next(t, accepted); r.err != nil || r.serial != serialHex(firstCli) {
		t.Fatalf("first connection: %v, serial %s want %s", r.err, r.serial, serialHex(firstCli))
	}

	// The first renewal comes at about half of the 2s life.
	select {
	case rot := <-cliRots:
		// Certificates carry whole seconds, so the life is 1-2s; the renewal
		// must come at about half of what it really is.
		half := firstCli.NotAfter.Sub(start) / 2
		if d := rot.at.Sub(start); d < half-250*time.Millisecond || d > half+400*time.Millisecond {
			t.Fatalf("first renewal after %v, want about %v", d, half)
		}
		if rot.old.SerialNumber.Cmp(firstCli.SerialNumber) != 0 || rot.new.SerialNumber.Cmp(firstCli.SerialNumber) == 0 {
			t.Fatal("OnRotate got the wrong certificates")
		}
	case <-time.After(3 * time.Second):
		t.Fatal("no renewal")
	}
	// Outlive the first certificates: the old connection still works.
	time.Sleep(time.Until(firstCli.NotAfter.Add(200 * time.Millisecond)))
	if err := roundTrip(old); err != nil {
		t.Fatalf("connection made before rotation broke: %v", err)
	}
	if cs := old.ConnectionState(); cs.PeerCertificates[0].SerialNumber.Cmp(firstSrv.SerialNumber) != 0 {
		t.Fatal("old connection's server certificate changed")
	}
	fresh, err := dial(t, addr, ClientConfig(cli.GetClientCertificate, v, ExpectID(srvID)))
	if err != nil {
		t.Fatalf("new connection after rotation: %v", err)
	}
	defer fresh.Close()
	if r := next(t, accepted); r.err != nil || r.serial == serialHex(firstCli) {
		t.Fatalf("new connection: %v, client serial %s (first %s)", r.err, r.serial, serialHex(firstCli))
	}
	if s := fresh.ConnectionState().PeerCertificates[0]; s.SerialNumber.Cmp(firstSrv.SerialNumber) == 0 {
		t.Fatal("new connection got the old server certificate")
	}
	if len(srvRots) == 0 {
		t.Fatal("server certificate never rotated")
	}
	select { // a second renewal, for a third serial
	case <-cliRots:
	case <-time.After(3 * time.Second):
		t.Fatal("no second renewal")
	}
	time.Sleep(50 * time.Millisecond) // let the poller see the newest serial
	close(stop)
	serials, gaps := results()
	if gaps != 0 {
		t.Fatalf("%d polls saw no valid certificate", gaps)
	}
	if len(serials) < 3 {
		t.Fatalf("saw %d serials in %v, want >= 3 (renewal every ~%v)", len(serials), time.Since(start), rotTTL/2)
	}
}

func TestRotatorRetriesBeforeExpiry(t *testing.T) {
	ca := newTestCA(t, td)
	id := WorkloadID(td, "default", "flaky")
	r, rots := newRotator(t, ca, id, "n", func(n int) bool { return n == 2 || n == 3 })
	ctx, cancel := context.WithCancel(context.Background())
	defer func() { cancel(); r.Wait() }()
	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}
	first := r.Leaf()
	stop := make(chan struct{})
	results := watch(r, stop)
	select {
	case rot := <-rots:
		if !rot.at.Before(first.NotAfter) {
			t.Fatalf("renewed at %v, after expiry %v", rot.at, first.NotAfter)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("no renewal after failures")
	}
	close(stop)
	if _, gaps := results(); gaps != 0 {
		t.Fatalf("%d polls saw no valid certificate", gaps)
	}
}

func TestRotatorStartErrors(t *testing.T) {
	ca := newTestCA(t, td)
	r, _ := newRotator(t, ca, WorkloadID(td, "default", "a"), "n", func(int) bool { return true })
	if err := r.Start(context.Background()); err == nil || !strings.Contains(err.Error(), "unavailable") {
		t.Fatalf("Start = %v, want the issuer's error", err)
	}
	// The issuer certifying another ID is refused.
	wrong := &Rotator{ID: WorkloadID(td, "default", "a"), Issue: func(_ context.Context, csr []byte) ([]byte, error) {
		return ca.Issue(IssueRequest{CSR: csr, ID: WorkloadID(td, "default", "b"), Node: "n", TTL: time.Hour})
	}}
	if err := wrong.Start(context.Background()); err == nil || !strings.Contains(err.Error(), "want") {
		t.Fatalf("Start = %v, want an identity mismatch", err)
	}
	if err := (&Rotator{ID: "nope", Issue: wrong.Issue}).Start(context.Background()); err == nil {
		t.Fatal("Start with a bad ID succeeded")
	}
	if err := (&Rotator{ID: WorkloadID(td, "default", "a")}).Start(context.Background()); err == nil {
		t.Fatal("Start without Issue succeeded")
	}
}
