package mtls

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// KEKSize is the size of a key-encryption key: AES-256.
const KEKSize = 32

// sealMagic starts every sealed CA blob and versions its format:
//
//	magic | kek id (8) | len(td) (2, big endian) | td | nonce (12) | AES-256-GCM(chain PEM + key PEM)
//
// Everything before the ciphertext is authenticated as additional data.
const sealMagic = "hms-ca-sealed-v1\n"

const kekIDLen = 8

// LoadOrCreateKEK reads the 32-byte key-encryption key at path, creating it
// with mode 0600 from fresh random bytes when absent. It refuses a file of
// another size, one that is not a regular file, or one readable or writable
// by group or others. Creation is atomic: a concurrent reader sees either no
// file or the whole key.
func LoadOrCreateKEK(path string) ([]byte, error) {
	kek, err := readKEK(path)
	if errors.Is(err, os.ErrNotExist) {
		if err := createKEK(path); err != nil && !errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("create kek %s: %w", path, err)
		}
		kek, err = readKEK(path)
	}
	if err != nil {
		return nil, err
	}
	return kek, nil
}

func readKEK(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("kek %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("kek %s: not a regular file", path)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("kek %s: mode %04o lets group or others access it; want 0600 (chmod 600 %s)", path, perm, path)
	}
	if st.Size() != KEKSize {
		return nil, fmt.Errorf("kek %s: %d bytes, want %d", path, st.Size(), KEKSize)
	}
	kek := make([]byte, KEKSize)
	if _, err := io.ReadFull(f, kek); err != nil {
		return nil, fmt.Errorf("kek %s: %w", path, err)
	}
	return kek, nil
}

// createKEK writes a temporary file and links it into place, which fails
// with ErrExist when another process won the race.
func createKEK(path string) error {
	kek := make([]byte, KEKSize)
	if _, err := rand.Read(kek); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".kek-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(kek); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Link(tmp.Name(), path)
}

// kekID identifies a KEK without revealing it, so Unseal can tell a wrong
// KEK from a corrupted blob.
func kekID(kek []byte) []byte {
	m := hmac.New(sha256.New, kek)
	m.Write([]byte("hms-node kek id"))
	return m.Sum(nil)[:kekIDLen]
}

func newGCM(kek []byte) (cipher.AEAD, error) {
	if len(kek) != KEKSize {
		return nil, fmt.Errorf("kek is %d bytes, want %d", len(kek), KEKSize)
	}
	block, err := aes.NewCipher(kek)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// Seal encrypts the CA's certificates and private key with kek
// (AES-256-GCM), binding the trust domain, so the blob can be stored in etcd.
func Seal(kek []byte, ca *CA) ([]byte, error) {
	aead, err := newGCM(kek)
	if err != nil {
		return nil, fmt.Errorf("seal ca: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(ca.Key)
	if err != nil {
		return nil, fmt.Errorf("seal ca: marshal key: %w", err)
	}
	plain := append(ca.chainPEM(), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})...)
	var hdr bytes.Buffer
	hdr.WriteString(sealMagic)
	hdr.Write(kekID(kek))
	_ = binary.Write(&hdr, binary.BigEndian, uint16(len(ca.TrustDomain)))
	hdr.WriteString(ca.TrustDomain)
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("seal ca: %w", err)
	}
	hdr.Write(nonce)
	aad := hdr.Bytes()
	return aead.Seal(bytes.Clone(aad), nonce, plain, aad), nil
}

// Unseal decrypts a blob made by Seal and loads the CA it holds, checking it
// as LoadCA does. A wrong KEK, another trust domain and a tampered blob each
// give their own error.
func Unseal(kek, sealed []byte, trustDomain string) (*CA, error) {
	aead, err := newGCM(kek)
	if err != nil {
		return nil, fmt.Errorf("unseal ca: %w", err)
	}
	rest, ok := bytes.CutPrefix(sealed, []byte(sealMagic))
	if !ok {
		return nil, errors.New("unseal ca: not a sealed CA (bad magic or unknown version)")
	}
	if len(rest) < kekIDLen+2 {
		return nil, errors.New("unseal ca: truncated")
	}
	id, rest := rest[:kekIDLen], rest[kekIDLen:]
	if !hmac.Equal(id, kekID(kek)) {
		return nil, fmt.Errorf("unseal ca: wrong key-encryption key (blob sealed with kek id %x, this kek is %x)", id, kekID(kek))
	}
	n := int(binary.BigEndian.Uint16(rest))
	rest = rest[2:]
	if len(rest) < n+aead.NonceSize() {
		return nil, errors.New("unseal ca: truncated")
	}
	td, rest := string(rest[:n]), rest[n:]
	if td != trustDomain {
		return nil, fmt.Errorf("unseal ca: sealed for trust domain %q, want %q", td, trustDomain)
	}
	nonce, ct := rest[:aead.NonceSize()], rest[aead.NonceSize():]
	aad := sealed[:len(sealed)-len(ct)]
	plain, err := aead.Open(nil, nonce, ct, aad)
	if err != nil {
		return nil, errors.New("unseal ca: authentication failed: the sealed CA is corrupted or was tampered with")
	}
	keyAt := bytes.Index(plain, []byte("-----BEGIN PRIVATE KEY-----"))
	if keyAt < 0 {
		return nil, errors.New("unseal ca: no private key in sealed CA")
	}
	ca, err := LoadCA(trustDomain, plain[:keyAt], plain[keyAt:])
	if err != nil {
		return nil, fmt.Errorf("unseal ca: %w", err)
	}
	return ca, nil
}

// KEKID returns the hex identifier of kek recorded in sealed blobs, for
// logs and diagnostics.
func KEKID(kek []byte) string { return hex.EncodeToString(kekID(kek)) }
