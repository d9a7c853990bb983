package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hms-node/hms-node/internal/testbed"
)

// fortioModule is the load generator of the mTLS benchmark and the rotation
// test. Pinned: later releases need a module the proxy refuses.
const fortioModule = "fortio.org/fortio@v1.68.2"

var fortioOnce struct {
	sync.Once
	path string
	err  error
}

// fortioBin builds fortio into a temp dir once per test binary (the module
// and build caches make later runs fast) and fails t if that fails: the
// tests that need it must not skip in CI.
func fortioBin(t testing.TB) string {
	t.Helper()
	fortioOnce.Do(func() {
		dir, err := os.MkdirTemp("", "hms-e2e-fortio-")
		if err != nil {
			fortioOnce.err = err
			return
		}
		os.Chmod(dir, 0o755)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", "install", fortioModule)
		cmd.Env = append(os.Environ(), "GOBIN="+dir)
		if out, err := cmd.CombinedOutput(); err != nil {
			fortioOnce.err = fmt.Errorf("go install %s: %v\n%s", fortioModule, err, out)
			return
		}
		fortioOnce.path = filepath.Join(dir, "fortio")
	})
	if fortioOnce.err != nil {
		t.Fatal(fortioOnce.err)
	}
	return fortioOnce.path
}

// fortioHist is one of fortio's histograms in its -json output (seconds or
// bytes).
type fortioHist struct {
	Count       int64   `json:"Count"`
	Min         float64 `json:"Min"`
	Max         float64 `json:"Max"`
	Avg         float64 `json:"Avg"`
	Percentiles []struct {
		Percentile float64 `json:"Percentile"`
		Value      float64 `json:"Value"`
	} `json:"Percentiles"`
}

// pct returns percentile p of h, in the histogram's unit.
func (h fortioHist) pct(p float64) float64 {
	for _, x := range h.Percentiles {
		if x.Percentile == p {
			return x.Value
		}
	}
	return -1
}

// fortioResult is the part of `fortio load -json` the tests read.
type fortioResult struct {
	ActualQPS      float64          `json:"ActualQPS"`
	ActualDuration int64            `json:"ActualDuration"` // ns
	RetCodes       map[string]int64 `json:"RetCodes"`
	Duration       fortioHist       `json:"DurationHistogram"`
	Errors         fortioHist       `json:"ErrorsDurationHistogram"`
	Sizes          fortioHist       `json:"Sizes"`
	HeaderSizes    fortioHist       `json:"HeaderSizes"`
	SocketCount    int              `json:"SocketCount"`
}

// non200 counts the calls that did not return 200 (fortio files socket
// errors under -1).
func (r fortioResult) non200() int64 {
	var n int64
	for code, c := range r.RetCodes {
		if code != "200" {
			n += c
		}
	}
	return n
}

// check fails t unless every call returned 200 with a response of
// exactly wantBody bytes of body (fortio does not see bodies; a constant
// total size with the expected body length is the content check, next to
// the curl checks the callers make).
func (r fortioResult) check(t testing.TB, what string, wantBody int) {
	t.Helper()
	if r.Duration.Count == 0 || r.non200() != 0 {
		t.Fatalf("%s: %d calls, codes %v", what, r.Duration.Count, r.RetCodes)
	}
	if r.Sizes.Min != r.Sizes.Max || r.HeaderSizes.Min != r.HeaderSizes.Max || int(r.Sizes.Min-r.HeaderSizes.Min) != wantBody {
		t.Fatalf("%s: response sizes %v..%v, header sizes %v..%v; want a constant %d-byte body",
			what, r.Sizes.Min, r.Sizes.Max, r.HeaderSizes.Min, r.HeaderSizes.Max, wantBody)
	}
}

// startFortio starts `fortio load` in a pod writing its JSON result to a
// temp file; wait returns the parsed result. The context bounds it in time.
func startFortio(ctx context.Context, t testing.TB, p *testbed.Pod, args ...string) (wait func() fortioResult) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "fortio.json")
	argv := append([]string{"load", "-json", out, "-p", "50,90,99,99.9", "-r", "0.00001", "-loglevel", "Warning"}, args...)
	cmd := p.Command(ctx, fortioBin(t), argv...)
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("start fortio in %s: %v", p.Name, err)
	}
	return func() fortioResult {
		t.Helper()
		err := cmd.Wait()
		b, rerr := os.ReadFile(out)
		if err != nil || rerr != nil {
			t.Fatalf("fortio %s in %s: %v %v\n%s", strings.Join(args, " "), p.Name, err, rerr, tail(logs.String(), 4000))
		}
		var r fortioResult
		if err := json.Unmarshal(b, &r); err != nil {
			t.Fatalf("fortio json: %v", err)
		}
		if r.non200() != 0 {
			t.Logf("fortio in %s reported errors:\n%s", p.Name, tail(logs.String(), 4000))
		}
		return r
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
