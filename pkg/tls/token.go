package mtls

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// tokenPrefix versions the join-token format.
const tokenPrefix = "hms1"

// Token is a bootstrap join token: ID names it, Secret proves possession,
// CAHash ("sha256:<hex>", as CA.Hash) pins the control plane's CA.
type Token struct {
	ID, Secret, CAHash string
}

// NewToken makes a token with a random 8-byte ID and 16-byte secret (hex)
// pinning caHash ("sha256:<hex>" or bare hex of a SHA-256).
func NewToken(caHash string) (Token, error) {
	h, err := normalizeHash(caHash)
	if err != nil {
		return Token{}, fmt.Errorf("new token: %w", err)
	}
	id, secret := make([]byte, 8), make([]byte, 16)
	if _, err := rand.Read(id); err != nil {
		return Token{}, fmt.Errorf("new token: %w", err)
	}
	if _, err := rand.Read(secret); err != nil {
		return Token{}, fmt.Errorf("new token: %w", err)
	}
	return Token{ID: hex.EncodeToString(id), Secret: hex.EncodeToString(secret), CAHash: h}, nil
}

// String formats the token as "hms1.<id>.<secret>.<cahash-hex>".
func (t Token) String() string {
	return tokenPrefix + "." + t.ID + "." + t.Secret + "." + strings.TrimPrefix(t.CAHash, "sha256:")
}

// ParseToken parses a token, ignoring surrounding spaces and newlines. Every
// part must be lowercase hex of the exact length.
func ParseToken(s string) (Token, error) {
	parts := strings.Split(strings.TrimSpace(s), ".")
	if len(parts) != 4 {
		return Token{}, fmt.Errorf("parse token: want %s.<id>.<secret>.<ca-hash>, got %d dot-separated parts", tokenPrefix, len(parts))
	}
	if parts[0] != tokenPrefix {
		return Token{}, fmt.Errorf("parse token: unknown version %q, want %q", parts[0], tokenPrefix)
	}
	for _, p := range []struct {
		name, v string
		n       int
	}{{"id", parts[1], 16}, {"secret", parts[2], 32}, {"ca hash", parts[3], 64}} {
		if err := checkHex(p.v, p.n); err != nil {
			return Token{}, fmt.Errorf("parse token: %s: %w", p.name, err)
		}
	}
	return Token{ID: parts[1], Secret: parts[2], CAHash: "sha256:" + parts[3]}, nil
}

// HashSecret returns the hex SHA-256 of a token secret: what the control
// plane stores instead of the secret.
func HashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// CheckSecret reports, in constant time, whether secret hashes to hash (a
// HashSecret result).
func CheckSecret(hash, secret string) bool {
	return subtle.ConstantTimeCompare([]byte(hash), []byte(HashSecret(secret))) == 1
}

func normalizeHash(h string) (string, error) {
	hx := strings.TrimPrefix(strings.TrimSpace(h), "sha256:")
	if err := checkHex(hx, 64); err != nil {
		return "", fmt.Errorf("ca hash: %w", err)
	}
	return "sha256:" + hx, nil
}

func checkHex(s string, n int) error {
	if len(s) != n {
		return fmt.Errorf("%d characters, want %d", len(s), n)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return errors.New("not lowercase hex")
		}
	}
	return nil
}
