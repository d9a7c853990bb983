package mtls

import (
	"crypto/tls"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestTokenRoundTrip(t *testing.T) {
	ca := newTestCA(t, td)
	tok, err := NewToken(ca.Hash())
	if err != nil {
		t.Fatal(err)
	}
	if len(tok.ID) != 16 || len(tok.Secret) != 32 || tok.CAHash != ca.Hash() {
		t.Fatalf("token %+v", tok)
	}
	s := tok.String()
	if !strings.HasPrefix(s, "hms1.") || strings.Count(s, ".") != 3 || strings.Contains(s, "sha256") {
		t.Fatalf("String() = %q", s)
	}
	got, err := ParseToken("  " + s + "\n")
	if err != nil || got != tok {
		t.Fatalf("ParseToken = %+v, %v; want %+v", got, err, tok)
	}
	if tok2, _ := NewToken(strings.TrimPrefix(ca.Hash(), "sha256:")); tok2.CAHash != ca.Hash() || tok2.ID == tok.ID || tok2.Secret == tok.Secret {
		t.Fatalf("second token %+v", tok2)
	}
	if h := HashSecret(tok.Secret); len(h) != 64 || h == tok.Secret || !CheckSecret(h, tok.Secret) || CheckSecret(h, tok.Secret+"x") {
		t.Fatalf("HashSecret = %q", h)
	}
	if _, err := NewToken("sha256:abc"); err == nil {
		t.Fatal("NewToken accepted a short hash")
	}
}

func TestParseTokenRejects(t *testing.T) {
	tok, _ := NewToken(newTestCA(t, td).Hash())
	good := tok.String()
	parts := strings.Split(good, ".")
	for name, s := range map[string]string{
		"empty":         "",
		"three parts":   strings.Join(parts[:3], "."),
		"five parts":    good + ".00",
		"version":       "hms2." + strings.Join(parts[1:], "."),
		"short id":      parts[0] + "." + parts[1][1:] + "." + parts[2] + "." + parts[3],
		"upper secret":  parts[0] + "." + parts[1] + "." + strings.ToUpper(parts[2]) + "." + parts[3],
		"non-hex hash":  parts[0] + "." + parts[1] + "." + parts[2] + "." + "z" + parts[3][1:],
		"inner space":   parts[0] + "." + parts[1] + " ." + parts[2] + "." + parts[3],
		"prefixed hash": parts[0] + "." + parts[1] + "." + parts[2] + ".sha256:" + parts[3],
	} {
		if _, err := ParseToken(s); err == nil {
			t.Errorf("%s: ParseToken(%q) succeeded", name, s)
		}
	}
}

// controlPlane serves a cert issued by ca with the root appended, as the
// control plane does for first contact.
func controlPlane(t *testing.T, ca *CA) (string, <-chan result) {
	key, _ := NewKey()
	csr, _ := NewCSR(key, WorkloadID(td, "hms-system", "control"))
	chain, err := ca.Issue(IssueRequest{CSR: csr, ID: WorkloadID(td, "hms-system", "control"), Node: "control-1", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	c, err := KeyPair(append(chain, ca.BundlePEM()...), key)
	if err != nil {
		t.Fatal(err)
	}
	return serve(t, &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{*c}})
}

func TestPinnedVerify(t *testing.T) {
	ca := newTestCA(t, td)
	addr, _ := controlPlane(t, ca)
	pinned := func(hash string) *tls.Config {
		return &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true, VerifyPeerCertificate: PinnedVerify(hash)}
	}
	conn, err := dial(t, addr, pinned(ca.Hash()))
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	tok, _ := NewToken(ca.Hash())
	parsed, _ := ParseToken(tok.String())
	if conn, err = dial(t, addr, pinned(parsed.CAHash)); err != nil {
		t.Fatalf("hash from a parsed token: %v", err)
	}
	conn.Close()
	other := newTestCA(t, td)
	if _, err := dial(t, addr, pinned(other.Hash())); !errors.Is(err, ErrPinMismatch) {
		t.Fatalf("another CA's hash: %v", err)
	}

	// Direct checks: the root alone passes; a chain naming the right root
	// but signed by another CA does not; nor does one without its root.
	verify := PinnedVerify(ca.Hash())
	if err := verify([][]byte{ca.Cert.Raw}, nil); err != nil {
		t.Fatalf("root alone: %v", err)
	}
	forged := issue(t, other, WorkloadID(td, "hms-system", "control"), "control-1")
	if err := verify([][]byte{forged.Certificate[0], ca.Cert.Raw}, nil); !errors.Is(err, ErrUnknownAuthority) {
		t.Fatalf("forged leaf with the right root appended: %v", err)
	}
	leaf := issue(t, ca, WorkloadID(td, "hms-system", "control"), "control-1")
	if err := verify(leaf.Certificate, nil); !errors.Is(err, ErrPinMismatch) {
		t.Fatalf("chain without its root: %v", err)
	}
	if err := verify(nil, nil); !errors.Is(err, ErrNoCertificate) {
		t.Fatalf("no certs: %v", err)
	}
}
