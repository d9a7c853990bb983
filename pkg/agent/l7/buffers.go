package l7

import "sync"

// proxyBufferSize is what httputil.ReverseProxy would allocate itself.
const proxyBufferSize = 32 << 10

// proxyBuffers is the copy buffers of every ReverseProxy in this package,
// shared: without a BufferPool, httputil allocates and zeroes a fresh
// 32 KiB buffer for each response body it copies, which was most of the
// proxy's garbage per request.
var proxyBuffers bufferPool

// bufferPool is an httputil.BufferPool over a sync.Pool.
type bufferPool struct{ p sync.Pool }

func (b *bufferPool) Get() []byte {
	if v, ok := b.p.Get().(*[]byte); ok {
		return *v
	}
	return make([]byte, proxyBufferSize)
}

func (b *bufferPool) Put(buf []byte) {
	if cap(buf) != proxyBufferSize {
		return
	}
	buf = buf[:proxyBufferSize]
	b.p.Put(&buf)
}
