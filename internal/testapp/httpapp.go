package testapp

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// HTTPApp is the test HTTP server: it answers "<body> path=<path>" and
// lets tests inject faults for real:
//
//	/status/NNN          answers NNN
//	/delay/DURATION      answers after DURATION (e.g. /delay/1s)
//	/headers             lists the request headers, one "Name: value" per line
//	/count               how many requests it served (not counting /count or /admin)
//	/admin/fail?code=N   from now on answers N to everything else
//	/admin/ok            back to normal
//	/echo                answers the request body
//	/upgrade             with Upgrade: hms-echo, switches protocols and echoes lines
type HTTPApp struct {
	Body string

	served atomic.Int64
	mu     sync.Mutex
	fail   int
}

func (h *HTTPApp) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	switch {
	case p == "/count":
		fmt.Fprintf(w, "%d\n", h.served.Load())
		return
	case p == "/admin/fail":
		code, err := strconv.Atoi(r.URL.Query().Get("code"))
		if err != nil || code < 100 || code > 599 {
			http.Error(w, "code=NNN needed", http.StatusBadRequest)
			return
		}
		h.mu.Lock()
		h.fail = code
		h.mu.Unlock()
		fmt.Fprintf(w, "failing with %d\n", code)
		return
	case p == "/admin/ok":
		h.mu.Lock()
		h.fail = 0
		h.mu.Unlock()
		fmt.Fprintln(w, "ok")
		return
	}
	h.served.Add(1)
	h.mu.Lock()
	fail := h.fail
	h.mu.Unlock()
	if fail != 0 {
		w.WriteHeader(fail)
		fmt.Fprintf(w, "%s injected %d\n", h.Body, fail)
		return
	}
	switch {
	case p == "/upgrade" && r.Header.Get("Upgrade") == "hms-echo":
		upgradeEcho(w)
	case p == "/echo":
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s echo=%s\n", h.Body, b)
	case strings.HasPrefix(p, "/status/"):
		code, err := strconv.Atoi(strings.TrimPrefix(p, "/status/"))
		if err != nil || code < 100 || code > 599 {
			http.Error(w, "bad status", http.StatusBadRequest)
			return
		}
		w.WriteHeader(code)
		fmt.Fprintf(w, "%s status=%d\n", h.Body, code)
	case strings.HasPrefix(p, "/delay/"):
		d, err := time.ParseDuration(strings.TrimPrefix(p, "/delay/"))
		if err != nil || d > time.Minute {
			http.Error(w, "bad delay", http.StatusBadRequest)
			return
		}
		select {
		case <-time.After(d):
		case <-r.Context().Done():
			return
		}
		fmt.Fprintf(w, "%s delayed=%s\n", h.Body, d)
	case p == "/headers":
		var lines []string
		for k, vs := range r.Header {
			for _, v := range vs {
				lines = append(lines, k+": "+v)
			}
		}
		sort.Strings(lines)
		fmt.Fprintf(w, "%s headers\n%s\n", h.Body, strings.Join(lines, "\n"))
	default:
		fmt.Fprintf(w, "%s path=%s\n", h.Body, p)
	}
}

// upgradeEcho answers 101 and echoes lines on the hijacked connection.
func upgradeEcho(w http.ResponseWriter) {
	c, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer c.Close()
	rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: hms-echo\r\n\r\n")
	rw.Flush()
	for {
		line, err := rw.ReadString('\n')
		if err != nil {
			return
		}
		rw.WriteString("echo " + line)
		rw.Flush()
	}
}

// ServeBanner is a server-first line protocol (SMTP-like): it greets
// "220 <name> ready" on connect, then answers each line with "250 <line>"
// until QUIT.
func ServeBanner(l net.Listener, name string) error {
	for {
		c, err := l.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			fmt.Fprintf(c, "220 %s ready\r\n", name)
			sc := bufio.NewScanner(c)
			for sc.Scan() {
				line := strings.TrimSpace(sc.Text())
				if strings.EqualFold(line, "QUIT") {
					fmt.Fprint(c, "221 bye\r\n")
					return
				}
				fmt.Fprintf(c, "250 %s\r\n", line)
			}
		}()
	}
}
