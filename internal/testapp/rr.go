package testapp

import (
	"io"
	"net"
	"sort"
	"time"
)

// ServeEcho echoes every connection back to itself.
func ServeEcho(l net.Listener) error {
	for {
		c, err := l.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			buf := make([]byte, 64<<10)
			io.CopyBuffer(struct{ io.Writer }{c}, struct{ io.Reader }{c}, buf)
		}()
	}
}

// RRResult summarises request/response round trips.
type RRResult struct {
	Count int     `json:"count"`
	P50us float64 `json:"p50_us"`
	P99us float64 `json:"p99_us"`
}

// RequestResponse sends n messages of size bytes over c, one at a time,
// each waiting for its echo (and then pause), and returns the latency
// percentiles.
func RequestResponse(c net.Conn, size, n int, pause time.Duration) (RRResult, error) {
	msg := make([]byte, size)
	got := make([]byte, size)
	lat := make([]time.Duration, 0, n)
	for i := 0; i < n; i++ {
		start := time.Now()
		if _, err := c.Write(msg); err != nil {
			return RRResult{}, err
		}
		if _, err := io.ReadFull(c, got); err != nil {
			return RRResult{}, err
		}
		lat = append(lat, time.Since(start))
		if pause > 0 {
			time.Sleep(pause)
		}
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	us := func(q float64) float64 { return float64(lat[int(q*float64(len(lat)-1))].Nanoseconds()) / 1e3 }
	return RRResult{Count: n, P50us: us(0.50), P99us: us(0.99)}, nil
}
