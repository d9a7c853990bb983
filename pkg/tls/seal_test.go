package mtls

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSealUnseal(t *testing.T) {
	kek := bytes.Repeat([]byte{7}, KEKSize)
	root := newTestCA(t, td)
	certPEM, keyPEM, _ := newIntermediate(t, root)
	inter, err := LoadCA(td, certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	for name, ca := range map[string]*CA{"root": root, "intermediate": inter} {
		sealed, err := Seal(kek, ca)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(sealed, []byte("PRIVATE KEY")) {
			t.Fatalf("%s: sealed blob holds the key in the clear", name)
		}
		got, err := Unseal(kek, sealed, td)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !got.Cert.Equal(ca.Cert) || got.Hash() != ca.Hash() || len(got.Chain) != len(ca.Chain) || !publicKeyEqual(got.Key.Public(), ca.Key.Public()) {
			t.Fatalf("%s: unsealed CA differs", name)
		}
		// The unsealed CA still signs certificates that verify.
		c := issue(t, got, WorkloadID(td, "default", "a"), "n")
		if _, _, err := verifierFor(root).Verify(c.Certificate); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	sealed, err := Seal(kek, root)
	if err != nil {
		t.Fatal(err)
	}
	wrong := bytes.Repeat([]byte{8}, KEKSize)
	tampered := bytes.Clone(sealed)
	tampered[len(tampered)-20] ^= 1
	tamperedHdr := bytes.Clone(sealed)
	tamperedHdr[len(sealMagic)+kekIDLen+2+3] ^= 1 // a byte of the trust domain
	for name, tc := range map[string]struct {
		kek, blob []byte
		td, want  string
	}{
		"wrong kek":       {wrong, sealed, td, "wrong key-encryption key"},
		"tampered":        {kek, tampered, td, "tampered"},
		"tampered header": {kek, tamperedHdr, strings.Replace(td, "s", "r", 1), "tampered"},
		"other domain":    {kek, sealed, "other.local", `sealed for trust domain "cluster.local"`},
		"truncated":       {kek, sealed[:len(sealMagic)+3], td, "truncated"},
		"not sealed":      {kek, []byte("hello"), td, "not a sealed CA"},
		"short kek":       {kek[:16], sealed, td, "want 32"},
	} {
		if _, err := Unseal(tc.kek, tc.blob, tc.td); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want it to mention %q", name, err, tc.want)
		}
	}
}

func TestLoadOrCreateKEK(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "kek")
	kek, err := LoadOrCreateKEK(path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 || len(kek) != KEKSize || bytes.Equal(kek, make([]byte, KEKSize)) {
		t.Fatalf("mode %v len %d", st.Mode(), len(kek))
	}
	again, err := LoadOrCreateKEK(path)
	if err != nil || !bytes.Equal(again, kek) {
		t.Fatalf("second load: %v (same=%v)", err, bytes.Equal(again, kek))
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("temporary files left behind: %v", ents)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateKEK(path); err == nil || !strings.Contains(err.Error(), "0644") {
		t.Fatalf("0644 kek: %v", err)
	}
	short := filepath.Join(dir, "short")
	if err := os.WriteFile(short, make([]byte, 31), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateKEK(short); err == nil || !strings.Contains(err.Error(), "31 bytes") {
		t.Fatalf("short kek: %v", err)
	}
	if _, err := LoadOrCreateKEK(dir); err == nil {
		t.Fatal("a directory was accepted as a kek")
	}
	if _, err := LoadOrCreateKEK(filepath.Join(dir, "missing", "kek")); err == nil {
		t.Fatal("kek created in a missing directory")
	}
}
