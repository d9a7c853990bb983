package localapi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// childEnv makes the test binary act as a local-API client (see TestMain).
const childEnv = "HMS_LOCALAPI_TEST_CHILD_SOCKET"

func TestMain(m *testing.M) {
	if path := os.Getenv(childEnv); path != "" {
		os.Exit(childClient(path))
	}
	os.Exit(m.Run())
}

// childClient connects to path, sends a request and prints what happened.
func childClient(path string) int {
	c, err := net.Dial("unix", path)
	if err != nil {
		fmt.Printf("dial failed uid=%d: %v\n", os.Getuid(), err)
		return 1
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "GET /v1/echo HTTP/1.1\r\nHost: hms-agent\r\nConnection: close\r\n\r\n")
	b, err := io.ReadAll(c)
	if len(b) == 0 && err == nil || errors.Is(err, syscall.ECONNRESET) {
		fmt.Printf("refused uid=%d\n", os.Getuid())
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\r\n")
	fmt.Printf("answered uid=%d: %s (err %v)\n", os.Getuid(), line, err)
	return 0
}

type echo struct {
	Msg string `json:"msg"`
	UID int64  `json:"uid"`
}

func testHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/echo", func(w http.ResponseWriter, r *http.Request) {
		var in echo
		if err := jsonDecode(r, &in); err != nil {
			WriteError(w, http.StatusBadRequest, err)
			return
		}
		cred, ok := PeerFromContext(r.Context())
		if !ok {
			WriteError(w, http.StatusInternalServerError, errors.New("no peer"))
			return
		}
		WriteJSON(w, http.StatusOK, echo{Msg: in.Msg, UID: int64(cred.Uid)})
	})
	mux.HandleFunc("GET /v1/echo", func(w http.ResponseWriter, r *http.Request) {
		WriteJSON(w, http.StatusOK, echo{Msg: "hi"})
	})
	mux.HandleFunc("GET /v1/fail", func(w http.ResponseWriter, r *http.Request) {
		WriteError(w, http.StatusNotFound, errors.New("no workload\nfor netns /run/netns/x"))
	})
	return mux
}

// logBuf is a goroutine-safe log sink.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// serve starts a Server on path and stops it at cleanup.
func serve(t *testing.T, path string) *logBuf {
	t.Helper()
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	logs := &logBuf{}
	s := &Server{Handler: testHandler(), Log: slog.New(slog.NewTextHandler(logs, nil))}
	done := make(chan error, 1)
	go func() { done <- s.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return logs
}

// TestListenMode proves the socket is 0600 even with umask 0, and that a
// missing parent directory is created.
func TestListenMode(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	path := filepath.Join(t.TempDir(), "run", "hms", "agent.sock")
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode = %v, want a socket with 0600", fi.Mode())
	}
}

// TestRoundTrip proves a JSON request reaches the handler with the caller's
// credentials and the reply decodes, and that a handler error arrives as a
// one-line *StatusError.
func TestRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.sock")
	serve(t, path)
	c := NewClient(path)
	ctx := context.Background()
	var out echo
	if err := c.Do(ctx, "POST", "/v1/echo", echo{Msg: "ping"}, &out); err != nil {
		t.Fatal(err)
	}
	if out.Msg != "ping" || out.UID != int64(os.Geteuid()) {
		t.Fatalf("reply = %+v, want ping from uid %d", out, os.Geteuid())
	}
	err := c.Do(ctx, "GET", "/v1/fail", nil, nil)
	var se *StatusError
	if !errors.As(err, &se) || se.Code != http.StatusNotFound {
		t.Fatalf("error = %#v, want a 404 StatusError", err)
	}
	if got, want := err.Error(), "no workload for netns /run/netns/x"; got != want {
		t.Fatalf("error = %q, want %q", got, want)
	}
}

// TestListenReplacesStaleSocket proves a socket file nobody answers on (an
// agent that died) is replaced.
func TestListenReplacesStaleSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.sock")
	dead, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	dead.SetUnlinkOnClose(false)
	dead.Close()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("stale socket not left behind: %v", err)
	}
	serve(t, path)
	if err := NewClient(path).Do(context.Background(), "GET", "/v1/echo", nil, nil); err != nil {
		t.Fatal(err)
	}
}

// TestListenLiveSocketInUse proves Listen refuses, with ErrInUse, a path an
// agent answers on, and leaves that agent reachable.
func TestListenLiveSocketInUse(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.sock")
	serve(t, path)
	l, err := Listen(path)
	if !errors.Is(err, ErrInUse) {
		if l != nil {
			l.Close()
		}
		t.Fatalf("Listen on a live socket = %v, want ErrInUse", err)
	}
	if err := NewClient(path).Do(context.Background(), "GET", "/v1/echo", nil, nil); err != nil {
		t.Fatalf("live agent unreachable after refused Listen: %v", err)
	}
}

// TestListenKeepsNonSocket proves Listen never removes a file that is not a
// socket.
func TestListenKeepsNonSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.sock")
	if err := os.WriteFile(path, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	if l, err := Listen(path); err == nil {
		l.Close()
		t.Fatal("Listen replaced a regular file")
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "keep" {
		t.Fatalf("file changed: %q, %v", b, err)
	}
}

// TestClientMissingSocket proves the error for a missing socket names the
// path and tells the operator to start the agent.
func TestClientMissingSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nope.sock")
	err := NewClient(path).Do(context.Background(), "GET", "/v1/status", nil, nil)
	if err == nil {
		t.Fatal("Do on a missing socket succeeded")
	}
	msg := err.Error()
	if !strings.Contains(msg, path) || !strings.Contains(msg, "is the agent running? (hms-node agent)") {
		t.Fatalf("error %q does not name %s and the hint", msg, path)
	}
	if strings.Contains(msg, "http://") {
		t.Fatalf("error %q leaks the placeholder URL", msg)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("error %q does not wrap fs.ErrNotExist", msg)
	}
}
