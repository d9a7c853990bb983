package l7

import (
	"bytes"
	"io"
	"net/http"
)

// MaxReplayBody bounds the request body kept in memory so a request can
// be retried; a larger body is streamed once and never retried.
const MaxReplayBody = 64 << 10

// replayable makes req's body readable again for a retry when it is at
// most MaxReplayBody, and reports whether it is. Requests that wait for
// 100-continue keep their body unread: reading it would answer the
// client's Expect before the backend has.
func replayable(req *http.Request) bool {
	if req.Body == nil || req.Body == http.NoBody {
		req.GetBody = func() (io.ReadCloser, error) { return http.NoBody, nil }
		return true
	}
	// A body of unknown length may be a stream the client feeds as
	// responses arrive (gRPC streaming, any bidirectional exchange):
	// reading ahead of the backend would stall it, so it is not kept.
	if req.ContentLength < 0 || req.ContentLength > MaxReplayBody || req.Header.Get("Expect") != "" {
		return false
	}
	buf, err := io.ReadAll(io.LimitReader(req.Body, MaxReplayBody+1))
	if err != nil || len(buf) != int(req.ContentLength) {
		// Not the length it announced (or broken): send what was read
		// followed by the rest, and let the transport judge.
		req.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(buf), req.Body), req.Body}
		return false
	}
	req.Body.Close()
	req.ContentLength = int64(len(buf))
	req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buf)), nil }
	req.Body, _ = req.GetBody()
	return true
}
