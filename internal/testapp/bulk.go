package testapp

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"time"
)

// patternBlock is the deterministic 1 MiB block bulk transfers repeat.
var patternBlock = func() []byte {
	b := make([]byte, 1<<20)
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
	return b
}()

// writePattern writes n bytes of the pattern.
func writePattern(w io.Writer, n int64) error {
	for n > 0 {
		chunk := patternBlock
		if int64(len(chunk)) > n {
			chunk = chunk[:n]
		}
		if _, err := w.Write(chunk); err != nil {
			return err
		}
		n -= int64(len(chunk))
	}
	return nil
}

// PatternSum is the sha256 of n bytes of the pattern, what a transfer
// that arrived intact hashes to.
func PatternSum(n int64) string {
	h := sha256.New()
	writePattern(h, n)
	return hex.EncodeToString(h.Sum(nil))
}

// ServeBulk answers bulk clients: a header says the direction and size;
// "down" sends the pattern, "up" reads and answers with its hash.
func ServeBulk(l net.Listener) error {
	for {
		c, err := l.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			var hdr [9]byte
			if _, err := io.ReadFull(c, hdr[:]); err != nil {
				return
			}
			n := int64(binary.BigEndian.Uint64(hdr[1:]))
			if hdr[0] == 'd' || hdr[0] == 's' {
				writePattern(c, n)
				return
			}
			h := sha256.New()
			got, _ := io.CopyN(h, c, n)
			fmt.Fprintf(c, "%s %d\n", hex.EncodeToString(h.Sum(nil)), got)
		}()
	}
}

// Bulk moves n bytes over c in direction "down" or "up" and returns the
// sha256 of what the receiving side got, and its byte count. Direction
// "sink" is "down" without hashing, for throughput benchmarks.
func Bulk(c net.Conn, dir string, n int64) (string, int64, error) {
	return BulkAfter(c, dir, n, 0)
}

// BulkAfter is Bulk pausing for pause between its header and the data,
// as a client that speaks, waits, then streams.
func BulkAfter(c net.Conn, dir string, n int64, pause time.Duration) (string, int64, error) {
	var hdr [9]byte
	hdr[0] = dir[0]
	binary.BigEndian.PutUint64(hdr[1:], uint64(n))
	if _, err := c.Write(hdr[:]); err != nil {
		return "", 0, err
	}
	time.Sleep(pause)
	if dir == "sink" {
		got, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{c}, make([]byte, 256<<10))
		return "", got, err
	}
	if dir == "down" {
		h := sha256.New()
		got, err := io.Copy(h, struct{ io.Reader }{c})
		return hex.EncodeToString(h.Sum(nil)), got, err
	}
	if err := writePattern(c, n); err != nil {
		return "", 0, err
	}
	var sum string
	var got int64
	_, err := fmt.Fscanf(c, "%s %d\n", &sum, &got)
	return sum, got, err
}
