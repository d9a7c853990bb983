package testapp

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// LoadResult counts the answers of an HTTP load run by status code.
type LoadResult struct {
	Sent       int            `json:"sent"`
	Codes      map[string]int `json:"codes"`  // "200": n, ...
	Errors     int            `json:"errors"` // no response at all
	First      []string       `json:"first_errors,omitempty"`
	RetryAfter int            `json:"retry_after"` // 429s that carried Retry-After
	Seconds    float64        `json:"seconds"`
}

// HTTPLoad sends GETs to url for duration, at qps requests per second
// (open loop, spread over conc keep-alive connections; qps 0 = as fast as
// conc connections go). Bounded: at most 100000 requests.
func HTTPLoad(url, host string, qps float64, conc int, duration time.Duration) LoadResult {
	res := LoadResult{Codes: map[string]int{}}
	var mu sync.Mutex
	tr := &http.Transport{MaxIdleConnsPerHost: conc, DisableCompression: true}
	defer tr.CloseIdleConnections()
	cl := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	jobs := make(chan struct{}, conc)
	var wg sync.WaitGroup
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range jobs {
				req, _ := http.NewRequest("GET", url, nil)
				if host != "" {
					req.Host = host
				}
				resp, err := cl.Do(req)
				mu.Lock()
				if err != nil {
					res.Errors++
					if len(res.First) < 5 {
						res.First = append(res.First, err.Error())
					}
				} else {
					res.Codes[strconv.Itoa(resp.StatusCode)]++
					if resp.StatusCode == 429 && resp.Header.Get("Retry-After") != "" {
						res.RetryAfter++
					}
				}
				mu.Unlock()
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}
		}()
	}
	start := time.Now()
	deadline := start.Add(duration)
	for i := 0; i < 100000 && time.Now().Before(deadline); i++ {
		if qps > 0 {
			if d := time.Until(start.Add(time.Duration(float64(i) / qps * float64(time.Second)))); d > 0 {
				time.Sleep(d)
			}
		}
		jobs <- struct{}{}
		res.Sent++
	}
	close(jobs)
	wg.Wait()
	res.Seconds = time.Since(start).Seconds()
	return res
}

// BannerClient connects to a server-first service, reads its greeting
// without sending anything, then has one exchange and quits. It prints
// how long the greeting took, so a proxy that waits for the client to
// speak first shows up.
func BannerClient(addr string, w io.Writer) error {
	start := time.Now()
	c, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(c)
	greeting, err := r.ReadString('\n')
	if err != nil {
		return fmt.Errorf("no greeting: %w", err)
	}
	ms := time.Since(start).Milliseconds()
	fmt.Fprint(c, "HELO hms\r\n")
	reply, err := r.ReadString('\n')
	if err != nil {
		return fmt.Errorf("no reply: %w", err)
	}
	fmt.Fprint(c, "QUIT\r\n")
	fmt.Fprintf(w, "greeting=%q after_ms=%d reply=%q\n", strings.TrimSpace(greeting), ms, strings.TrimSpace(reply))
	return nil
}

// UpgradeClient asks addr to switch protocols (Upgrade: hms-echo), then
// sends msg on the upgraded connection and prints what came back.
func UpgradeClient(addr, host, msg string, w io.Writer) error {
	c, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "GET /upgrade HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: hms-echo\r\n\r\n", host)
	r := bufio.NewReader(c)
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		return fmt.Errorf("upgrade refused: %s", resp.Status)
	}
	fmt.Fprintf(c, "%s\n", msg)
	line, err := r.ReadString('\n')
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "upgraded=%s echo=%q\n", resp.Header.Get("Upgrade"), strings.TrimSpace(line))
	return nil
}
