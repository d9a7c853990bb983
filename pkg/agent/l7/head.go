package l7

import (
	"bufio"
	"net/http"
	"strconv"
	"strings"
)

// Heads are written here rather than by http.Header.Write and
// Request.Write: those sort the keys (a slice per head), format the
// request line with fmt and run every value through a replacer, which
// was a good share of the L7 path's work per request. Field order does
// not matter in HTTP; values arrive validated by the parser (no CR or
// LF), and a value of our own that has one gets a space instead, as
// net/http does.

// writeHead writes a status line and headers.
func writeHead(bw *bufio.Writer, code int, h http.Header) {
	bw.WriteString("HTTP/1.1 ")
	bw.WriteString(strconv.Itoa(code))
	bw.WriteByte(' ')
	bw.WriteString(http.StatusText(code))
	bw.WriteString("\r\n")
	writeFields(bw, h, "")
	bw.WriteString("\r\n")
}

// writeRequestHead writes the head of a bodiless request the way
// Request.Write does: Host from req.Host (else the URL's), a User-Agent
// only when it is not empty, no Content-Length.
func writeRequestHead(bw *bufio.Writer, req *http.Request) {
	bw.WriteString(req.Method)
	bw.WriteByte(' ')
	bw.WriteString(req.URL.RequestURI())
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	writeValue(bw, host)
	bw.WriteString("\r\n")
	if ua := req.Header["User-Agent"]; len(ua) > 0 && ua[0] != "" {
		bw.WriteString("User-Agent: ")
		writeValue(bw, ua[0])
		bw.WriteString("\r\n")
	}
	writeFields(bw, req.Header, "User-Agent")
	bw.WriteString("\r\n")
}

// writeFields writes h's fields but skip, and those a head never carries
// from a map (Host is the request's own).
func writeFields(bw *bufio.Writer, h http.Header, skip string) {
	for k, vv := range h {
		if k == skip || k == "Host" || !validFieldName(k) {
			continue
		}
		for _, v := range vv {
			bw.WriteString(k)
			bw.WriteString(": ")
			writeValue(bw, strings.TrimSpace(v))
			bw.WriteString("\r\n")
		}
	}
}

// writeValue writes v with any CR or LF turned into a space.
func writeValue(bw *bufio.Writer, v string) {
	if strings.IndexByte(v, '\r') < 0 && strings.IndexByte(v, '\n') < 0 {
		bw.WriteString(v)
		return
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; c == '\r' || c == '\n' {
			bw.WriteByte(' ')
		} else {
			bw.WriteByte(c)
		}
	}
}

// validFieldName rejects a key that would break the head (net/http
// drops those too).
func validFieldName(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		if c := k[i]; c <= ' ' || c == ':' || c >= 0x7f {
			return false
		}
	}
	return true
}
