package testapp

import (
	"fmt"
	"io"
	"net"
	"strings"
	"time"
)

// LoopResult counts the outcomes of a connect loop.
type LoopResult struct {
	OK     int      `json:"ok"`
	Failed int      `json:"failed"`
	Errors []string `json:"errors,omitempty"` // the first few
}

// ConnectLoop opens a new connection to addr every interval for duration,
// sends one HTTP/1.0 request on it and expects a reply containing want.
// Bounded in count and time: it stops by itself.
func ConnectLoop(addr, want string, interval, duration time.Duration) LoopResult {
	var res LoopResult
	deadline := time.Now().Add(duration)
	for i := 0; time.Now().Before(deadline) && i < 100000; i++ {
		if err := oneRequest(addr, want); err != nil {
			res.Failed++
			if len(res.Errors) < 5 {
				res.Errors = append(res.Errors, err.Error())
			}
		} else {
			res.OK++
		}
		time.Sleep(interval)
	}
	return res
}

func oneRequest(addr, want string) error {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "GET /loop HTTP/1.0\r\n\r\n"); err != nil {
		return err
	}
	b, err := io.ReadAll(c)
	if err != nil {
		return err
	}
	if !strings.Contains(string(b), want) {
		return fmt.Errorf("reply %q lacks %q", b, want)
	}
	return nil
}
