package l7

import (
	"io"
	"net/http"
	"strings"
	"sync"

	"github.com/hms-node/hms-node/pkg/api"
)

// protoGRPC is the protocol of a call that is gRPC: HTTP/2 with an
// application/grpc content type. Istio's request_protocol says "grpc".
const protoGRPC = "gRPC"

// protocolOf is the protocol of a request for calls and metrics.
func protocolOf(r *http.Request) string {
	if r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
		return protoGRPC
	}
	return r.Proto
}

// grpcStatus is the grpc-status a response ended with: in the trailers,
// or in the headers of a trailers-only response (an immediate error).
// Trailers a proxy copied into a header map may carry http.TrailerPrefix.
func grpcStatus(h, trailer http.Header) string {
	for _, v := range []string{trailer.Get("Grpc-Status"), h.Get("Grpc-Status"), h.Get(http.TrailerPrefix + "Grpc-Status")} {
		if v != "" {
			return v
		}
	}
	return ""
}

// grpcBody records a gRPC call once its response body ends, when the
// trailers are known: at EOF, or at Close for a call cut short.
type grpcBody struct {
	io.ReadCloser
	resp   *http.Response
	call   *api.Call
	record func()
	once   sync.Once
}

func (b *grpcBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.call.ResponseBytes += int64(n)
	if err != nil {
		b.done()
	}
	return n, err
}

func (b *grpcBody) Close() error {
	err := b.ReadCloser.Close()
	b.done()
	return err
}

func (b *grpcBody) done() {
	b.once.Do(func() {
		b.call.GrpcStatus = grpcStatus(b.resp.Header, b.resp.Trailer)
		b.record()
	})
}
